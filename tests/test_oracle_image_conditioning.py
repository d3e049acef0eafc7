"""Oracle: image-to-video against ltx-pipelines 1.0.0's helpers, quantization off, float32 CPU, tiny checkpoint.

The official side loads its own encoder (``ModelLedger.video_encoder``), builds its items with
``combined_image_conditionings`` and denoises with ``denoise_audio_video``; ours loads with
``load_video_encoder``, builds with ``encode_images``, conditions ``noised_latents`` and runs ``denoise``.
Sequential guidance must be bit-for-bit identical, batched within rtol 1e-4. Images are deliberately of
other sizes and aspect ratios than the clip (odd sizes too), so fitting and the H.264 pass are covered.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from ltx_core.components.diffusion_steps import EulerDiffusionStep
from ltx_core.components.guiders import create_multimodal_guider_factory
from ltx_core.components.noisers import GaussianNoiser
from ltx_pipelines.utils.args import ImageConditioningInput
from ltx_pipelines.utils.helpers import (
    combined_image_conditionings,
    denoise_audio_video,
    multi_modal_guider_factory_denoising_func,
)
from ltx_pipelines.utils.media_io import load_image_conditioning
from ltx_pipelines.utils.model_ledger import ModelLedger
from ltx_pipelines.utils.samplers import euler_denoising_loop
from ltx_pipelines.utils.types import PipelineComponents
from PIL import Image

import ltx2_edge  # noqa: F401  (torchaudio placeholder before ltx_core)
from ltx2_edge.guidance import Guidance
from ltx2_edge.inputs import ImageSpec
from ltx2_edge.models.loaders import load_video_encoder
from ltx2_edge.stages.conditioning import conditioning_token_count, encode_images, load_image
from ltx2_edge.stages.denoise import Contexts, denoise, official_sigmas
from ltx2_edge.stages.latents import final_latents, noised_latents, pixel_shape

W, H, F, FPS, STEPS, SEED = 64, 96, 17, 24.0, 3, 10
CPU = torch.device("cpu")


def _write_image(path: Path, width: int, height: int, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    across = np.linspace(0, 255, width)[None, :] * np.ones((height, 1))
    down = np.linspace(0, 255, height)[:, None] * np.ones((1, width))
    pixels = np.stack([across, down, 255 - across], axis=-1)
    pixels = (pixels + rng.normal(0, 25, pixels.shape)).clip(0, 255).astype(np.uint8)
    Image.fromarray(pixels).save(path)
    return path


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> tuple[Path, Path]:
    d = tmp_path_factory.mktemp("images")
    return _write_image(d / "wide.png", 71, 45, 1), _write_image(d / "tall.png", 40, 90, 2)


@pytest.fixture(scope="module")
def encoders(tiny_dir):
    path = tiny_dir / "ltx2.safetensors"
    official = ModelLedger(dtype=torch.float32, device=CPU, checkpoint_path=str(path)).video_encoder()
    return official, load_video_encoder(path, CPU, torch.float32)


def _contexts(transformer_config: dict) -> Contexts:
    g = torch.Generator().manual_seed(1)
    width = transformer_config["caption_channels"]
    return Contexts(*(torch.randn(1, 1024, width, generator=g) for _ in range(4)))


def _official(transformer, encoder, specs: list[ImageSpec], guidance: Guidance, ctx: Contexts):
    generator = torch.Generator().manual_seed(SEED)
    inputs = [ImageConditioningInput(str(s.path), s.frame_idx, s.strength, s.crf) for s in specs]
    items = combined_image_conditionings(inputs, H, W, encoder, torch.float32, CPU)
    vf = create_multimodal_guider_factory(params=guidance.video, negative_context=ctx.video_negative)
    af = create_multimodal_guider_factory(params=guidance.audio, negative_context=ctx.audio_negative)

    def loop(sigmas, video_state, audio_state, stepper):
        fn = multi_modal_guider_factory_denoising_func(vf, af, ctx.video, ctx.audio, transformer)
        return euler_denoising_loop(sigmas, video_state, audio_state, stepper, fn)

    video, audio = denoise_audio_video(
        output_shape=pixel_shape(W, H, F, FPS),
        conditionings=items,
        noiser=GaussianNoiser(generator=generator),
        sigmas=official_sigmas(STEPS, CPU),
        stepper=EulerDiffusionStep(),
        denoising_loop_fn=loop,
        components=PipelineComponents(dtype=torch.float32, device=CPU),
        dtype=torch.float32,
        device=CPU,
    )
    return video.latent, audio.latent


def _ours(transformer, encoder, specs: list[ImageSpec], guidance: Guidance, ctx: Contexts):
    generator = torch.Generator().manual_seed(SEED)
    items = encode_images(specs, encoder, W, H)
    setup = noised_latents(pixel_shape(W, H, F, FPS), generator, CPU, torch.float32, conditionings=items)
    video, audio = denoise(
        transformer, setup.video_state, setup.audio_state, official_sigmas(STEPS, CPU), ctx, guidance
    )
    return final_latents(setup, video, audio)


def _specs(images: tuple[Path, Path], case: str) -> list[ImageSpec]:
    wide, tall = images
    if case == "first":
        return [ImageSpec(wide, 0, 1.0)]
    # frame 0 at strength < 1 plus a keyframe (not on the 8-frame latent grid, lossless path) at strength < 1
    return [ImageSpec(wide, 0, 0.8), ImageSpec(tall, 11, 0.6, crf=0)]


@pytest.mark.parametrize("crf", [0, 33])
def test_pixels_and_latents_equal_the_official(images, encoders, crf):
    official_encoder, our_encoder = encoders
    for path in images:
        ours = load_image(ImageSpec(path, 0, 1.0, crf), W, H, CPU, torch.float32)
        ref = load_image_conditioning(str(path), H, W, torch.float32, CPU, crf=crf)
        assert ours.shape == (1, 3, 1, H, W) and torch.equal(ours, ref)
        assert -1.0 <= ours.min() < ours.max() <= 1.0
        with torch.inference_mode():
            assert torch.equal(our_encoder(ours), official_encoder(ref))
    for (name, ref_t), (our_name, our_t) in zip(
        official_encoder.state_dict().items(), our_encoder.state_dict().items(), strict=True
    ):
        assert name == our_name and torch.equal(ref_t, our_t)


@pytest.mark.parametrize("case", ["first", "first+keyframe"])
def test_sequential_mode_is_bit_identical(tiny_transformer_fp32, tiny_config, images, encoders, case):
    guidance = Guidance.preset_named("cfg", mode="sequential")
    ctx = _contexts(tiny_config["transformer"])
    specs = _specs(images, case)
    ref_v, ref_a = _official(tiny_transformer_fp32, encoders[0], specs, guidance, ctx)
    our_v, our_a = _ours(tiny_transformer_fp32, encoders[1], specs, guidance, ctx)
    assert our_v.shape == (1, 128, 3, H // 32, W // 32)
    assert torch.equal(our_v, ref_v) and torch.equal(our_a, ref_a)


@pytest.mark.parametrize("case", ["first", "first+keyframe"])
def test_batched_mode_matches_within_rtol(tiny_transformer_fp32, tiny_config, images, encoders, case):
    guidance = Guidance.preset_named("cfg", mode="batched")
    ctx = _contexts(tiny_config["transformer"])
    specs = _specs(images, case)
    ref_v, ref_a = _official(tiny_transformer_fp32, encoders[0], specs, guidance, ctx)
    our_v, our_a = _ours(tiny_transformer_fp32, encoders[1], specs, guidance, ctx)
    torch.testing.assert_close(our_v, ref_v, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(our_a, ref_a, rtol=1e-4, atol=1e-5)


def test_conditioned_state_and_result_carry_the_images(tiny_transformer_fp32, tiny_config, images, encoders):
    """Guards against an oracle that cannot fail: the images really enter the state and the result."""
    encoder = encoders[1]
    specs = _specs(images, "first+keyframe")
    items = encode_images(specs, encoder, W, H)
    setup = noised_latents(pixel_shape(W, H, F, FPS), torch.Generator().manual_seed(SEED), CPU, torch.float32, items)
    grid = (H // 32) * (W // 32)
    base = 3 * grid  # 17 frames -> 3 latent frames
    state = setup.video_state
    assert state.latent.shape[1] == base + conditioning_token_count(specs, W, H) == base + grid
    # frame 0 tokens noised to 1 - 0.8; the keyframe's appended tokens to 1 - 0.6; the rest fully
    torch.testing.assert_close(state.denoise_mask[0, :grid], torch.full((grid, 1), 0.2), rtol=0, atol=1e-7)
    torch.testing.assert_close(state.denoise_mask[0, base:], torch.full((grid, 1), 0.4), rtol=0, atol=1e-7)
    assert bool((state.denoise_mask[0, grid:base] == 1.0).all())
    # the keyframe's temporal positions start at frame 11 (seconds at 24 fps), not on the latent grid
    assert state.positions[0, 0, base, 0].item() == pytest.approx(11 / FPS)

    ctx = _contexts(tiny_config["transformer"])
    guidance = Guidance.preset_named("cfg", mode="sequential")
    full_v, _ = _ours(tiny_transformer_fp32, encoder, [ImageSpec(specs[0].path, 0, 1.0)], guidance, ctx)
    with torch.inference_mode():
        encoded = encoder(load_image(ImageSpec(specs[0].path, 0, 1.0), W, H, CPU, torch.float32))
    # strength 1 at frame 0: the first latent frame comes out exactly the encoded image
    assert torch.equal(full_v[:, :, :1], encoded)
    key_v, _ = _ours(tiny_transformer_fp32, encoder, specs, guidance, ctx)
    assert (key_v[:, :, 1:] - full_v[:, :, 1:]).abs().max() > 1e-3
