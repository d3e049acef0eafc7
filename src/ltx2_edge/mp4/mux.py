"""Mux stage: decoded frames + vocoder waveform -> one MP4 (H.264 video, AAC audio, request metadata).

Settings: libx264 CRF 18, preset "medium", yuv420p in BT.709 limited range (tagged, so players convert
back with the same matrix); AAC-LC at the vocoder's rate, 128 kb/s mono / 192 kb/s stereo. The fps is kept
as an exact fraction (23.976 -> 24000/1001). Audio is trimmed or zero-padded to exactly num_frames / fps and
encoded as far as the frames written so far reach, so the two streams interleave as the video streams in.
Metadata uses the MP4 muxer's ``use_metadata_tags`` mode: every key (``title``, ``comment`` holding the request
as JSON, ``ltx2_edge``) survives a read back; plain mode would drop custom keys.

``Mp4Writer`` encodes on the caller's thread; ``StreamingMp4Writer`` feeds the same ``Mp4Encoder``
(``mp4_encoder``, with the settings) from a bounded queue on a writer thread; frame rate, tags and the read
back live in ``mp4_probe``. ``write_mp4`` takes the waveform ready or late (``LateAudio``: still decoding
while the frames stream in), so video encoding never waits for the audio decode.
This module must never switch codecs when one is missing, never leave a partial file behind after a failure,
and never change pixels or samples beyond the stated trim/pad and the [-1, 1] clip.
"""

from __future__ import annotations

import itertools
import queue
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import Future
from dataclasses import dataclass, field, replace
from fractions import Fraction
from pathlib import Path

import numpy as np

from ltx2_edge.atomic import atomic_output, check_output_path
from ltx2_edge.errors import EncoderMissingError, RequestError
from ltx2_edge.mp4.encoder import (
    AAC_SAMPLE_RATES,
    AUDIO_ENCODER,
    VIDEO_ENCODER,
    Mp4Encoder,
    MuxStats,
    host_audio,
    host_frames,
    require_encoders,
)
from ltx2_edge.mp4.probe import Mp4Probe, fps_fraction, mp4_metadata, probe_mp4

# The mux stage's public names. EncoderMissingError (errors.py) and the frame-rate, tag and probe helpers
# (mp4_probe.py) live elsewhere and are re-exported: the pipeline and tests import them from here.
__all__ = [
    "AAC_SAMPLE_RATES",
    "AUDIO_ENCODER",
    "EncoderMissingError",
    "LateAudio",
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

_STOP = object()  # tells the writer thread to finish


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
        video_encoder: str = VIDEO_ENCODER,
    ) -> None:
        self._encoder = Mp4Encoder(Path(path), width, height, fps, audio_sample_rate, audio_channels, metadata,
                                   video_encoder)  # fmt: skip
        self._done = False

    def write_frames(self, frames: object) -> None:
        """Encode a chunk of frames (the last dimension is RGB)."""
        self._submit(self._encoder.write_frames, host_frames(frames))

    def write_audio(self, waveform: object) -> None:
        """Add waveform samples; they are encoded as far as the frames written so far reach."""
        self._submit(self._encoder.write_audio, host_audio(waveform))

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


def _not_yet() -> bool:
    return False


@dataclass(frozen=True)
class LateAudio:
    """A waveform still being computed (on a decode worker, say), handed to ``write_mp4`` before it exists.

    ``get()`` waits for the waveform and returns it (or raises the worker's exception); ``ready()`` says whether
    ``get()`` would return at once. Without ``ready`` the waveform is fetched after the last video chunk.
    """

    get: Callable[[], object]
    ready: Callable[[], bool] = field(default=_not_yet)


def _late(waveform: object) -> LateAudio | None:
    if waveform is None or isinstance(waveform, LateAudio):
        return waveform
    if isinstance(waveform, Future):
        return LateAudio(waveform.result, waveform.done)
    if callable(waveform):
        return LateAudio(waveform)
    return LateAudio(lambda: waveform, lambda: True)  # a waveform in hand: written before the first frame


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
    video_encoder: str = VIDEO_ENCODER,
) -> MuxStats:
    """Stream ``frames`` (chunks of uint8 [F, H, W, 3]) and ``waveform`` into ``path``, atomically.

    ``waveform``: float [C, N] (array or tensor); or one that is still being computed, as a ``LateAudio``, a
    ``concurrent.futures.Future`` or a zero-argument callable (called after the last chunk). A late waveform
    is added as soon as it is ready (checked before each chunk) and waited for after the last chunk, so frames
    keep streaming into the encoder while it decodes; ``sample_rate`` must be known up front. None writes
    video only. The size comes from the first chunk. Nothing exists at ``path`` until the file is complete; on
    any failure (interrupts, the writer thread's errors and the late waveform's exception included) neither
    the file nor its temporary remains, and the exception propagates unchanged. ``video_encoder``: the H.264
    encoder (``mp4.video_encoders.resolve_video_encoder`` decides it; libx264 by default), named in the stats.
    """
    path = Path(path)
    check_output_path(path, overwrite)  # before the first chunk, which may cost a whole decode
    audio = _late(waveform)
    chunks: Iterator[object] = iter(frames)
    first = next(chunks, None)
    if first is None:
        raise ValueError("frames is empty; the video needs at least one frame")
    first = host_frames(first)
    if first.ndim != 4:
        raise ValueError(f"frames chunk has shape {first.shape}; expected [F, H, W, 3]")
    with atomic_output(path, overwrite) as temp:
        writer = StreamingMp4Writer(
            temp,
            queue_chunks=queue_chunks,
            width=first.shape[2],
            height=first.shape[1],
            fps=fps,
            audio_sample_rate=sample_rate if audio is not None else None,
            audio_channels=audio_channels,
            metadata=metadata,
            video_encoder=video_encoder,
        )
        with writer:
            for chunk in itertools.chain([first], chunks):
                if audio is not None and audio.ready():
                    writer.write_audio(audio.get())
                    audio = None
                writer.write_frames(chunk)
            if audio is not None:
                # The frames are all queued; the writer thread keeps encoding them while this waits.
                writer.write_audio(audio.get())
            stats = writer.close()
    return replace(stats, path=path)
