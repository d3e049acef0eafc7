"""The engine's parts: ``RunSettings`` validation, ``ModelCache`` ownership, ``RunPlan`` decisions made once, the
batch holds, and the phases of a run (what a scheduler drives) equal to ``generate``."""

from __future__ import annotations

import gc
import weakref
from dataclasses import replace

import pytest
import torch

from ltx2_edge.engine.batch_plan import plan_batch
from ltx2_edge.engine.settings import RunSettings
from ltx2_edge.errors import RequestError
from ltx2_edge.models import loaders
from ltx2_edge.models.model_cache import ModelCache, module_bytes
from ltx2_edge.mp4.probe import probe_mp4
from ltx2_edge.pipeline import Generator
from ltx2_edge.request import GenerationRequest

SMALL = {"width": 64, "height": 64, "num_frames": 9, "num_inference_steps": 2}


@pytest.mark.parametrize(
    ("field", "value", "flag"),
    [
        ("device", "gpu", "device"),
        ("device", "cuda:x", "device"),
        ("budget", 0, "budget"),
        ("budget", -5, "budget"),
        ("budget", 10**400, "budget"),
        ("budget", True, "budget"),
        ("host_budget", 0, "host-budget"),
        ("prefetch_depth", 1, "prefetch-depth"),
        ("prefetch_depth", 10**9, "prefetch-depth"),
        ("quantization", "fp4", "quantization"),
        ("compile", "maybe", "compile"),
        ("cuda_graph", "on", "cuda-graph"),
        ("cuda_allocator", "turbo", "cuda-allocator"),
        ("guidance_mode", "parallel", "guidance-mode"),
        ("keep_bf16", ("",), "keep-bf16"),
        ("unified", "yes", "unified"),
        ("dtype", "float16", "dtype"),
    ],
)
def test_run_settings_refuse_bad_values_naming_the_flag(field, value, flag):
    with pytest.raises(RequestError) as info:
        RunSettings(**{field: value})
    assert info.value.field == f"--{flag}" and "\n" not in str(info.value)


def test_run_settings_accept_the_defaults_and_freeze():
    s = RunSettings(device="cuda:1", budget=None, host_budget=None, prefetch_depth=4)
    assert s.device == "cuda:1" and s.budget is None
    with pytest.raises(AttributeError):
        s.budget = 1  # type: ignore[misc]


class _Module(torch.nn.Module):
    def __init__(self, n: int) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(n))


def test_model_cache_staged_release_holds_and_keys():
    cache = ModelCache(torch.device("cpu"))
    loads: list[str] = []

    def load(name: str, n: int = 10):
        def make() -> torch.nn.Module:
            loads.append(name)
            return _Module(n)

        return make

    first = cache.get("transformer", load("t"), key=("lora", 1.0))
    ref = weakref.ref(first)
    assert cache.get("transformer", load("t"), key=("lora", 1.0)) is first and loads == ["t"]
    assert cache.held_bytes() == module_bytes(first) == 40
    del first
    cache.get("transformer", load("t2"), key=("lora", 0.5))  # another LoRA set: the old weights go first
    gc.collect()
    assert ref() is None and loads == ["t", "t2"] and cache.loads == {"transformer": 2}

    cache.get("video_decoder", load("v", 5))
    cache.end_stage(keep=("transformer",))
    assert cache.loaded() == ("transformer",)
    cache.end_stage()
    assert cache.loaded() == ()

    cache.hold("gemma")
    cache.get("gemma", load("g"))
    cache.end_stage()
    cache.done_with("gemma")
    assert cache.loaded() == ("gemma",) and cache.pinned() == ("gemma",)
    cache.release("gemma")
    assert cache.loaded() == () and cache.pinned() == ()
    with pytest.raises(ValueError, match="unknown model part"):
        cache.get("unet", load("u"))


def test_run_plan_is_decided_once_and_read_by_the_run(tiny_dir, tmp_path, monkeypatch):
    """``prepare`` reads the LoRA and accel decisions once; ``generate`` given the plan decides nothing again."""
    from ltx2_edge.engine import run_plan

    gen = Generator(tiny_dir / "ltx2.safetensors", tiny_dir / "gemma", RunSettings(device="cpu"))
    request = GenerationRequest(prompt="rain", **SMALL)
    calls: list[str] = []
    for name in ("check_loras", "memory_plan"):
        real = getattr(run_plan, name)

        def counting(*a, _real=real, _name=name, **k):
            calls.append(_name)
            return _real(*a, **k)

        monkeypatch.setattr(run_plan, name, counting)
    plan = gen.prepare(request)
    assert calls == ["memory_plan", "check_loras"]
    result = gen.generate(request, tmp_path / "a.mp4", plan=plan)
    assert calls == ["memory_plan", "check_loras"]  # nothing re-decided
    assert result.report.extra["held"] == {}
    with pytest.raises(ValueError, match="another request"):
        gen.generate(replace(request, seed=11), tmp_path / "b.mp4", plan=plan)


