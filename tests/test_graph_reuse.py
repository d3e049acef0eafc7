"""One step engine across the clips of a batch (issue 15): a later run of the same shapes served by the earlier
run's engine — its inputs written into the earlier run's tensors, the step invariants recomputed into their
stored tensors — computes exactly what a fresh run computes.

On the CPU there is no CUDA graph to replay, so the engine runs the same forward through the earlier run's
tensors: that is the refill a reused graph depends on (the replay itself is checked on the GPU by
bench/service_bench.py's reuse check). The batch plan's decision and its memory condition are checked here too.
"""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

import ltx2_edge  # noqa: F401  (torchaudio placeholder before ltx_core)
from ltx2_edge.accel.engine import AccelSettings, EngineSlot
from ltx2_edge.guidance import Guidance
from ltx2_edge.stages.denoise import Contexts, denoise, official_sigmas
from ltx2_edge.stages.latents import noised_latents, pixel_shape

W, H, F, STEPS = 64, 96, 17, 4
ACCEL = AccelSettings(freeze_text_kv=True)


def _contexts(config: dict, seed: int, tokens: int = 32) -> Contexts:
    g = torch.Generator().manual_seed(seed)
    width = config["transformer"]["caption_channels"]
    return Contexts(*(torch.randn(1, tokens, width, generator=g) for _ in range(4)))


def _run(model, ctx: Contexts, seed: int, slot: EngineSlot | None, frames: int = F, guidance: str = "cfg") -> tuple:
    setup = noised_latents(pixel_shape(W, H, frames, 24.0), torch.Generator().manual_seed(seed), torch.device("cpu"),
                           torch.float32)  # fmt: skip
    stats: dict = {}
    v, a = denoise(model, setup.video_state, setup.audio_state, official_sigmas(STEPS, torch.device("cpu")), ctx,
                   Guidance.preset_named(guidance), accel=ACCEL, accel_stats=stats, slot=slot)  # fmt: skip
    return v.latent, a.latent, stats


def test_a_reused_engine_computes_what_a_fresh_run_computes(tiny_transformer_fp32, tiny_config):
    model = tiny_transformer_fp32
    prompts = [_contexts(tiny_config, seed) for seed in (1, 2, 3)]
    fresh = [_run(model, ctx, 10 + i, None) for i, ctx in enumerate(prompts)]
    slot = EngineSlot()
    try:
        reused = [_run(model, ctx, 10 + i, slot) for i, ctx in enumerate(prompts)]
        engine = slot.engine
        assert engine is not None  # still open after its runs: the next clip may use it
    finally:
        slot.close()
    for (v0, a0, _), (v1, a1, _) in zip(fresh, reused, strict=True):
        assert torch.equal(v0, v1) and torch.equal(a0, a1)
    # Different prompts really give different clips: the refill is not returning the first run's K/V.
    assert not torch.equal(reused[0][0], reused[1][0])
    assert [r[2]["graph_reused"] for r in reused] == [False, True, True]
    # Each reused run recomputed its invariants once (step 0) and reused them afterwards.
    first, second = reused[0][2]["invariants"], reused[1][2]["invariants"]
    assert second["computed"] == first["computed"] and second["reused"] == first["reused"]
    # Closed: the transformer is restored (no frozen projections, no memo left on it).
    velocity = model.velocity_model
    assert type(velocity.transformer_blocks[0].attn2.to_k) is torch.nn.Linear
    assert "_prepare_context" not in vars(velocity.video_args_preprocessor.simple_preprocessor)


def test_a_run_of_other_shapes_gets_a_new_engine_and_still_matches(tiny_transformer_fp32, tiny_config):
    model = tiny_transformer_fp32
    ctx_a, ctx_b = _contexts(tiny_config, 1), _contexts(tiny_config, 2)
    fresh = _run(model, ctx_b, 11, None, frames=25)
    slot = EngineSlot()
    try:
        _run(model, ctx_a, 10, slot)
        first = slot.engine
        other = _run(model, ctx_b, 11, slot, frames=25)
        assert slot.engine is not first  # the shapes differ: the old engine was closed, a new one opened
        guided = _run(model, ctx_a, 10, slot, guidance="full")  # other passes: not reusable either
    finally:
        slot.close()
    assert torch.equal(fresh[0], other[0]) and torch.equal(fresh[1], other[1])
    assert other[2]["graph_reused"] is False and guided[2]["graph_reused"] is False


def test_a_run_that_fails_closes_the_slot(tiny_transformer_fp32, tiny_config):
    model = tiny_transformer_fp32
    slot = EngineSlot()

    class Stop(Exception):
        pass

    def stop(i: int, total: int, seconds: float) -> None:
        if i == 1:
            raise Stop

    setup = noised_latents(pixel_shape(W, H, F, 24.0), torch.Generator().manual_seed(1), torch.device("cpu"),
                           torch.float32)  # fmt: skip
    with pytest.raises(Stop):
        denoise(model, setup.video_state, setup.audio_state, official_sigmas(STEPS, torch.device("cpu")),
                _contexts(tiny_config, 1), Guidance.preset_named("cfg"), on_step=stop, accel=ACCEL,
                slot=slot)  # fmt: skip
    assert slot.engine is None
    assert type(model.velocity_model.transformer_blocks[0].attn2.to_k) is torch.nn.Linear


def test_the_batch_plan_keeps_one_graph_only_when_it_fits_beside_the_decodes(tmp_path):
    from ltx2_edge.engine.batch_plan import plan_batch

    plans = [_plan(graph=True), _plan(graph=True)]
    batch = plan_batch(plans, budget_bytes=100)
    assert batch.hold_step_graph and any("one CUDA graph" in r for r in batch.reasons)
    # Decode 30 beside weights 40 + activations 20 + kept K/V 5 = 95 fits 100; at 90 it does not.
    assert not plan_batch(plans, budget_bytes=90).hold_step_graph
    assert not plan_batch([_plan(graph=True), _plan(graph=False)], budget_bytes=100).hold_step_graph
    assert not plan_batch([_plan(graph=True)], budget_bytes=100).hold_step_graph  # one clip: nothing to reuse


class _Stage:
    def __init__(self, **kw: int) -> None:
        self.streamed_units = 0
        self.__dict__.update(kw)


class _Memory:
    def __init__(self, stages: dict) -> None:
        self.stages = stages

    def stage(self, name: str) -> _Stage:
        return self.stages[name]


def _plan(graph: bool):
    """A RunPlan's shape as plan_batch reads it: one pass with its stage and accelerations, the other stages."""
    from types import SimpleNamespace

    denoise_stage = _Stage(weights_resident_bytes=40, activations_bytes=20, predicted_peak_bytes=60)
    accel = SimpleNamespace(settings=replace(ACCEL, cuda_graph=graph), extra_peak_bytes=5)
    one = SimpleNamespace(stage=denoise_stage, accel=accel, active_loras=(), run=SimpleNamespace(stage="denoise"))
    memory = _Memory({
        "text_encode": _Stage(weights_resident_bytes=10, predicted_peak_bytes=20),
        "embeddings": _Stage(weights_resident_bytes=1, predicted_peak_bytes=5),
        "decode": _Stage(weights_resident_bytes=3, predicted_peak_bytes=30),
    })  # fmt: skip
    return SimpleNamespace(passes=[one], memory=memory, predicted_peak_bytes=lambda stage: 65)
