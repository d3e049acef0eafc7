"""A batch whose Gemma and connectors do not fit together (W1 at 16 GiB) runs its text phase in two halves: Gemma once
over every prompt (hidden states waiting in host memory), then the connectors once over all of them. The contexts
equal the per-prompt path's bit for bit, a cached prompt loads nothing, the host staging is bounded, and the
batch plan takes the split only where host memory lies outside the budget and Gemma is not streamed."""

from __future__ import annotations

from dataclasses import replace
from types import SimpleNamespace

import pytest
import torch

from ltx2_edge import phased
from ltx2_edge.engine.batch_plan import plan_batch
from ltx2_edge.engine.settings import RunSettings
from ltx2_edge.phased import PhasedJob, run_phased
from ltx2_edge.pipeline import Generator
from ltx2_edge.request import GenerationRequest
from ltx2_edge.stages import text_encode

SMALL = {"width": 64, "height": 64, "num_frames": 9, "num_inference_steps": 2}
PROMPTS = ("rain on a tin roof", "snow in a forest", "rain on a tin roof", "hail on a car")
LOAD_GEMMA, LOAD_CONNECTORS = text_encode.load_gemma_text_model, text_encode.load_embeddings_processor
PLAN_BATCH = phased.plan_batch


class _Hooks:
    """Records what the batch reports; a prompt cache keyed by prompt, as the service's."""

    def __init__(self) -> None:
        self.cache: dict[str, object] = {}
        self.contexts: dict[str, object] = {}
        self.results: dict[str, object] = {}
        self.failures: dict[str, BaseException] = {}
        self.prompt: dict[str, str] = {}

    def bind(self, job: PhasedJob) -> None:
        self.prompt[job.job_id] = job.request.prompt

    def on_step(self, job: PhasedJob):
        return None

    def cached(self, job: PhasedJob):
        return self.cache.get(job.request.prompt)

    def encoded(self, job: PhasedJob, contexts) -> None:
        self.cache[job.request.prompt] = contexts
        self.contexts[job.job_id] = contexts

    def completed(self, job: PhasedJob, result) -> None:
        self.results[job.job_id] = result

    def failed(self, job: PhasedJob, error: BaseException) -> None:
        self.failures[job.job_id] = error


def _run(tiny_dir, out, monkeypatch, split: bool) -> tuple[_Hooks, list[str], object]:
    loads: list[str] = []
    monkeypatch.setattr(text_encode, "load_gemma_text_model",
                        lambda *a, **k: (loads.append("gemma"), LOAD_GEMMA(*a, **k))[1])  # fmt: skip
    monkeypatch.setattr(text_encode, "load_embeddings_processor",
                        lambda *a, **k: (loads.append("connectors"), LOAD_CONNECTORS(*a, **k))[1])  # fmt: skip
    # On the CPU with no budget both text parts fit together; the split is what a 16 GiB GPU batch would take.
    monkeypatch.setattr(phased, "plan_batch",
                        lambda *a, **k: replace(PLAN_BATCH(*a, **k), hold_text=False, split_text=split))  # fmt: skip
    gen = Generator(tiny_dir / "ltx2.safetensors", tiny_dir / "gemma", RunSettings(device="cpu"))
    out.mkdir()
    jobs = [PhasedJob(f"j{i}", GenerationRequest(prompt=p, seed=i, **SMALL), out / f"j{i}.mp4")
            for i, p in enumerate(PROMPTS)]  # fmt: skip
    hooks = _Hooks()
    try:
        batch = run_phased(gen, jobs, hooks)
    finally:
        gen.close()
    return hooks, loads, batch


