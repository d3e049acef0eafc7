"""Oracle: our denoising loop against the official ltx-pipelines 1.0.0 helpers, quantization off, float32 CPU.

Sequential-guidance mode must be bit-for-bit identical; batched mode (one forward per step) within rtol 1e-4.
The transformer comes from the tiny generated checkpoint, loaded by our loader; contexts are fixed random
tensors (the text encoder has its own oracle test).
"""

from __future__ import annotations

import pytest
import torch
from ltx_core.components.diffusion_steps import EulerDiffusionStep
from ltx_core.components.guiders import create_multimodal_guider_factory
from ltx_core.components.noisers import GaussianNoiser
from ltx_pipelines.utils.helpers import denoise_audio_video, multi_modal_guider_factory_denoising_func
from ltx_pipelines.utils.samplers import euler_denoising_loop
from ltx_pipelines.utils.types import PipelineComponents

import ltx2_edge  # noqa: F401  (torchaudio placeholder before ltx_core)
from ltx2_edge.guidance import Guidance
from ltx2_edge.stages.denoise import Contexts, denoise, official_sigmas
from ltx2_edge.stages.latents import final_latents, noised_latents, pixel_shape

W, H, F, FPS, STEPS, SEED = 64, 96, 17, 24.0, 4, 10


def _contexts(transformer_config: dict) -> Contexts:
    g = torch.Generator().manual_seed(1)
    width = transformer_config["caption_channels"]

    def ctx() -> torch.Tensor:
        return torch.randn(1, 1024, width, generator=g)

    return Contexts(video=ctx(), audio=ctx(), video_negative=ctx(), audio_negative=ctx())


def _official(transformer, guidance: Guidance, ctx: Contexts):
    generator = torch.Generator().manual_seed(SEED)
    sigmas = official_sigmas(STEPS, torch.device("cpu"))
    vf = create_multimodal_guider_factory(params=guidance.video, negative_context=ctx.video_negative)
    af = create_multimodal_guider_factory(params=guidance.audio, negative_context=ctx.audio_negative)

    def loop(sigmas, video_state, audio_state, stepper):
        fn = multi_modal_guider_factory_denoising_func(vf, af, ctx.video, ctx.audio, transformer)
        return euler_denoising_loop(sigmas, video_state, audio_state, stepper, fn)

    video, audio = denoise_audio_video(
        output_shape=pixel_shape(W, H, F, FPS),
        conditionings=[],
        noiser=GaussianNoiser(generator=generator),
        sigmas=sigmas,
        stepper=EulerDiffusionStep(),
        denoising_loop_fn=loop,
        components=PipelineComponents(dtype=torch.float32, device=torch.device("cpu")),
        dtype=torch.float32,
        device=torch.device("cpu"),
    )
    return video.latent, audio.latent


def _ours(transformer, guidance: Guidance, ctx: Contexts):
    generator = torch.Generator().manual_seed(SEED)
    setup = noised_latents(pixel_shape(W, H, F, FPS), generator, torch.device("cpu"), torch.float32)
    video, audio = denoise(
        transformer, setup.video_state, setup.audio_state, official_sigmas(STEPS, torch.device("cpu")), ctx, guidance
    )
    return final_latents(setup, video, audio)


@pytest.mark.parametrize("preset", ["cfg", "full"])
def test_sequential_mode_is_bit_identical(tiny_transformer_fp32, tiny_config, preset):
    guidance = Guidance.preset_named(preset, mode="sequential")
    if preset == "full":
        # The tiny model has 2 blocks; put STG on one that exists so the perturbed pass really differs.
        guidance = _with_stg_block(guidance, 1)
    ctx = _contexts(tiny_config["transformer"])
    ref_v, ref_a = _official(tiny_transformer_fp32, guidance, ctx)
    our_v, our_a = _ours(tiny_transformer_fp32, guidance, ctx)
    assert torch.equal(our_v, ref_v)
    assert torch.equal(our_a, ref_a)
    assert our_v.abs().sum() > 0 and torch.isfinite(our_v).all() and torch.isfinite(our_a).all()


@pytest.mark.parametrize("preset", ["cfg", "full"])
def test_batched_mode_matches_within_rtol(tiny_transformer_fp32, tiny_config, preset):
    guidance = Guidance.preset_named(preset, mode="batched")
    if preset == "full":
        guidance = _with_stg_block(guidance, 1)
    assert guidance.batch == (2 if preset == "cfg" else 4)
    ctx = _contexts(tiny_config["transformer"])
    ref_v, ref_a = _official(tiny_transformer_fp32, guidance, ctx)
    our_v, our_a = _ours(tiny_transformer_fp32, guidance, ctx)
    torch.testing.assert_close(our_v, ref_v, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(our_a, ref_a, rtol=1e-4, atol=1e-5)


def test_guidance_passes_change_the_result(tiny_transformer_fp32, tiny_config):
    """Guards against a test that cannot fail: each pass really enters the result."""
    ctx = _contexts(tiny_config["transformer"])
    cfg_v, _ = _ours(tiny_transformer_fp32, Guidance.preset_named("cfg"), ctx)
    full_v, _ = _ours(tiny_transformer_fp32, _with_stg_block(Guidance.preset_named("full"), 1), ctx)
    assert (cfg_v - full_v).abs().max() > 1e-3


def _with_stg_block(guidance: Guidance, block: int) -> Guidance:
    from dataclasses import replace

    return replace(
        guidance,
        video=replace(guidance.video, stg_blocks=[block]),
        audio=replace(guidance.audio, stg_blocks=[block]),
    )
