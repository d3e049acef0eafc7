"""MP4 facts that need no encoder: the exact frame rate, the container tags of a generation, and a read back.

``fps_fraction`` and ``mp4_metadata`` are pure (the mux stage writes what they return); ``probe_mp4`` reads
stream parameters and tags of a finished file the way ffprobe would, for tests and callers that check output.
This module must never decode or encode a frame, and never write or modify a file.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av

from ltx2_edge import __version__
from ltx2_edge.errors import RequestError


def fps_fraction(fps: float | Fraction) -> Fraction:
    """The exact frame rate: integers stay integers, NTSC rates snap to n*1000/1001, else denominator <= 1001."""
    if not fps > 0:
        raise RequestError("fps", fps, "a positive number of frames per second, e.g. 24 or 23.976")
    if isinstance(fps, Fraction):
        return fps
    ntsc = round(fps * 1.001)
    # limit_denominator alone would turn 23.976 into 2997/125; broadcast rates mean 24000/1001.
    if fps != round(fps) and abs(fps - ntsc * 1000 / 1001) < 5e-4:
        return Fraction(ntsc * 1000, 1001)
    return Fraction(fps).limit_denominator(1001)


def mp4_metadata(request_fields: Mapping[str, object], model_version: str) -> dict[str, str]:
    """Container tags of a generation: ``title`` (prompt[:80]), ``comment`` (fields as JSON), ``ltx2_edge``."""
    record = {**request_fields, "model_version": model_version, "ltx2_edge_version": __version__}
    return {
        "title": str(request_fields.get("prompt", ""))[:80],
        "comment": json.dumps(record, ensure_ascii=False, sort_keys=True, default=str),
        "ltx2_edge": __version__,
    }


@dataclass(frozen=True)
class Mp4Probe:
    """What a reader sees in an MP4 (as ffprobe would report it). Audio fields are None without audio."""

    video_codec: str
    pix_fmt: str
    width: int
    height: int
    frames: int
    fps: Fraction
    video_duration_s: float
    audio_codec: str | None
    sample_rate: int | None
    channels: int | None
    audio_duration_s: float | None
    metadata: dict[str, str]


def probe_mp4(path: Path) -> Mp4Probe:
    """Read stream parameters and container tags of ``path`` without decoding."""
    with av.open(str(path)) as container:
        video = container.streams.video[0]
        audio = container.streams.audio[0] if container.streams.audio else None
        return Mp4Probe(
            video_codec=video.codec_context.name,
            pix_fmt=video.codec_context.pix_fmt,
            width=video.codec_context.width,
            height=video.codec_context.height,
            frames=video.frames,
            fps=Fraction(video.average_rate),
            video_duration_s=float(video.duration * video.time_base),
            audio_codec=audio.codec_context.name if audio else None,
            sample_rate=audio.codec_context.sample_rate if audio else None,
            channels=audio.codec_context.channels if audio else None,
            audio_duration_s=float(audio.duration * audio.time_base) if audio else None,
            metadata=dict(container.metadata),
        )
