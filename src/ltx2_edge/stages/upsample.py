"""Latent upsampling between the two stages: the stage-1 video latent -> twice its height and width.

``upsample_latent`` is the official step (``ltx_core.model.upsampler.upsample_video`` on the first batch item:
un-normalise with the video VAE encoder's per-channel statistics, ``LatentUpsampler``, normalise again).
``upsample_working_bytes`` is the planner's arithmetic for the activations that step allocates; it is pure
(no torch, no file). This module never loads a model and never moves a tensor between devices.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
from ltx_core.model.upsampler import upsample_video

from ltx2_edge.checkpoint.header import TensorInfo


def upsample_latent(
    video_latent: torch.Tensor, video_encoder: torch.nn.Module, upsampler: torch.nn.Module
) -> torch.Tensor:
    """Upsample ``video_latent[:1]`` ([1, C, F, H, W] -> [1, C, F, 2H, 2W]) exactly as the two-stage pipelines do.

    ``video_encoder`` only lends its per-channel latent statistics. All three must share device and dtype.
    """
    if video_latent.ndim != 5 or video_latent.shape[1] != upsampler.in_channels:
        raise ValueError(
            f"video latent {list(video_latent.shape)} is not [B, {upsampler.in_channels}, F, H, W] for this upsampler"
        )
    with torch.inference_mode():
        return upsample_video(latent=video_latent[:1], video_encoder=video_encoder, upsampler=upsampler)


def upsample_working_bytes(config: dict, latent_shape: tuple[int, int, int, int, int], dtype_bytes: int) -> int:
    """Peak bytes of the tensors ``upsample_latent`` allocates, beyond its input latent and the weights.

    ``config``: the upsampler's config with every key present (``UpsamplerInfo.config``, or the writer's);
    ``latent_shape``: the stage-1 video latent ``(B, C, F, H, W)`` (only the first item is upsampled).

    Counted, in units of one channel over the stage-1 grid ``n = F * H * W`` (C latent channels, M middle ones),
    with every intermediate a new tensor as in eager inference (nothing in place, no autograd):
      - the un-normalised input copy, alive for the whole forward: C;
      - a ResBlock at its end: input, norm2 output, ``x + residual`` and the SiLU of it, 4 M; before the upsampler
        that is 4 M, after it the grid is 4n, so 16 M: the peak once M > 0.7 C (the official file: M = 8 C);
      - the upsampler: its input, the conv's 4 M output, the pixel-shuffle copy (4 M) and the per-frame reshape
        copies: 9 M;
      - the end: the final conv's 4 C output, ``x - mean`` and its quotient by std: 12 C (3 x 4 C).
    The peak is the largest of these phases; it equals the peak of live tensors measured on CPU (float32) to
    0.05% (tests/test_upsampler.py). Not counted: convolution workspaces (cuDNN's, bounded by its workspace
    limit; on CPU torch's ``slow_conv3d`` unfolds each conv input 27-fold, which made the CPU process peak 7.3x
    this figure at M = 256..512) and GroupNorm's per-group statistics (32 values).
    """
    if config.get("temporal_upsample") or not config.get("spatial_upsample") or config.get("dims") != 3:
        raise ValueError("upsample_working_bytes covers the 3-D spatial x2 upsampler only (see inspect_upsampler)")
    _, c, f, h, w = latent_shape
    n = f * h * w
    m = config["mid_channels"]
    if config["in_channels"] != c:
        raise ValueError(f"latent has {c} channels but the upsampler takes {config['in_channels']}")
    held = c * n
    phases = (
        2 * c * n,  # un-normalise: x * std, then + mean
        held + 4 * m * n,  # the last ResBlock before the upsampler
        held + 9 * m * n,  # the upsampler
        held + 16 * m * n,  # the last ResBlock after it (4x the positions)
        held + 4 * m * n + 4 * c * n,  # the final conv: its input and output
        12 * c * n,  # normalise the 4n-position output: it, x - mean, (x - mean) / std
    )
    return max(phases) * dtype_bytes


# Convolutions that run on the stage-1 grid; the rest (post-upsample blocks, final conv) run on the 4x grid.
_BEFORE_X2 = ("initial_conv.", "res_blocks.", "upsampler.")


def upsample_flops(tensors: Mapping[str, TensorInfo], latent_shape: tuple[int, int, int, int, int]) -> float:
    """FLOPs of the upsampler's forward over ``latent_shape`` (B, C, F, H, W), from its file's tensor shapes.

    Every convolution weight (4-D per frame or 5-D, stride 1, same padding) costs 2 x its elements per output
    position; positions are F x H x W before the x2 and four times that after it. Norms and biases are
    left out (under 1% here).
    """
    _, _, f, h, w = latent_shape
    n = f * h * w
    total = 0.0
    for name, info in tensors.items():
        if not name.endswith(".weight") or len(info.shape) not in (4, 5):
            continue
        total += 2.0 * math.prod(info.shape) * (n if name.startswith(_BEFORE_X2) else 4 * n)
    return total
