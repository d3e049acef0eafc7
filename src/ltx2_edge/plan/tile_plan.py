"""Video-decode tiling: which tiles ltx_core's ``VideoDecoder.tiled_decode`` would cut, and their working set.

Units are ltx_core's ``TilingConfig`` units (model/video_vae/tiling.py): a spatial tile is given in pixels
(a multiple of 32, at least 64, overlap a multiple of 32) and applies to the frame's *long* side — the
short side's tile is scaled by the aspect ratio; a temporal tile is given in frames (a multiple of 8, at
least 16, overlap a multiple of 8). The split arithmetic below mirrors ``split_with_symmetric_overlaps`` and
``split_temporal_latents`` (causal: later temporal tiles start one latent frame early) so the planner can
size tiles without torch; ``tests/test_planner.py`` checks it against ltx_core. Pure; never allocates.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from ltx2_edge.plan.activations import decoded_frames_bytes, tiled_group_buffers_bytes, video_decode_tile_bytes
from ltx2_edge.plan.flops import video_decode_flops

_SPACE = 32
_TIME = 8


@dataclass(frozen=True)
class VideoTiling:
    """A decode tiling in ltx_core ``TilingConfig`` units; None on an axis means that axis is not tiled.

    ``tiles``: how many decoder forwards; ``working_bytes``: the largest tile's activations plus blending
    buffers (frames kept in host memory not included); ``flops``: all tiles' convolutions together.
    """

    spatial_tile_px: int | None
    spatial_overlap_px: int
    temporal_tile_frames: int | None
    temporal_overlap_frames: int
    tiles: int
    working_bytes: int
    flops: float

    def describe(self) -> str:
        """E.g. ``untiled`` or ``4 tiles: 256 px (overlap 64), 48 frames (overlap 24)``."""
        if self.spatial_tile_px is None and self.temporal_tile_frames is None:
            return "untiled"
        parts = []
        if self.spatial_tile_px is not None:
            parts.append(f"{self.spatial_tile_px} px (overlap {self.spatial_overlap_px})")
        if self.temporal_tile_frames is not None:
            parts.append(f"{self.temporal_tile_frames} frames (overlap {self.temporal_overlap_frames})")
        return f"{self.tiles} tiles: " + ", ".join(parts)


def _split(length: int, size: int, overlap: int, causal: bool) -> tuple[list[int], list[int]]:
    """(starts, ends) of the intervals ltx_core cuts an axis of ``length`` latent cells into."""
    if length <= size:
        return [0], [length]
    amount = (length + size - 2 * overlap - 1) // (size - overlap)
    starts = [i * (size - overlap) for i in range(amount)]
    ends = [s + size for s in starts]
    ends[-1] = length
    if causal:
        starts = starts[:1] + [s - 1 for s in starts[1:]]
    return starts, ends


def split_lengths(length: int, size: int, overlap: int, causal: bool) -> list[int]:
    """Lengths of the intervals ltx_core cuts an axis of ``length`` latent cells into."""
    starts, ends = _split(length, size, overlap, causal)
    return [e - s for s, e in zip(starts, ends, strict=True)]


def chunk_frames(latent_frames: int, tile_frames: int | None, overlap_frames: int = 0) -> list[int]:
    """Frames of each chunk the video decode yields, in order: one chunk untiled in time, else one per
    temporal tile group, as ltx_core's ``tiled_decode`` hands out the part of a group that the next one no
    longer blends into (a group starting where the previous one starts yields nothing and is left out, as
    ``stages/decode_video`` drops it). The lengths add up to the clip's 8 (latent_frames - 1) + 1 frames."""
    frames = _TIME * (latent_frames - 1) + 1
    if tile_frames is None:
        return [frames]
    starts, _ = _split(latent_frames, tile_frames // _TIME, overlap_frames // _TIME, causal=True)
    bounds = [_TIME * s for s in starts] + [frames]
    return [b - a for a, b in zip(bounds, bounds[1:], strict=False) if b > a]


def spatial_tile_cells(axis_length: int, long_side: int, tile_px: int, overlap_px: int) -> int:
    """Latent tile size on one spatial axis: ltx_core scales the long-side tile by this axis's share."""
    size, overlap = tile_px // _SPACE, overlap_px // _SPACE
    return max(max(2, overlap + 1), round(size * axis_length / long_side))


def plan_tiling(
    vae: dict[str, Any],
    lt: int,
    lh: int,
    lw: int,
    spatial: tuple[int, int] | None,
    temporal: tuple[int, int] | None,
) -> VideoTiling:
    """Tiles, largest working set and total FLOPs of decoding an (lt, lh, lw) latent with this tiling."""
    height, width = lh * _SPACE, lw * _SPACE
    if spatial is None:
        hs, ws = [lh], [lw]
    else:
        long_side = max(lh, lw)
        ov = spatial[1] // _SPACE
        hs = split_lengths(lh, spatial_tile_cells(lh, long_side, *spatial), ov, causal=False)
        ws = split_lengths(lw, spatial_tile_cells(lw, long_side, *spatial), ov, causal=False)
    ts = [lt] if temporal is None else split_lengths(lt, temporal[0] // _TIME, temporal[1] // _TIME, causal=True)
    tiles = len(hs) * len(ws) * len(ts)
    work = video_decode_tile_bytes(vae, max(ts), max(hs), max(ws))
    if tiles > 1:
        group_frames = _TIME * max(ts)
        work += tiled_group_buffers_bytes(group_frames, height, width)
    # Tiles come in at most three distinct lengths per axis, so count each distinct shape once.
    flops = sum(
        nt * nh * nw * video_decode_flops(vae, t, h, w)
        for t, nt in Counter(ts).items()
        for h, nh in Counter(hs).items()
        for w, nw in Counter(ws).items()
    )
    return VideoTiling(
        spatial[0] if spatial else None,
        spatial[1] if spatial else 0,
        temporal[0] if temporal else None,
        temporal[1] if temporal else 0,
        tiles,
        work,
        flops,
    )


def candidate_tilings(vae: dict[str, Any], lt: int, lh: int, lw: int) -> Iterator[VideoTiling]:
    """Every tiling worth considering, untiled first: spatial tiles from just under the long side down to
    64 px (overlap 64 px, or 32 below 192 px), temporal tiles from just under the clip down to 16 frames
    (overlap 24 frames, or 8 below 48)."""
    long_px = max(lh, lw) * _SPACE
    frames = _TIME * (lt - 1) + 1
    spatial: list[tuple[int, int] | None] = [None]
    spatial += [(px, 64 if px >= 192 else 32) for px in range(long_px - _SPACE, 63, -_SPACE)]
    temporal: list[tuple[int, int] | None] = [None]
    temporal += [(f, 24 if f >= 48 else 8) for f in range((frames - 1) // _TIME * _TIME, 15, -_TIME)]
    for s in spatial:
        for t in temporal:
            yield plan_tiling(vae, lt, lh, lw, s, t)


def frames_bytes(lt: int, lh: int, lw: int) -> int:
    """The decoded clip as uint8 frames in host memory."""
    return decoded_frames_bytes(_TIME * (lt - 1) + 1, lh * _SPACE, lw * _SPACE)
