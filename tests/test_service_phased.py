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


def _one_job_batch(engine: Engine, job_id: str, request: GenerationRequest, tmp_path, waiting) -> dict:
    """Run a batch of one job; its denoise stage's report details."""
    events: list[tuple[str, str, dict]] = []
    job = BatchJob(job_id, request, tmp_path / f"{job_id}.mp4")
    engine.run_batch([job], lambda j, kind, data: events.append((j, kind, data)), lambda j: False, waiting)
    done = [data for _, kind, data in events if kind == "completed"]
    assert len(done) == 1, events[-1]
    return next(s for s in done[0]["report"]["stages"] if s["stage"] == "denoise")["details"]


def test_compile_auto_counts_the_queue_and_what_this_process_compiled(tiny_dir, tmp_path, monkeypatch):
    """A clip picked alone while 29 alike queue behind it compiles: they are counted as its denoising begins (a burst
    of POSTs lands during the first job's text phase). The next batch of that shape pays only the re-entry, since the
    process keeps the compiled code; a lone clip of another shape stays eager. The tiny model's steps take
    microseconds, so the measured costs are scaled to its floor: a cold compile costs 20 clips' saving."""
    from ltx2_edge.accel import compile_choice, for_run
    from ltx2_edge.accel import engine as accel_engine

    monkeypatch.setattr(for_run, "compile_support", lambda device: None)  # as on a GPU with Triton
    monkeypatch.setattr(compile_choice, "_COMPILED_HERE", set())
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "inductor"))  # empty: a cold compile
    compile_blocks = accel_engine.compile_blocks  # aot_eager: Dynamo + AOT on the CPU, no code generation
    monkeypatch.setattr(accel_engine, "compile_blocks", lambda m, d: compile_blocks(m, d, backend="aot_eager"))
    engine = Engine(EngineConfig(tiny_dir / "ltx2.safetensors", tiny_dir / "gemma", RunSettings(device="cpu")))
    rain = GenerationRequest(prompt="rain", **SMALL)
    other = GenerationRequest(prompt="hail", **(SMALL | {"num_frames": 17}))
    stage = engine._worker.prepare(rain).passes[0].stage
    one_clip = stage.compute_seconds_per_step * stage.steps * compile_choice.COMPILE_SAVING_X_FLOOR
    for note, clips in (("cold", 20), ("warm cache", 20), ("this process", 0.5)):
        monkeypatch.setitem(compile_choice.COMPILE_COST_S, note, clips * one_clip)

    asked: list[int] = []

    def waiting() -> list[GenerationRequest]:  # empty when the batch is prepared; filled by its denoise
        asked.append(1)
        return [] if len(asked) == 1 else [rain] * 29 + [other] * 3

    first = _one_job_batch(engine, "a", rain, tmp_path, waiting)
    assert len(asked) == 2 and first["accel_compiled"] is True
    assert first["accel"][0].startswith("compiled: saving ~") and (
        "over 30 clips of this shape (this one, 29 queued behind it)" in first["accel"][0]
    )
    economics = first["compile_economics"]
    assert (economics["cost_note"], economics["clips_in_batch"], economics["clips_queued"]) == ("cold", 1, 29)
    assert economics["counted"] == "30 clips of this shape (this one, 29 queued behind it)"  # the 3 others not
    assert first["accel_stats"]["compile_step_seconds"] is not None  # step 1 ran compiled

    again = _one_job_batch(engine, "b", rain, tmp_path, lambda: [])  # a later batch of that shape, alone
    assert again["accel_compiled"] is True and again["compile_economics"]["cost_note"] == "this process"
    assert (
        "over this clip alone against a" in again["accel"][0] and "compiled before in this process" in again["accel"][0]
    )

    lone = _one_job_batch(engine, "c", other, tmp_path, lambda: [])  # another shape: its compile is not paid
    assert lone["accel_compiled"] is False and lone["compile_economics"]["cost_note"] == "cold"
    assert lone["accel"][0].startswith("eager: compiling would cost") and "over this clip alone" in lone["accel"][0]
    engine.close()