def test_phases_equal_generate_and_holds_keep_the_transformer(tiny_dir, tmp_path, monkeypatch):
    """The phases a scheduler drives (start, encode_text, denoise, decode, finish) give generate's latents; a part
    the cache's owner holds survives the stages' staged release and is loaded once for two clips."""
    loads: list[weakref.ref] = []
    real = loaders.load_transformer

    def counting(*a, **k):
        model = real(*a, **k)
        loads.append(weakref.ref(model))
        return model

    monkeypatch.setattr(loaders, "load_transformer", counting)
    gen = Generator(tiny_dir / "ltx2.safetensors", tiny_dir / "gemma", RunSettings(device="cpu"))
    a, b = GenerationRequest(prompt="rain", **SMALL), GenerationRequest(prompt="snow", seed=3, **SMALL)
    want = [gen.generate(r, tmp_path / f"{i}.mp4").latents for i, r in enumerate((a, b))]
    assert len(loads) == 2  # staged release: loaded per clip

    gen.cache.hold("transformer")
    runs = [gen.start(r, tmp_path / f"phased{i}.mp4") for i, r in enumerate((a, b))]
    for run in runs:
        gen.encode_text(run)
    for run in runs:
        gen.denoise(run)
        assert gen.cache.holds("transformer")
    for run in runs:
        gen.decode(run)
    got = [gen.finish(run) for run in runs]
    assert len(loads) == 3  # one load for both clips
    for w, g in zip(want, got, strict=True):
        assert torch.equal(w.video, g.latents.video) and torch.equal(w.audio, g.latents.audio)
        assert g.output_path.is_file() and g.report_path.is_file()
    gen.cache.release("transformer")
    gc.collect()
    assert all(ref() is None for ref in loads)


def test_batch_plan_holds_what_fits(tiny_dir):
    gen = Generator(tiny_dir / "ltx2.safetensors", tiny_dir / "gemma", RunSettings(device="cpu"))
    plans = [gen.prepare(GenerationRequest(prompt=p, **SMALL)) for p in ("a", "b")]
    roomy = plan_batch(plans, None)
    assert (roomy.hold_text, roomy.hold_transformer, roomy.interleave_decode, roomy.hold_decoders) == (True,) * 4
    assert plan_batch(plans[:1], None).hold_text is False  # one prompt: nothing to share
    den = plans[0].passes[0].stage
    decode_peak = plans[0].memory.stage("decode").predicted_peak_bytes
    tight = plan_batch(plans, decode_peak + den.weights_resident_bytes - 1)
    assert tight.hold_transformer and not tight.interleave_decode and tight.hold_decoders  # for the decode phase
    budget = decode_peak + den.weights_resident_bytes
    heavy = [replace(p, memory=replace(p.memory, stages=tuple(replace(s, weights_resident_bytes=budget)
             if s.name == "decode" else s for s in p.memory.stages))) for p in plans]  # fmt: skip
    room = plan_batch(heavy, budget)
    assert room.interleave_decode and not room.hold_decoders  # beside the denoise they would not fit
    streamed = replace(plans[0], passes=(replace(plans[0].passes[0], stage=replace(den, streamed_units=3)),))
    assert not plan_batch([streamed, plans[1]], None).hold_transformer


class _Hooks:
    """Records what ``run_phased`` reports; cancels ``cancel`` at its first step; a dict as the prompt cache."""

    def __init__(self, cancel: str | None = None) -> None:
        self.cancel, self.bound, self.results, self.errors, self.cache = cancel, [], {}, {}, {}

    def bind(self, job):
        self.bound.append(job.job_id)

    def on_step(self, job):
        def hook(i, total, seconds):
            if job.job_id == self.cancel:
                raise _Cancelled(job.job_id)

        return hook

    def cached(self, job):
        return self.cache.get(job.request.prompt)

    def encoded(self, job, contexts):
        assert contexts.video.device.type == "cpu"
        self.cache[job.request.prompt] = contexts

    def completed(self, job, result):
        self.results[job.job_id] = result

    def failed(self, job, error):
        self.errors[job.job_id] = error


class _Cancelled(BaseException):
    pass


