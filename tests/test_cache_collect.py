"""Inside an owner's batch the model cache gives memory back only when a stage dropped something: a batch that
holds every part its stages use must not pay a full garbage collection (and a device synchronisation) after each of
them. Without holds every stage end collects: a stage may have let go of weights the cache never held."""

import torch

from ltx2_edge.models import model_cache
from ltx2_edge.models.model_cache import ModelCache


def test_end_stage_collects_only_after_dropping(monkeypatch):
    calls = []
    monkeypatch.setattr(model_cache.gc, "collect", lambda: calls.append(1))
    cache = ModelCache(torch.device("cpu"))
    cache.get("transformer", lambda: torch.nn.Linear(2, 2))
    cache.get("vocoder", lambda: torch.nn.Linear(2, 2))
    cache.hold("transformer")
    cache.end_stage(keep=("vocoder",))  # nothing to drop: the held part and the kept one stay
    cache.done_with("video_decoder")  # not loaded: nothing to drop
    assert calls == [] and cache.loaded() == ("transformer", "vocoder")
    cache.end_stage()  # the vocoder goes: its memory is collected
    assert calls == [1] and cache.loaded() == ("transformer",)
    cache.done_with("transformer")  # held: stays, nothing collected
    assert calls == [1]
    cache.release("transformer")
    assert calls == [1, 1] and cache.loaded() == ()
    cache.end_stage()  # no holds (a single run): a streamed transformer built outside the cache may have gone
    assert calls == [1, 1, 1]
    cache.beside["streamed_transformer"] = 1  # a batch's streamed hold counts as holding
    cache.end_stage()
    assert calls == [1, 1, 1]
