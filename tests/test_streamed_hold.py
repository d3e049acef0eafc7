"""A batch whose clips all stream the transformer alike loads the streamed transformer once (issue 15 at 16 GiB):
later clips reuse its resident blocks, slots and pinned copies, and compute exactly what each clip computes alone.

The CPU plans never stream, so the plans are made to (the same replacement the LoRA tests use): 1 of the tiny
model's 2 blocks resident, the other streamed from pinned host memory through 3 slots.
"""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from ltx2_edge.engine import runner as runner_module
from ltx2_edge.engine.batch_plan import plan_batch
from ltx2_edge.engine.settings import RunSettings
from ltx2_edge.phased import PhasedJob, run_phased
from ltx2_edge.pipeline import Generator
from ltx2_edge.request import GenerationRequest

SMALL = {"width": 64, "height": 64, "num_frames": 9, "num_inference_steps": 3}


def _streaming(plan, resident: int = 1, slots: int = 3):
    den = plan.passes[0].stage
    stage = replace(den, resident_units=resident, streamed_units=den.resident_units + den.streamed_units - resident,
                    source_tier="pinned", n_slots=slots)  # fmt: skip
    return replace(plan, passes=(replace(plan.passes[0], stage=stage), *plan.passes[1:]))


class _Hooks:
    def __init__(self) -> None:
        self.results: dict[str, object] = {}
        self.errors: dict[str, BaseException] = {}

    def bind(self, job):  # noqa: ANN202
        pass

    def on_step(self, job):  # noqa: ANN202
        return None

    def cached(self, job):  # noqa: ANN202
        return None

    def encoded(self, job, contexts):  # noqa: ANN202
        pass

    def completed(self, job, result):  # noqa: ANN202
        self.results[job.job_id] = result

    def failed(self, job, error):  # noqa: ANN202
        self.errors[job.job_id] = error


@pytest.fixture
def streaming_gen(tiny_dir, monkeypatch):
    gen = Generator(tiny_dir / "ltx2.safetensors", tiny_dir / "gemma", RunSettings(device="cpu"))
    real_prepare = gen.prepare
    monkeypatch.setattr(gen, "prepare", lambda request, runs_ahead=1: _streaming(real_prepare(request, runs_ahead)))
    loads: list[int] = []
    real_load = runner_module.load_streamed_transformer
    monkeypatch.setattr(runner_module, "load_streamed_transformer",
                        lambda *a, **k: (loads.append(1), real_load(*a, **k))[1])  # fmt: skip
    yield gen, loads
    gen.close()


def test_clips_streaming_alike_load_the_streamed_transformer_once(streaming_gen, tmp_path):
    gen, loads = streaming_gen
    prompts = ("rain on a tin roof", "a kite over the beach", "waves at night")
    requests = [GenerationRequest(prompt=p, seed=5 + i, **SMALL) for i, p in enumerate(prompts)]
    jobs = [PhasedJob(f"j{i}", r, tmp_path / f"j{i}.mp4") for i, r in enumerate(requests)]
    hooks = _Hooks()
    batch = run_phased(gen, jobs, hooks)
    assert not hooks.errors and batch is not None
    assert batch.hold_streamed and not batch.hold_transformer and not batch.interleave_decode
    assert len(loads) == 1  # one streamed load for three clips
    dens = [next(s for s in hooks.results[j.job_id].report.stages if s.stage == "denoise").details for j in jobs]
    assert "kept from the batch's previous clip" not in dens[0]["residency"]
    assert all("kept from the batch's previous clip" in d["residency"] for d in dens[1:])
    # Every clip's streaming figures are its own, not the batch's running totals.
    assert len({d["block_copies"] for d in dens}) == 1 and dens[0]["block_copies"] > 0
    assert gen.cache.beside == {} and gen.runner.streamed_hold is None  # released with the denoise phase
    loads.clear()
    for i, (job, request) in enumerate(zip(jobs, requests, strict=True)):
        alone = gen.generate(request, tmp_path / f"alone-{i}.mp4")
        batched = hooks.results[job.job_id].latents
        assert torch.equal(alone.latents.video, batched.video) and torch.equal(alone.latents.audio, batched.audio)
    assert len(loads) == 3  # outside a batch each clip loads (and releases) its own


def test_clips_streaming_differently_load_each_their_own(streaming_gen):
    gen, _ = streaming_gen
    a = gen.prepare(GenerationRequest(prompt="a", **SMALL))
    b = _streaming(a, resident=0)
    batch = plan_batch([a, b], None)
    assert not batch.hold_streamed and any("stream differently" in r for r in batch.reasons)
    assert plan_batch([a, a], None).hold_streamed
    assert not plan_batch([a], None).hold_streamed  # one clip: nothing to keep it for