def test_run_phased_loads_each_model_once_and_isolates_a_cancelled_job(tiny_dir, tmp_path, monkeypatch):
    from ltx2_edge.phased import PhasedJob, run_phased

    counts: dict[str, int] = {}
    for name in ("load_transformer", "load_video_decoder"):
        real = getattr(loaders, name)

        def counting(*a, _real=real, _name=name, **k):
            counts[_name] = counts.get(_name, 0) + 1
            return _real(*a, **k)

        monkeypatch.setattr(loaders, name, counting)
    gen = Generator(tiny_dir / "ltx2.safetensors", tiny_dir / "gemma", RunSettings(device="cpu"))
    want = gen.generate(GenerationRequest(prompt="rain", **SMALL), tmp_path / "want.mp4").latents
    counts.clear()
    gemma_before = gen.cache.loads.get("gemma", 0)
    jobs = [PhasedJob(f"j{i}", GenerationRequest(prompt=p, **SMALL), tmp_path / f"j{i}.mp4")
            for i, p in enumerate(("rain", "snow", "hail"))]  # fmt: skip
    hooks = _Hooks(cancel="j1")
    batch = run_phased(gen, jobs, hooks)
    assert batch is not None and batch.hold_text and batch.hold_transformer and batch.interleave_decode
    assert sorted(hooks.results) == ["j0", "j2"] and isinstance(hooks.errors["j1"], _Cancelled)
    assert counts["load_transformer"] == 1 and gen.cache.loads["gemma"] == gemma_before + 1
    assert counts["load_video_decoder"] == 1  # the decoders too are held for the batch (no budget: they fit)
    assert not (tmp_path / "j1.mp4").exists() and [p.name for p in tmp_path.glob(".*")] == []
    first = hooks.results["j0"]
    assert torch.equal(first.latents.video, want.video) and torch.equal(first.latents.audio, want.audio)
    for job in ("j0", "j2"):  # written on the batch's writer thread, after the decode: whole MP4s with sound
        probe = probe_mp4(hooks.results[job].output_path)
        assert (probe.frames, probe.audio_codec, probe.channels) == (9, "aac", 2)
    decode = next(s for s in first.report.stages if s.stage == "decode")
    assert decode.details["frames"] == 9 and decode.details["mp4_write_seconds"] > 0
    assert first.report.extra["batch"]["jobs"] == 3 and gen.cache.loaded() == ()
    # While Gemma and the connectors were held for the text phase, the scope counted them as held.
    text = first.report.stages[0].details
    assert text["held_for_next_stage_bytes"] > 0
    # The same prompt again: its embeddings come from the cache, nothing encodes, same latents.
    again = _Hooks()
    again.cache = hooks.cache
    run_phased(gen, [PhasedJob("k", GenerationRequest(prompt="rain", **SMALL), tmp_path / "k.mp4")], again)
    assert gen.cache.loads["gemma"] == gemma_before + 1
    row = again.results["k"].report.stages[0]
    assert row.stage == "text_encode" and row.details["cached"] is True
    assert torch.equal(again.results["k"].latents.video, want.video)


def test_compile_auto_counts_the_runs_ahead(tiny_dir, monkeypatch):
    """``--compile auto`` weighs its one-off cost against every clip of the same shapes the caller will run, and the
    plan says what it counted; a bad count is refused in one line; weighing again changes the compile lever only."""
    from ltx2_edge.accel import compile_choice, for_run
    from ltx2_edge.accel.compile_choice import COMPILE_COST_S, COMPILE_SAVING_X_FLOOR, ClipsAhead
    from ltx2_edge.engine.run_plan import with_clips_ahead

    monkeypatch.setattr(for_run, "compile_support", lambda device: None)  # as on a GPU with Triton
    monkeypatch.setattr(compile_choice, "_COMPILED_HERE", set())
    gen = Generator(tiny_dir / "ltx2.safetensors", tiny_dir / "gemma", RunSettings(device="cpu"))
    request = GenerationRequest(prompt="rain", **SMALL)
    plan = gen.prepare(request)
    one = plan.passes[0]
    assert not one.accel.settings.compile and "would cost" in one.accel.settings.reasons[0]
    assert "over this clip alone" in plan.forwards_lines()[0]
    floor = one.stage.compute_seconds_per_step * one.stage.steps
    many = int((max(COMPILE_COST_S.values()) + COMPILE_COST_S["this process"]) / (floor * COMPILE_SAVING_X_FLOOR)) + 2
    assert gen.prepare(request, runs_ahead=many).passes[0].accel.settings.compile
    queued = gen.prepare(request, runs_ahead=ClipsAhead(batch=1, queued=many - 1))
    reason = queued.passes[0].accel.settings.reasons[0]
    assert queued.passes[0].accel.settings.compile
    counted = f"over {many} clips of this shape (this one, {many - 1} queued behind it) against a"
    assert reason.startswith("compiled: saving ~") and counted in reason
    assert queued.passes[0].accel.compile_economics.clips == ClipsAhead(1, many - 1)
    # The same plan weighed again (a batch's second count): only the compile lever and its reason differ.
    again = with_clips_ahead(gen.setup, plan, ClipsAhead(batch=1, queued=many - 1))
    a, b = again.passes[0].accel, queued.passes[0].accel
    assert a.settings == b.settings and a.extra_peak_bytes == one.accel.extra_peak_bytes
    assert again.memory is plan.memory and again.passes[0].stage is one.stage
    for bad in (0, -1, True, 2.5):
        with pytest.raises(ValueError, match=f"runs_ahead={bad!r} is not allowed") as info:
            gen.prepare(request, runs_ahead=bad)
        assert "\n" not in str(info.value)
