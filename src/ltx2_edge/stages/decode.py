"""Decode both modalities at once: audio decoder + vocoder run while the video VAE decodes, chunk by chunk.

``decode_overlapped`` starts the audio decode on a worker thread (one ``ThreadPoolExecutor`` worker) and returns
at once with a lazy iterator of video chunks and an ``AudioFuture``. On CUDA the worker also runs on its own
``torch.cuda.Stream``, so its kernels overlap the video decoder's on the GPU, not only the Python launches.

Synchronisation rules (CUDA):
- latent ready -> audio: the audio stream waits on the caller's stream before the worker launches anything.
- audio done -> waveform use: an event is recorded after the vocoder; the host copy waits on it.
- memory: the audio latent is marked as used by the audio stream (``record_stream``), so freeing it on the
  caller's side cannot hand its block to the video decoder while the vocoder still reads it.

This module must never leave a worker thread running after the video iterator is closed or exhausted or after
``AudioFuture.result()`` returns, never swallow an exception raised in the worker, and never change a sample
or a pixel: overlapped output equals ``decode_audio`` + ``decode_video`` run one after the other, bit for bit.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import NamedTuple

import torch
from ltx_core.model.audio_vae import AudioDecoder, Vocoder
from ltx_core.model.video_vae import TilingConfig, VideoDecoder

from ltx2_edge.stages.decode_audio import decode_audio, decode_audio_on_device
from ltx2_edge.stages.decode_video import decode_video


class AudioResult(NamedTuple):
    """What ``AudioFuture.result()`` returns (unpacks as a 4-tuple)."""

    waveform: torch.Tensor  # [channels, samples], float32, CPU
    sample_rate: int
    seconds: float  # audio decode + vocoder: wall clock on CPU, GPU time between events on CUDA
    hidden_seconds: float  # the part of ``seconds`` that ran while the video decoded


class _Clock:
    """Marks on one timeline: perf_counter seconds on CPU, CUDA events on a device (read after both finish)."""

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"

    def mark(self, stream: torch.cuda.Stream | None = None) -> object:
        if not self.cuda:
            return time.perf_counter()
        event = torch.cuda.Event(enable_timing=True)
        event.record(stream)
        return event

    def between(self, start: object, end: object) -> float:
        """Seconds from ``start`` to ``end`` (negative when ``end`` came first)."""
        if not self.cuda:
            return end - start  # type: ignore[operator]
        end.synchronize()  # type: ignore[attr-defined]  # elapsed_time of an unfinished event raises
        return start.elapsed_time(end) / 1000.0  # type: ignore[attr-defined]


@dataclass
class _Timeline:
    clock: _Clock
    audio: tuple[object, object] | None = None
    video_start: object | None = None
    video_end: object | None = None
    video_stream: torch.cuda.Stream | None = field(default=None)

    def hidden(self) -> float:
        """Seconds of the audio interval inside the video interval (video so far if it has not finished)."""
        if self.audio is None or self.video_start is None:
            return 0.0
        video_end = self.video_end if self.video_end is not None else self.clock.mark(self.video_stream)
        a0, a1 = self.audio
        ref = self.video_start
        start = max(self.clock.between(ref, a0), 0.0)
        end = min(self.clock.between(ref, a1), self.clock.between(ref, video_end))
        return max(0.0, end - start)


class AudioFuture:
    """The audio decode running beside the video decode; ``result()`` waits for it."""

    def __init__(self, future: Future, executor: ThreadPoolExecutor, timeline: _Timeline) -> None:
        self._future, self._executor, self._timeline = future, executor, timeline

    def done(self) -> bool:
        """True once the worker has finished (with a waveform or an exception)."""
        return self._future.done()

    def result(self) -> AudioResult:
        """Wait for the worker; return the waveform and timings, or re-raise the worker's exception unchanged."""
        try:
            waveform, sample_rate, seconds = self._future.result()
        finally:
            self._executor.shutdown(wait=True)  # joins the worker thread: none is left after result()
        return AudioResult(waveform, sample_rate, seconds, round(self._timeline.hidden(), 6))

    def _raise_if_failed(self) -> None:
        if self._future.done() and self._future.exception() is not None:
            raise self._future.exception()  # type: ignore[misc]


