"""Initial noised latent states for video and audio, from the output shape and the seed's generator.

Mirrors the official pipeline's order of random draws (video noise first, then audio, from one generator
seeded once), so the same seed gives the same latents as ``ltx-pipelines``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from ltx_core.components.noisers import GaussianNoiser
from ltx_core.components.patchifiers import AudioPatchifier, VideoLatentPatchifier
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
    shape: VideoPixelShape, generator: torch.Generator, device: torch.device, dtype: torch.dtype
) -> LatentSetup:
    """Draw the initial noise for video and audio (text-to-video: no conditioning items)."""
    noiser = GaussianNoiser(generator=generator)
    video_shape = VideoLatentShape.from_pixel_shape(
        shape=shape, latent_channels=VIDEO_LATENT_CHANNELS, scale_factors=VIDEO_SCALE_FACTORS
    )
    video_tools = VideoLatentTools(VideoLatentPatchifier(patch_size=1), video_shape, shape.fps)
    audio_tools = AudioLatentTools(AudioPatchifier(patch_size=1), AudioLatentShape.from_video_pixel_shape(shape))
    video_state = noiser(video_tools.create_initial_state(device, dtype, None), 1.0)
    audio_state = noiser(audio_tools.create_initial_state(device, dtype, None), 1.0)
    return LatentSetup(video_state, audio_state, video_tools, audio_tools)


def final_latents(
    setup: LatentSetup, video_state: LatentState, audio_state: LatentState
) -> tuple[torch.Tensor, torch.Tensor]:
    """Unpatchified video latent [1, 128, f, h, w] and audio latent [1, 8, t, 16] for the decoders."""
    video = setup.video_tools.unpatchify(setup.video_tools.clear_conditioning(video_state))
    audio = setup.audio_tools.unpatchify(setup.audio_tools.clear_conditioning(audio_state))
    return video.latent, audio.latent
