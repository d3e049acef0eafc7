"""Oracle: the distilled schedules with one forward per step against ltx-pipelines 1.0.0's ``DistilledPipeline``
denoising composition (``simple_denoising_func`` + ``euler_denoising_loop`` + ``denoise_audio_video``), float32
CPU, tiny checkpoint, quantization off.

* distilled-one-stage (ours): the 8 distilled sigmas at the target resolution, from pure noise, optionally with
  a first-frame image, equals the official stage-1 composition run at that same resolution;
* distilled stage 2: the 3 stage-2 sigmas from given latents noised to the first sigma (what the upsampled
  latent goes through) equals the official stage-2 call.
With only the conditional pass, batched and sequential modes run the same single forward: both must be exact.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from ltx_core.components.diffusion_steps import EulerDiffusionStep
from ltx_core.components.noisers import GaussianNoiser
from ltx_pipelines.utils.args import ImageConditioningInput
from ltx_pipelines.utils.constants import DISTILLED_SIGMA_VALUES, STAGE_2_DISTILLED_SIGMA_VALUES
from ltx_pipelines.utils.helpers import combined_image_conditionings, denoise_audio_video, simple_denoising_func
from ltx_pipelines.utils.samplers import euler_denoising_loop
from ltx_pipelines.utils.types import PipelineComponents
from PIL import Image

import ltx2_edge  # noqa: F401  (torchaudio placeholder before ltx_core)
from ltx2_edge.guidance import Guidance
from ltx2_edge.inputs import ImageSpec
from ltx2_edge.models.loaders import load_video_encoder
from ltx2_edge.stages.conditioning import encode_images
from ltx2_edge.stages.denoise import Contexts, denoise
from ltx2_edge.stages.latents import final_latents, noised_latents, pixel_shape
from ltx2_edge.stages.schedules import schedule_sigmas

W, H, F, FPS, SEED = 64, 64, 9, 24.0, 10
CPU = torch.device("cpu")


class _CountingTransformer(torch.nn.Module):
    """Counts forwards, so "one forward per step" is a measured fact."""

    def __init__(self, inner: torch.nn.Module) -> None:
        super().__init__()
        self.inner, self.calls = inner, 0

    def forward(self, **kwargs):
        self.calls += 1
        return self.inner(**kwargs)


def _contexts(transformer_config: dict) -> Contexts:
    g = torch.Generator().manual_seed(3)
    v, a = (torch.randn(1, 1024, transformer_config["caption_channels"], generator=g) for _ in range(2))
    # No negative prompt in the distilled pipelines: the negative slots hold the positive contexts, unused.
    return Contexts(video=v, audio=a, video_negative=v, audio_negative=a)


@pytest.fixture(scope="module")
def image(tmp_path_factory) -> Path:
    pixels = np.random.default_rng(4).integers(0, 256, (50, 80, 3), dtype=np.uint8)
    path = tmp_path_factory.mktemp("distilled") / "first.png"
    Image.fromarray(pixels).save(path)
    return path


def _official(transformer, ctx: Contexts, sigma_values, items, initial=(None, None)):
    sigmas = torch.Tensor(sigma_values).to(CPU)  # as DistilledPipeline builds them
    stage_2 = initial[0] is not None

    def loop(sigmas, video_state, audio_state, stepper):
        fn = simple_denoising_func(video_context=ctx.video, audio_context=ctx.audio, transformer=transformer)
        return euler_denoising_loop(sigmas, video_state, audio_state, stepper, fn)

    video, audio = denoise_audio_video(
        output_shape=pixel_shape(W, H, F, FPS),
        conditionings=items,
        noiser=GaussianNoiser(generator=torch.Generator().manual_seed(SEED)),
        sigmas=sigmas,
        stepper=EulerDiffusionStep(),
        denoising_loop_fn=loop,
        components=PipelineComponents(dtype=torch.float32, device=CPU),
        dtype=torch.float32,
        device=CPU,
        noise_scale=sigmas[0] if stage_2 else 1.0,
        initial_video_latent=initial[0],
        initial_audio_latent=initial[1],
    )
    return video.latent, audio.latent


def _ours(transformer, ctx: Contexts, schedule: str, mode: str, items, initial=(None, None)):
    sigmas = schedule_sigmas(schedule, CPU)
    generator = torch.Generator().manual_seed(SEED)
    noise_scale = sigmas[0] if schedule == "distilled-stage-2" else 1.0
    setup = noised_latents(pixel_shape(W, H, F, FPS), generator, CPU, torch.float32, items, noise_scale, *initial)
    video, audio = denoise(transformer, setup.video_state, setup.audio_state, sigmas, ctx, Guidance.unguided(mode))
    return final_latents(setup, video, audio)


@pytest.mark.parametrize("mode", ["sequential", "batched"])
@pytest.mark.parametrize("with_image", [False, True])
def test_distilled_one_stage_is_bit_identical(tiny_dir, tiny_transformer_fp32, tiny_config, image, mode, with_image):
    ctx = _contexts(tiny_config["transformer"])
    items = []
    if with_image:
        encoder = load_video_encoder(tiny_dir / "ltx2.safetensors", CPU, torch.float32)
        items = encode_images([ImageSpec(image, 0, 0.9)], encoder, W, H)
        official_items = combined_image_conditionings(
            [ImageConditioningInput(str(image), 0, 0.9)], H, W, encoder, torch.float32, CPU
        )
        assert torch.equal(items[0].latent, official_items[0].latent)
    counting = _CountingTransformer(tiny_transformer_fp32)
    our_v, our_a = _ours(counting, ctx, "distilled", mode, items)
    assert counting.calls == 8  # one forward per step, 8 steps
    ref_v, ref_a = _official(tiny_transformer_fp32, ctx, DISTILLED_SIGMA_VALUES, items)
    assert torch.equal(our_v, ref_v) and torch.equal(our_a, ref_a)
    assert our_v.shape == (1, 128, 2, H // 32, W // 32) and torch.isfinite(our_v).all()


@pytest.mark.parametrize("mode", ["sequential", "batched"])
def test_distilled_stage_2_is_bit_identical(tiny_transformer_fp32, tiny_config, mode):
    ctx = _contexts(tiny_config["transformer"])
    g = torch.Generator().manual_seed(5)
    setup = noised_latents(pixel_shape(W, H, F, FPS), g, CPU, torch.float32)
    # stand-ins for the upsampled video latent and stage 1's audio latent (unpatchified shapes)
    initial = final_latents(setup, setup.video_state, setup.audio_state)
    counting = _CountingTransformer(tiny_transformer_fp32)
    our_v, our_a = _ours(counting, ctx, "distilled-stage-2", mode, [], initial)
    assert counting.calls == 3
    ref_v, ref_a = _official(tiny_transformer_fp32, ctx, STAGE_2_DISTILLED_SIGMA_VALUES, [], initial)
    assert torch.equal(our_v, ref_v) and torch.equal(our_a, ref_a)
    # Guards against a test that cannot fail: the initial latents really enter (noised to 0.909, not replaced).
    zeros = (torch.zeros_like(initial[0]), torch.zeros_like(initial[1]))
    from_zeros_v, from_zeros_a = _ours(tiny_transformer_fp32, ctx, "distilled-stage-2", mode, [], zeros)
    assert (our_v - from_zeros_v).abs().max() > 1e-3 and (our_a - from_zeros_a).abs().max() > 1e-3


def test_unguided_preset_runs_one_pass_without_negative_prompt():
    for mode in ("sequential", "batched"):
        guidance = Guidance.unguided(mode)  # type: ignore[arg-type]
        assert guidance.passes() == ("cond",) and guidance.batch == 1
        assert not guidance.uses_negative_prompt and guidance.preset == "none"
    assert Guidance.preset_named("cfg").uses_negative_prompt
    assert Guidance.preset_named("full").passes() == ("cond", "uncond", "perturbed", "isolated")