def test_split_text_phase_loads_each_part_once_and_changes_no_context(tiny_dir, tmp_path, monkeypatch):
    split, split_loads, batch = _run(tiny_dir, tmp_path / "split", monkeypatch, split=True)
    whole, whole_loads, _ = _run(tiny_dir, tmp_path / "whole", monkeypatch, split=False)
    assert batch.split_text and not split.failures and sorted(split.results) == ["j0", "j1", "j2", "j3"]
    # Split: one Gemma and one connectors load for the 3 distinct prompts ("rain" again comes from the cache);
    # per prompt: both parts loaded for each of them.
    assert split_loads == ["gemma", "connectors"], split_loads
    assert whole_loads == ["gemma", "connectors"] * 3
    # "rain" again (j2): its twin's contexts in the split (same round), the prompt cache's in the per-prompt path.
    assert sorted(split.contexts) == sorted(whole.contexts) == ["j0", "j1", "j3"]
    for job in split.contexts:
        a, b = split.contexts[job], whole.contexts[job]
        for name in ("video", "audio", "video_negative", "audio_negative"):
            assert torch.equal(getattr(a, name), getattr(b, name)), (job, name)
    rows = {s["stage"]: s for s in split.results["j1"].report.to_json()["stages"]}
    assert "hidden states to host memory" in rows["text_encode"]["technique"]
    assert rows["text_encode"]["details"]["hidden_states_host_bytes"] > 0
    assert rows["embeddings"]["details"]["embeddings_seconds"] >= 0 and rows["embeddings"]["details"]["within_budget"]
    cached = {s["stage"]: s for s in split.results["j2"].report.to_json()["stages"]}
    assert cached["text_encode"]["details"]["cached"] is True and "embeddings" not in cached
    for result in split.results.values():
        assert result.report.to_json()["batch"]["split_text"] is True


def test_split_text_phase_stages_at_most_the_host_cap_per_round(tiny_dir, tmp_path, monkeypatch):
    monkeypatch.setattr(phased, "HIDDEN_HOST_CAP", 1)  # every prompt's hidden states exceed it: one per round
    hooks, loads, _ = _run(tiny_dir, tmp_path / "capped", monkeypatch, split=True)
    assert not hooks.failures and len(hooks.results) == 4
    assert loads == ["gemma", "connectors"] * 3


def _plan(streamed_text: int = 0):
    stage = SimpleNamespace(streamed_units=0, resident_units=48, weights_resident_bytes=40, activations_bytes=5,
                            predicted_peak_bytes=60, source_tier=None, n_slots=0, slot_bytes=0)  # fmt: skip
    one = SimpleNamespace(stage=stage, accel=SimpleNamespace(settings=SimpleNamespace(cuda_graph=False),
                          extra_peak_bytes=0), active_loras=(), run=SimpleNamespace(stage="denoise"))  # fmt: skip
    stages = {
        # Gemma's peak 13 + the connectors' 4 > 16, and their peak 5 + Gemma's 12: not together at 16.
        "text_encode": SimpleNamespace(
            weights_resident_bytes=12, predicted_peak_bytes=13, streamed_units=streamed_text
        ),
        "embeddings": SimpleNamespace(weights_resident_bytes=4, predicted_peak_bytes=5, streamed_units=0),
        "decode": SimpleNamespace(weights_resident_bytes=3, predicted_peak_bytes=8, streamed_units=0),
    }
    memory = SimpleNamespace(stage=lambda name: stages[name])
    return SimpleNamespace(passes=[one], memory=memory, predicted_peak_bytes=lambda stage: 60)


@pytest.mark.parametrize(
    ("budget", "host_staging", "streamed_text", "hold", "split"),
    [
        (32, True, 0, True, False),  # both fit together: held, no split
        (16, True, 0, False, True),  # they do not: split
        (16, False, 0, False, False),  # one memory pool: the staged states would sit inside the budget
        (16, True, 8, False, False),  # streamed Gemma: its slots are not kept between prompts
    ],
)
def test_the_batch_plan_splits_the_text_phase_only_where_it_pays(budget, host_staging, streamed_text, hold, split):
    plans = [_plan(streamed_text), _plan(streamed_text)]
    batch = plan_batch(plans, budget, host_staging=host_staging)
    assert (batch.hold_text, batch.split_text) == (hold, split)
    assert not plan_batch(plans[:1], 16).split_text  # one clip: nothing to share
    text = [r for r in batch.reasons if "Gemma" in r]
    assert len(text) == 1 and (("hidden states to host memory" in text[0]) == split)
