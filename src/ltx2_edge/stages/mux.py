"""Mux stage: decoded frames + vocoder waveform -> one MP4 (H.264 video, AAC audio, request metadata).

Settings: libx264 CRF 18, preset "medium", yuv420p in BT.709 limited range (tagged, so players convert
back with the same matrix); AAC-LC at the vocoder's rate, 128 kb/s mono / 192 kb/s stereo. The fps is kept
as an exact fraction (23.976 -> 24000/1001). Audio is trimmed or zero-padded to exactly num_frames / fps and
encoded as far as the frames written so far reach, so the two streams interleave as the video streams in.
Metadata uses the MP4 muxer's ``use_metadata_tags`` mode: every key (``title``, ``comment`` holding the request
as JSON, ``ltx2_edge``) survives a read back; plain mode would drop custom keys.

``Mp4Writer`` encodes on the caller's thread; ``StreamingMp4Writer`` feeds the same ``_Mp4Encoder`` from a
bounded queue on a writer thread; the exact frame rate, the tags and the read back live in ``mp4_probe``.
This module must never switch codecs when one is missing, never leave a partial file behind after a failure,
and never change pixels or samples beyond the stated trim/pad and the [-1, 1] clip.
"""

from __future__ import annotations

import contextlib
import math
import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, replace
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import torch

from ltx2_edge.atomic import atomic_output, check_output_path
from ltx2_edge.errors import EncoderMissingError, RequestError
from ltx2_edge.stages.mp4_probe import Mp4Probe, fps_fraction, mp4_metadata, probe_mp4

# The mux stage's public names. EncoderMissingError (errors.py) and the frame-rate, tag and probe helpers
# (mp4_probe.py) live elsewhere and are re-exported: the pipeline and tests import them from here.
__all__ = [
    "AAC_SAMPLE_RATES",
    "AUDIO_ENCODER",
    "EncoderMissingError",
    "Mp4Probe",
    "Mp4Writer",
    "MuxStats",
    "StreamingMp4Writer",
    "VIDEO_ENCODER",
    "fps_fraction",
    "mp4_metadata",
    "probe_mp4",
    "require_encoders",
    "write_mp4",
]

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
_STOP = object()


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


def _host_frames(frames: object) -> np.ndarray:
    # Device -> host copy on the caller's thread: the writer thread must not touch CUDA streams.
    return frames.detach().cpu().numpy() if isinstance(frames, torch.Tensor) else np.asarray(frames)


def _host_audio(waveform: object) -> np.ndarray:
    if isinstance(waveform, torch.Tensor):
        waveform = waveform.detach().float().cpu().numpy()
    return np.asarray(waveform)


class _Mp4Encoder:
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
    ) -> None:
        require_encoders()
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
            self._video = self._container.add_stream(VIDEO_ENCODER, rate=self.fps)
            self._video.width, self._video.height, self._video.pix_fmt = width, height, "yuv420p"
            self._video.options = dict(X264_OPTIONS)
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
        )

    def discard(self) -> None:
        """Close without finishing and delete the file. Cleanup after a failure: its own errors are moot."""
        with contextlib.suppress(Exception):
            self._container.close()
        self.path.unlink(missing_ok=True)


class Mp4Writer:
    """Writes an MP4 on the caller's thread: ``write_frames``/``write_audio`` in any order, then ``close()``.

    ``frames``: uint8 RGB [F, H, W, 3] (numpy or torch, any device, any F >= 1 per call). ``waveform``: float
    [C, N] in [-1, 1], C = 1 or 2; mixed down (mean) or duplicated to ``audio_channels``. ``audio_sample_rate``
    None writes video only. On any failure the file is deleted and the error re-raised; use as a context
    manager to get the same on errors raised between calls.
    """

    def __init__(
        self,
        path: Path,
        *,
        width: int,
        height: int,
        fps: float | Fraction,
        audio_sample_rate: int | None,
        audio_channels: int,
        metadata: Mapping[str, str],
    ) -> None:
        self._encoder = _Mp4Encoder(Path(path), width, height, fps, audio_sample_rate, audio_channels, metadata)
        self._done = False

    def write_frames(self, frames: object) -> None:
        """Encode a chunk of frames (the last dimension is RGB)."""
        self._submit(self._encoder.write_frames, _host_frames(frames))

    def write_audio(self, waveform: object) -> None:
        """Add waveform samples; they are encoded as far as the frames written so far reach."""
        self._submit(self._encoder.write_audio, _host_audio(waveform))

    def close(self) -> MuxStats:
        """Flush both encoders, trim or pad audio to frames / fps, finalise the file; return what was written."""
        self._drain()
        stats = self._guarded(self._encoder.finish)
        self._done = True
        return stats

    def abort(self) -> None:
        """Stop without finishing and delete the file. Safe to call more than once."""
        if not self._done:
            self._done = True
            self._stop()
            self._encoder.discard()

    def __enter__(self) -> Mp4Writer:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: object) -> None:
        if exc_type is not None:
            self.abort()
        elif not self._done:
            self.close()

    def _guarded(self, fn: Callable[..., object], *args: object) -> object:
        if self._done:
            raise ValueError("this MP4 writer is already closed or aborted")
        try:
            return fn(*args)
        except BaseException:
            self.abort()
            raise

    def _submit(self, fn: Callable[[np.ndarray], None], data: np.ndarray) -> None:
        self._guarded(fn, data)

    def _drain(self) -> None:
        """Wait until every submitted chunk is encoded (nothing to wait for on the caller's thread)."""

    def _stop(self) -> None:
        """Stop feeding the encoder (nothing runs in the background here)."""


