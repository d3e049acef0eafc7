"""The service's worker runs a batch phase by phase: the transformer loads once for the batch, a repeated prompt is
encoded once, each job's events stay in order with its progress never going back, a cancelled job ends alone."""

from __future__ import annotations

from ltx2_edge.engine.settings import RunSettings
from ltx2_edge.models import loaders
from ltx2_edge.mp4.probe import probe_mp4
from ltx2_edge.request import GenerationRequest
from ltx2_edge.service.engine import BatchJob, Engine, EngineConfig

SMALL = {"width": 64, "height": 64, "num_frames": 9, "num_inference_steps": 2}


def test_batch_runs_phase_by_phase(tiny_dir, tmp_path, monkeypatch):
    loads: list[str] = []
    real = loaders.load_transformer
    monkeypatch.setattr(loaders, "load_transformer", lambda *a, **k: (loads.append("t"), real(*a, **k))[1])
    engine = Engine(EngineConfig(tiny_dir / "ltx2.safetensors", tiny_dir / "gemma", RunSettings(device="cpu")))
    prompts = ("rain", "snow", "rain", "hail")
    jobs = [BatchJob(f"j{i}", GenerationRequest(prompt=p, **SMALL), tmp_path / f"j{i}.mp4")
            for i, p in enumerate(prompts)]  # fmt: skip
    events: list[tuple[str, str, dict]] = []

    def cancelled(job_id: str) -> bool:
        return job_id == "j3" and any(e[:2] == ("j3", "step") for e in events)

    engine.run_batch(jobs, lambda job, kind, data: events.append((job, kind, data)), cancelled)
    ends = {job: kind for job, kind, _ in events if kind in ("completed", "failed", "cancelled")}
    assert ends == {"j0": "completed", "j1": "completed", "j2": "completed", "j3": "cancelled"}
    assert loads == ["t"]  # one transformer load for the whole batch
    for job in ("j0", "j1", "j2"):
        mine = [(kind, data) for j, kind, data in events if j == job]
        assert mine[0][0] == "started" and mine[-1][0] == "completed"
        progress = [d["progress"] for k, d in mine if "progress" in d]
        assert progress == sorted(progress) and progress[-1] >= 90
        report = mine[-1][1]["report"]
        assert report["batch"]["hold_transformer"] and report["batch"]["jobs"] == 4
        assert probe_mp4(tmp_path / f"{job}.mp4").frames == 9
    text = {j: d["report"]["stages"][0]["details"] for j, k, d in events if k == "completed"}
    assert "cached" not in text["j0"] and text["j2"]["cached"] is True  # "rain" again: from the prompt cache
    assert not (tmp_path / "j3.mp4").exists() and list(tmp_path.glob(".*")) == []
    engine.close()
