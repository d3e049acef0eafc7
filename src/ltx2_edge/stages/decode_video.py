"""Video decode: final video latent -> uint8 frames [f, h, w, 3], chunk by chunk, with ltx-core's VideoDecoder."""

from __future__ import annotations

from collections.abc import Iterator

import torch
from ltx_core.model.video_vae import TilingConfig, VideoDecoder
from ltx_core.model.video_vae import decode_video as _ltx_decode_video

from ltx2_edge.plan.tile_plan import chunk_frames


@torch.inference_mode()
def decode_video(
    latent: torch.Tensor,
    decoder: VideoDecoder,
    generator: torch.Generator | None,
    tiling: TilingConfig | None = None,
) -> Iterator[torch.Tensor]:
    """Yield decoded frames as uint8 chunks on the decoder's device (one chunk when untiled), none of them empty.

    ``generator`` is the run's generator after the noise draws, as the official pipeline passes it (it only
    matters for decoders with timestep conditioning, which inject noise).
    """
    for chunk in _ltx_decode_video(latent, decoder, tiling_config=tiling, generator=generator):
        # ltx-core yields a 0-frame chunk when two temporal tiles start at the same frame (e.g. 17 frames in
        # 16-frame tiles, overlap 8); the MP4 writer rejects empty chunks, and there is nothing in them.
        if chunk.shape[0]:
            yield chunk


def video_chunk_frames(latent: torch.Tensor, tiling: TilingConfig | None) -> list[int]:
    """Frames of each chunk ``decode_video(latent, ..., tiling)`` yields, in order (known before decoding)."""
    temporal = tiling.temporal_config if tiling is not None else None
    if temporal is None:
        return chunk_frames(latent.shape[2], None)
    return chunk_frames(latent.shape[2], temporal.tile_size_in_frames, temporal.tile_overlap_in_frames)