class StreamingMp4Writer(Mp4Writer):
    """``Mp4Writer`` whose encoding runs on a writer thread fed by a queue of at most ``queue_chunks`` chunks.

    The caller (decoding the next chunk) overlaps the encoder (PyAV releases the GIL while encoding), and at
    most ``queue_chunks`` chunks wait in memory; a full queue blocks the caller. An exception on the writer
    thread is re-raised, unchanged, by the next ``write_*`` or ``close()``, after the file is deleted. The
    caller must not modify an array after handing it over: CPU arrays are queued without a copy.
    """

    def __init__(self, path: Path, *, queue_chunks: int = 2, **settings: object) -> None:
        if queue_chunks < 1:
            raise RequestError("queue_chunks", queue_chunks, "1 or more")
        super().__init__(path, **settings)
        self._queue: queue.Queue[object] = queue.Queue(maxsize=queue_chunks)
        self._error: BaseException | None = None
        self._cancel = threading.Event()
        self._thread = threading.Thread(target=self._run, name="ltx2-edge-mp4-writer", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while (item := self._queue.get()) is not _STOP:
            # After a failure or an abort keep taking items, so a caller blocked on a full queue wakes up.
            if self._error is not None or self._cancel.is_set():
                continue
            fn, data = item
            try:
                fn(data)
            except BaseException as exc:  # handed to the caller's thread, which re-raises it
                self._error = exc

    def _raise_pending(self) -> None:
        if self._error is not None:
            error, self._error = self._error, None
            self.abort()
            raise error

    def _submit(self, fn: Callable[[np.ndarray], None], data: np.ndarray) -> None:
        self._raise_pending()
        if self._done:
            raise ValueError("this MP4 writer is already closed or aborted")
        self._queue.put((fn, data))

    def _drain(self) -> None:
        if self._thread.is_alive():
            self._queue.put(_STOP)
            self._thread.join()
        self._raise_pending()

    def _stop(self) -> None:
        self._cancel.set()
        if self._thread.is_alive():
            self._queue.put(_STOP)
            # Joining before discard: the writer thread may be inside encode(); closing under it would crash.
            self._thread.join()


def write_mp4(
    path: Path,
    frames: Iterable[object],
    waveform: object | None,
    sample_rate: int | None,
    fps: float | Fraction,
    audio_channels: int,
    metadata: Mapping[str, str],
    overwrite: bool,
    queue_chunks: int = 2,
) -> MuxStats:
    """Stream ``frames`` (chunks of uint8 [F, H, W, 3]) and ``waveform`` into ``path``, atomically.

    The size comes from the first chunk. Nothing exists at ``path`` until the file is complete; on any failure
    (interrupts included) neither the file nor its temporary remains. ``waveform`` None writes video only.
    """
    path = Path(path)
    check_output_path(path, overwrite)  # before the first chunk, which may cost a whole decode
    chunks: Iterator[object] = iter(frames)
    first = next(chunks, None)
    if first is None:
        raise ValueError("frames is empty; the video needs at least one frame")
    first = _host_frames(first)
    if first.ndim != 4:
        raise ValueError(f"frames chunk has shape {first.shape}; expected [F, H, W, 3]")
    with atomic_output(path, overwrite) as temp:
        writer = StreamingMp4Writer(
            temp,
            queue_chunks=queue_chunks,
            width=first.shape[2],
            height=first.shape[1],
            fps=fps,
            audio_sample_rate=sample_rate if waveform is not None else None,
            audio_channels=audio_channels,
            metadata=metadata,
        )
        with writer:
            if waveform is not None:
                writer.write_audio(waveform)
            writer.write_frames(first)
            for chunk in chunks:
                writer.write_frames(chunk)
            stats = writer.close()
    return replace(stats, path=path)
