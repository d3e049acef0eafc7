"""Initial noised latent states for video and audio, from the output shape and the seed's generator.

Mirrors the official pipeline's order of operations and random draws (``ltx_pipelines.utils.helpers.
denoise_audio_video``): the video state is built, its conditioning items (images) applied, then noised; the
audio state is built and noised after it, from the same generator seeded once. So the same seed and images
give the same latents as ``ltx-pipelines``. Keyframe images add tokens, so they also change the video noise
drawn. This module never loads weights and never draws from any other generator.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from ltx_core.components.noisers import GaussianNoiser
from ltx_core.components.patchifiers import AudioPatchifier, VideoLatentPatchifier
from ltx_core.conditioning import ConditioningItem
from ltx_core.tools import AudioLatentTools, VideoLatentTools
from ltx_core.types import AudioLatentShape, LatentState, SpatioTemporalScaleFactors, VideoLatentShape, VideoPixelShape

VIDEO_LATENT_CHANNELS = 128
VIDEO_SCALE_FACTORS = SpatioTemporalScaleFactors.default()


@dataclass
class LatentSetup:
    """Noised states plus the tools that turn final states back into latents for the decoders."""

    video_state: LatentState
    audio_state: LatentState
    video_tools: VideoLatentTools
    audio_tools: AudioLatentTools


def pixel_shape(width: int, height: int, num_frames: int, frame_rate: float) -> VideoPixelShape:
    """The output clip's shape as ltx-core describes it (batch 1)."""
    return VideoPixelShape(batch=1, frames=num_frames, width=width, height=height, fps=frame_rate)


def video_token_count(width: int, height: int, num_frames: int) -> int:
    """Video latent tokens: one per 8 frames (plus the first) per 32x32 pixels."""
    return ((num_frames - 1) // 8 + 1) * (height // 32) * (width // 32)


def noised_latents(
    shape: VideoPixelShape,
    generator: torch.Generator,
    device: torch.device,
    dtype: torch.dtype,
    conditionings: Sequence[ConditioningItem] = (),
    noise_scale: float | torch.Tensor = 1.0,
    initial_video: torch.Tensor | None = None,
    initial_audio: torch.Tensor | None = None,
) -> LatentSetup:
    """Draw the initial noise for video and audio, the video state conditioned first.

    ``conditionings``: ltx-core items for the video (``stages.conditioning.encode_images``), applied in order
    before noising, as officially. ``noise_scale`` and ``initial_video`` / ``initial_audio`` (unpatchified
    latents) are what a refining stage passes (stage 2: the upsampled latent noised to its first sigma); by
    default the states start from zeros noised fully (text/image-to-video).
    """
    noiser = GaussianNoiser(generator=generator)
    video_shape = VideoLatentShape.from_pixel_shape(
        shape=shape, latent_channels=VIDEO_LATENT_CHANNELS, scale_factors=VIDEO_SCALE_FACTORS
    )
    video_tools = VideoLatentTools(VideoLatentPatchifier(patch_size=1), video_shape, shape.fps)
    audio_tools = AudioLatentTools(AudioPatchifier(patch_size=1), AudioLatentShape.from_video_pixel_shape(shape))
    video_state = video_tools.create_initial_state(device, dtype, initial_video)
    for item in conditionings:
        video_state = item.apply_to(latent_state=video_state, latent_tools=video_tools)
    video_state = noiser(video_state, noise_scale)
    audio_state = noiser(audio_tools.create_initial_state(device, dtype, initial_audio), noise_scale)
    return LatentSetup(video_state, audio_state, video_tools, audio_tools)


def final_latents(
    setup: LatentSetup, video_state: LatentState, audio_state: LatentState
) -> tuple[torch.Tensor, torch.Tensor]:
    """Unpatchified video latent [1, 128, f, h, w] and audio latent [1, 8, t, 16] for the decoders."""
    video = setup.video_tools.unpatchify(setup.video_tools.clear_conditioning(video_state))
    audio = setup.audio_tools.unpatchify(setup.audio_tools.clear_conditioning(audio_state))
    return video.latent, audio.latent
