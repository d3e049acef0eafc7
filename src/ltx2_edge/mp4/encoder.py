"""One MP4 being encoded: H.264 video + AAC audio through PyAV, on whichever thread calls it.

The settings live here (libx264 CRF 18, preset "medium", yuv420p BT.709 limited range; AAC at the vocoder's
rate; a hardware H.264 encoder's options come from ``mp4.video_encoders``, which also decides when one runs),
with the array conversions and the stats record (which names the video encoder that ran). ``mp4/mux.py``
drives an ``Mp4Encoder`` from the caller's thread or a writer thread and makes the output atomic; this module
only ever deletes its own partial file (``discard``), never renames anything, and never switches codecs when
one is missing.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import torch

from ltx2_edge.errors import EncoderMissingError, RequestError
from ltx2_edge.mp4.probe import fps_fraction
from ltx2_edge.mp4.video_encoders import encoder_options

VIDEO_ENCODER, AUDIO_ENCODER = "libx264", "aac"
CRF, PRESET = 18, "medium"
# Measured with this PyAV wheel: with CRF + lookahead/mbtree x264 output is not bit-reproducible run to run
# (~1 in 10 encodes differ, decoded PSNR between runs >= 42 dB), even at threads=1. Reproducible bytes would
# need "x264-params": "rc-lookahead=0:mbtree=0", at a compression cost we do not pay by default.
X264_OPTIONS = {"crf": str(CRF), "preset": PRESET}
AUDIO_BIT_RATE = {1: 128_000, 2: 192_000}
AAC_SAMPLE_RATES = frozenset({7350, 8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000, 64000, 88200, 96000})
_LAYOUT = {1: "mono", 2: "stereo"}
_MOVFLAGS = "+faststart+use_metadata_tags"  # moov first (playable while downloading); keep custom keys
_BT709 = 1  # AVCOL_PRI/TRC/SPC_BT709 and AVCOL_RANGE_MPEG share the value 1 in libavutil


def require_encoders(names: Iterable[str] = (VIDEO_ENCODER, AUDIO_ENCODER)) -> None:
    """Raise ``EncoderMissingError`` naming every encoder in ``names`` that this PyAV build cannot open."""
    missing = []
    for name in names:
        try:
            av.Codec(name, "w")
        except av.codec.codec.UnknownCodecError:
            missing.append(name)
    if missing:
        raise EncoderMissingError(
            f"PyAV {av.__version__} has no encoder {', '.join(missing)}; install a PyAV wheel built with libx264 "
            "and aac (the PyPI wheels are): `pip install --force-reinstall av`"
        )


@dataclass(frozen=True)
class MuxStats:
    """What the mux stage wrote and how long encoding took (seconds on the encoding thread)."""

    path: Path
    frames: int
    fps: Fraction
    audio_samples: int  # written; == round(frames / fps * sample_rate)
    audio_samples_padded: int  # zeros appended because the waveform was shorter than the video
    audio_samples_trimmed: int  # dropped because the waveform was longer than the video
    video_encode_s: float
    audio_encode_s: float
    file_bytes: int
    video_encoder: str = VIDEO_ENCODER  # the H.264 encoder that wrote the video (libx264 or a hardware one)


def host_frames(frames: object) -> np.ndarray:
    # Device -> host copy on the caller's thread: the writer thread must not touch CUDA streams.
    return frames.detach().cpu().numpy() if isinstance(frames, torch.Tensor) else np.asarray(frames)


def host_audio(waveform: object) -> np.ndarray:
    if isinstance(waveform, torch.Tensor):
        waveform = waveform.detach().float().cpu().numpy()
    return np.asarray(waveform)


class Mp4Encoder:
    """The one encoding path. Not thread-safe: exactly one thread calls it at a time."""

    def __init__(
        self,
        path: Path,
        width: int,
        height: int,
        fps: float | Fraction,
        audio_sample_rate: int | None,
        audio_channels: int,
        metadata: Mapping[str, str],
        video_encoder: str = VIDEO_ENCODER,
    ) -> None:
        require_encoders((video_encoder, AUDIO_ENCODER))
        self.video_encoder = video_encoder
        self.fps = fps_fraction(fps)
        if width <= 0 or height <= 0 or width % 2 or height % 2:
            raise RequestError("width x height", f"{width}x{height}", "positive even sizes (yuv420p halves both)")
        if audio_channels not in _LAYOUT:
            raise RequestError("audio_channels", audio_channels, "1 (mono) or 2 (stereo)")
        if audio_sample_rate is not None and audio_sample_rate not in AAC_SAMPLE_RATES:
            raise RequestError("audio_sample_rate", audio_sample_rate, f"one AAC supports: {sorted(AAC_SAMPLE_RATES)}")
        self.path, self.width, self.height = Path(path), width, height
        self.sample_rate, self.channels = audio_sample_rate, audio_channels
        self.frames = 0
        self.video_s = self.audio_s = 0.0
        self._pending = np.zeros((audio_channels, 0), np.float32)  # audio received, not yet encoded
        self._audio_in = self._audio_out = 0
        self._audio = None
        self._container = av.open(str(self.path), "w", format="mp4", options={"movflags": _MOVFLAGS})
        try:  # av.open has created the file: a failure below must not leave it behind
            for key, value in metadata.items():
                self._container.metadata[str(key)] = str(value)
            self._video = self._container.add_stream(video_encoder, rate=self.fps)
            self._video.width, self._video.height, self._video.pix_fmt = width, height, "yuv420p"
            if video_encoder == VIDEO_ENCODER:
                self._video.options = dict(X264_OPTIONS)
            else:
                options, bit_rate = encoder_options(video_encoder, width, height, float(self.fps))
                self._video.options = options
                if bit_rate is not None:
                    self._video.bit_rate = bit_rate
            cc = self._video.codec_context
            cc.colorspace = cc.color_primaries = cc.color_trc = cc.color_range = _BT709
            if audio_sample_rate is not None:
                self._audio = self._container.add_stream(AUDIO_ENCODER, rate=audio_sample_rate)
                self._audio.layout, self._audio.bit_rate = _LAYOUT[audio_channels], AUDIO_BIT_RATE[audio_channels]
        except BaseException:
            self.discard()
            raise

    def _samples_at(self, frames: int) -> Fraction:
        return frames * Fraction(self.sample_rate or 0) / self.fps

    def write_frames(self, frames: np.ndarray) -> None:
        if frames.ndim != 4 or frames.shape[0] < 1 or frames.shape[1:] != (self.height, self.width, 3):
            raise ValueError(
                f"frames chunk has shape {tuple(frames.shape)}; expected [F>=1, {self.height}, {self.width}, 3] "
                "(the size this writer was opened with)"
            )
        if frames.dtype != np.uint8:
            raise ValueError(f"frames chunk has dtype {frames.dtype}; expected uint8 RGB (scale and round first)")
        start = time.perf_counter()
        for rgb in frames:
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
            frame = frame.reformat(format="yuv420p", dst_colorspace="itu709", dst_color_range="MPEG")
            frame.pts, frame.time_base = self.frames, 1 / self.fps
            self._container.mux(self._video.encode(frame))
            self.frames += 1
        self.video_s += time.perf_counter() - start
        self._encode_audio(math.floor(self._samples_at(self.frames)))

    def write_audio(self, waveform: np.ndarray) -> None:
        if self._audio is None:
            raise ValueError("write_audio() on a writer opened with audio_sample_rate=None")
        if waveform.ndim != 2 or waveform.shape[0] not in _LAYOUT or not np.issubdtype(waveform.dtype, np.floating):
            raise ValueError(f"waveform has shape {waveform.shape} dtype {waveform.dtype}; expected float [1|2, N]")
        if waveform.shape[0] == 2 and self.channels == 1:
            waveform = waveform.mean(axis=0, keepdims=True)
        elif waveform.shape[0] == 1 and self.channels == 2:
            waveform = np.repeat(waveform, 2, axis=0)
        self._pending = np.concatenate([self._pending, np.clip(waveform, -1.0, 1.0).astype(np.float32)], axis=1)
        self._audio_in += waveform.shape[1]
        self._encode_audio(math.floor(self._samples_at(self.frames)))

    def _encode_audio(self, upto: int, flush: bool = False) -> None:
        """Encode pending audio until ``upto`` samples are out; zeros fill the gap only when flushing."""
        if self._audio is None:
            return
        start = time.perf_counter()
        take = min(upto - self._audio_out, self._pending.shape[1])
        chunk, self._pending = self._pending[:, :take], self._pending[:, take:]
        if flush:
            chunk = np.pad(chunk, ((0, 0), (0, upto - self._audio_out - take)))
        if chunk.shape[1]:
            frame = av.AudioFrame.from_ndarray(
                np.ascontiguousarray(chunk), format="fltp", layout=_LAYOUT[self.channels]
            )
            frame.sample_rate, frame.pts = self.sample_rate, self._audio_out
            frame.time_base = Fraction(1, self.sample_rate)
            self._container.mux(self._audio.encode(frame))
            self._audio_out += chunk.shape[1]
        if flush:
            self._container.mux(self._audio.encode(None))
        self.audio_s += time.perf_counter() - start

    def finish(self) -> MuxStats:
        if self.frames == 0:
            raise ValueError("no frames were written; call write_frames() before close()")
        if self._audio is not None and self._audio_in == 0:
            raise ValueError("no audio was written; call write_audio() or open the writer with audio_sample_rate=None")
        start = time.perf_counter()
        self._container.mux(self._video.encode(None))
        self.video_s += time.perf_counter() - start
        target = round(self._samples_at(self.frames))
        self._encode_audio(target, flush=True)
        self._container.close()
        return MuxStats(
            path=self.path,
            frames=self.frames,
            fps=self.fps,
            audio_samples=self._audio_out,
            audio_samples_padded=max(0, target - self._audio_in),
            audio_samples_trimmed=max(0, self._audio_in - target),
            video_encode_s=self.video_s,
            audio_encode_s=self.audio_s,
            file_bytes=self.path.stat().st_size,
            video_encoder=self.video_encoder,
        )

    def discard(self) -> None:
        """Close without finishing and delete the file. Cleanup after a failure: its own errors are moot."""
        with contextlib.suppress(Exception):
            self._container.close()
        self.path.unlink(missing_ok=True)
