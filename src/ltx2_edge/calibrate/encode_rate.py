"""Calibrate's MP4 timing: the run's writer (``mp4.mux.write_mp4``, with the encoder runs resolve) on random frames
at two sizes, and its AAC audio, into a scratch file removed after.

Random frames are the hardest content for H.264 and what a random-weight model decodes; real footage encodes
faster, so the figure is an upper bound. Per frame: a line in pixels through the two sizes (``MuxStats``' seconds on
the encoding thread). This module writes only its scratch file.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from ltx2_edge.mp4.mux import write_mp4
from ltx2_edge.plan.timings import EncodeTimings, Line

SIZES = ((512, 288), (1024, 576))  # W1's size, and 4x its pixels
QUICK_SIZES = ((128, 96), (256, 192))  # --quick: a check that the step runs, not a figure to plan with
SAMPLE_RATE = 24000


def _encode(folder: Path, width: int, height: int, frames: int, seconds_audio: float, encoder: str,
            ) -> tuple[float, float]:  # fmt: skip
    rng = np.random.default_rng(0)
    chunk = rng.integers(0, 256, size=(frames, height, width, 3), dtype=np.uint8)
    samples = int(seconds_audio * SAMPLE_RATE)
    waveform = rng.uniform(-0.5, 0.5, size=(2, samples)).astype(np.float32)
    with tempfile.TemporaryDirectory(prefix=".calibrate-mp4-", dir=folder) as scratch:
        stats = write_mp4(Path(scratch) / "noise.mp4", [chunk], waveform, SAMPLE_RATE, 24.0, 2, {}, True,
                          video_encoder=encoder)  # fmt: skip
    return stats.video_encode_s / frames, stats.audio_encode_s / max(seconds_audio, 1e-9)


def encode_timings(folder: Path, encoder: str, frames: tuple[int, int],
                   sizes: tuple[tuple[int, int], ...] = SIZES) -> EncodeTimings:  # fmt: skip
    """``frames[i]`` random frames at ``sizes[i]`` (each with frames / 24 s of stereo audio) through ``encoder``."""
    folder.mkdir(parents=True, exist_ok=True)
    points, audio = [], []
    for (width, height), n in zip(sizes, frames, strict=True):
        per_frame, per_audio_second = _encode(folder, width, height, n, n / 24.0, encoder)
        points.append((width * height, per_frame))
        audio.append(per_audio_second)
    (p0, s0), (p1, s1) = points
    how = (f"{encoder} through the run's MP4 writer on random frames (an upper bound: real footage encodes faster): "
           f"{1 / s0:.0f} fps at {sizes[0][0]}x{sizes[0][1]}, {1 / s1:.0f} fps at {sizes[1][0]}x{sizes[1][1]}; AAC "
           f"{max(audio):.3f} s per second of audio")  # fmt: skip
    return EncodeTimings(encoder, Line.through(p0, s0, p1, s1), max(audio), how)