def _audio_worker(
    latent: torch.Tensor,
    decoder: AudioDecoder,
    vocoder: Vocoder,
    stream: torch.cuda.Stream | None,
    timeline: _Timeline,
) -> tuple[torch.Tensor, int, float]:
    clock = timeline.clock
    if stream is None:
        start = clock.mark()
        waveform, sample_rate = decode_audio(latent, decoder, vocoder)
        end = clock.mark()
    else:
        # The current stream is per thread: set it here, in the worker, so every audio kernel goes to it.
        with torch.cuda.stream(stream):
            start = clock.mark(stream)
            on_device, sample_rate = decode_audio_on_device(latent, decoder, vocoder)
            # Event after the vocoder: it times the decode, and the host copy below waits on it; without the
            # wait a non-blocking copy could read the waveform before the vocoder wrote it. The device waveform
            # never leaves this stream (only the host copy does), so it needs no record_stream.
            end = clock.mark(stream)
            end.synchronize()  # type: ignore[attr-defined]
            waveform = on_device.cpu()
    timeline.audio = (start, end)
    return waveform, sample_rate, clock.between(start, end)


def decode_overlapped(
    video_latent: torch.Tensor,
    video_decoder: VideoDecoder,
    generator: torch.Generator | None,
    tiling: TilingConfig | None,
    audio_latent: torch.Tensor,
    audio_decoder: AudioDecoder,
    vocoder: Vocoder,
) -> tuple[Iterator[torch.Tensor], AudioFuture]:
    """Start the audio decode now; return (video chunk iterator, audio future).

    The audio latent -> mel -> waveform runs on a worker thread (and, on CUDA, its own stream) while the caller
    pulls uint8 video chunks [f, h, w, 3] (on the CPU) from the iterator, which decodes lazily, tiled when
    ``tiling`` is given. Results equal the sequential ``decode_audio`` then ``decode_video``, bit for bit.

    Errors: an exception in the audio worker is re-raised by ``AudioFuture.result()`` and also by the video
    iterator at its next chunk boundary or its end, whichever comes first, so a failed audio decode never
    goes unnoticed behind a finished video. Stopping early: ``close()`` the iterator (``contextlib.closing``);
    it then waits for the audio worker (short: ~0.02 s for W1 on an H100) and leaves no thread running.
    """
    device = audio_latent.device
    timeline = _Timeline(_Clock(device))
    stream = None
    if device.type == "cuda":
        caller = torch.cuda.current_stream(device)
        stream = torch.cuda.Stream(device)
        # The denoiser wrote the latent (and the loader the weights) on the caller's stream: without this
        # wait the audio kernels could read them before those writes land.
        stream.wait_stream(caller)
        # The latent was allocated on the caller's stream: without this, freeing it there while the vocoder
        # still reads it would let the allocator give its block to the video decoder (silent corruption).
        audio_latent.record_stream(stream)
        timeline.video_stream = caller
    executor = ThreadPoolExecutor(1, thread_name_prefix="ltx2-edge-audio-decode")
    future = executor.submit(_audio_worker, audio_latent, audio_decoder, vocoder, stream, timeline)
    # The only task: after it the worker thread exits by itself, even if nobody calls result() or close().
    executor.shutdown(wait=False)
    audio = AudioFuture(future, executor, timeline)
    return _video_chunks(video_latent, video_decoder, generator, tiling, audio, timeline), audio


def _video_chunks(
    latent: torch.Tensor,
    decoder: VideoDecoder,
    generator: torch.Generator | None,
    tiling: TilingConfig | None,
    audio: AudioFuture,
    timeline: _Timeline,
) -> Iterator[torch.Tensor]:
    try:
        timeline.video_start = timeline.clock.mark(timeline.video_stream)
        for chunk in decode_video(latent, decoder, generator, tiling):
            # A failed audio decode makes the clip useless: stop decoding video at the next chunk.
            audio._raise_if_failed()
            yield chunk.cpu()
        timeline.video_end = timeline.clock.mark(timeline.video_stream)
    finally:
        # Also on close() or on the decoder's exception: no worker thread outlives the iterator. At the end this
        # waits for the audio, so its exception (raised just below) reaches the caller no later than the video.
        audio._executor.shutdown(wait=True)
    audio._raise_if_failed()
