"""Decode both modalities at once: audio decoder + vocoder run while the video VAE decodes, chunk by chunk.

``decode_overlapped`` returns at once with a lazy iterator of video chunks and an ``AudioFuture``. On CUDA the
audio kernels are queued from the caller's thread on their own ``torch.cuda.Stream`` right after the first video
chunk's kernels (so the CPU time of launching them falls where the caller would otherwise wait for that chunk),
and run on the GPU beside the video decoder's; on CPU a worker thread (one ``ThreadPoolExecutor`` worker) starts
the audio at once and runs it while the caller decodes video.
``ChunkMeter`` times the video chunks as a consumer (the MP4 writer) pulls them and reports progress.

Synchronisation rules (CUDA):
- latent ready -> audio: an event recorded on the caller's stream when ``decode_overlapped`` is called; the audio
  stream waits on it (not on the caller's stream at launch time, which by then holds the video's kernels).
- audio done -> waveform use: an event is recorded after the vocoder; the host copy waits on it.
- memory: the audio latent is marked as used by the audio stream (``record_stream``), so freeing it on the
  caller's side cannot hand its block to the video decoder while the vocoder still reads it.

This module must never leave a worker thread running after the video iterator is closed or exhausted or after
``AudioFuture.result()`` returns, never swallow an exception raised in the worker, and never change a sample
or a pixel: overlapped output equals ``decode_audio`` + ``decode_video`` run one after the other, bit for bit.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Generator, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import NamedTuple

import torch
from ltx_core.model.audio_vae import AudioDecoder, Vocoder
from ltx_core.model.video_vae import TilingConfig, VideoDecoder

from ltx2_edge.stages.decode_audio import decode_audio, decode_audio_on_device
from ltx2_edge.stages.decode_video import decode_video


class AudioResult(NamedTuple):
    """What ``AudioFuture.result()`` returns (unpacks as a 5-tuple)."""

    waveform: torch.Tensor  # [channels, samples], float32, CPU
    sample_rate: int
    seconds: float  # audio decode + vocoder: wall clock on CPU, GPU time between events on CUDA
    hidden_seconds: float  # the part of ``seconds`` that ran while the video decoded
    after_video_seconds: float  # how long the audio ran on after the video decode ended (0 if it had not ended)


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
        # elapsed_time raises unless both events have completed; they may sit on different streams.
        start.synchronize()  # type: ignore[attr-defined]
        end.synchronize()  # type: ignore[attr-defined]
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

    def after_video(self) -> float:
        """Seconds from the end of the video decode to the end of the audio decode (0 when the audio ended first
        or the video has not ended): what a consumer of both waits for the audio."""
        if self.audio is None or self.video_end is None:
            return 0.0
        return max(0.0, self.clock.between(self.video_end, self.audio[1]))


class _LaunchedAudio:
    """The audio decode's kernels, queued on their own CUDA stream at ``launch()``; the host copy waits for them.

    Shaped like the ``Future`` a worker thread returns (``done``, ``result``, ``exception``) so ``AudioFuture``
    treats both alike. ``result()`` launches first if nothing has (a caller that wants the audio before any video).
    """

    def __init__(
        self, latent: torch.Tensor, decoder: AudioDecoder, vocoder: Vocoder, ready: torch.cuda.Event,
        stream: torch.cuda.Stream, timeline: _Timeline,
    ) -> None:  # fmt: skip
        self._inputs: tuple | None = (latent, decoder, vocoder)
        self._ready, self._stream, self._timeline = ready, stream, timeline
        self._on_device: torch.Tensor | None = None
        self._sample_rate = 0

    def launch(self) -> None:
        """Queue the audio decode on its stream (once); returns as soon as the kernels are queued."""
        if self._inputs is None:
            return
        latent, decoder, vocoder = self._inputs
        self._inputs = None
        self._stream.wait_event(self._ready)
        with torch.cuda.stream(self._stream):
            start = self._timeline.clock.mark(self._stream)
            self._on_device, self._sample_rate = decode_audio_on_device(latent, decoder, vocoder)
            self._timeline.audio = (start, self._timeline.clock.mark(self._stream))

    def done(self) -> bool:
        return self._timeline.audio is not None and bool(self._timeline.audio[1].query())  # type: ignore[union-attr]

    def exception(self) -> BaseException | None:
        return None  # a launch error is raised by launch(), in the caller's thread

    def result(self) -> tuple[torch.Tensor, int, float]:
        self.launch()
        start, end = self._timeline.audio  # type: ignore[misc]
        # Without the wait the copy could read the waveform before the vocoder's last kernel wrote it. The copy
        # runs on the audio stream, where the waveform was made, so it needs no record_stream.
        end.synchronize()  # type: ignore[attr-defined]
        with torch.cuda.stream(self._stream):
            waveform = self._on_device.cpu()  # type: ignore[union-attr]
        return waveform, self._sample_rate, self._timeline.clock.between(start, end)


class AudioFuture:
    """The audio decode running beside the video decode; ``result()`` waits for it."""

    def __init__(
        self, future: Future | _LaunchedAudio, executor: ThreadPoolExecutor | None, timeline: _Timeline,
        sample_rate: int,
    ) -> None:  # fmt: skip
        self._future, self._executor, self._timeline = future, executor, timeline
        # Known before the decode ends (the vocoder's output rate, which ltx-core's decode_audio reports), so an
        # MP4 writer can open its AAC stream while the waveform is still being made.
        self.sample_rate = sample_rate

    def done(self) -> bool:
        """True once the worker has finished (with a waveform or an exception)."""
        return self._future.done()

    def result(self) -> AudioResult:
        """Wait for the worker; return the waveform and timings, or re-raise the worker's exception unchanged."""
        try:
            waveform, sample_rate, seconds = self._future.result()
        finally:
            self._shutdown()
        hidden, after = round(self._timeline.hidden(), 6), round(self._timeline.after_video(), 6)
        return AudioResult(waveform, sample_rate, seconds, hidden, after)

    def _launch(self) -> None:
        if isinstance(self._future, _LaunchedAudio):
            self._future.launch()

    def _shutdown(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=True)  # joins the worker thread: none is left after result()

    def _raise_if_failed(self) -> None:
        if self._future.done() and self._future.exception() is not None:
            raise self._future.exception()  # type: ignore[misc]


def _audio_worker(
    latent: torch.Tensor, decoder: AudioDecoder, vocoder: Vocoder, timeline: _Timeline
) -> tuple[torch.Tensor, int, float]:
    clock = timeline.clock
    start = clock.mark()
    waveform, sample_rate = decode_audio(latent, decoder, vocoder)
    end = clock.mark()
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
) -> tuple[Generator[torch.Tensor, None, None], AudioFuture]:
    """Start the audio decode now; return (video chunk iterator, audio future).

    The audio latent -> mel -> waveform runs on its own CUDA stream (on CPU: a worker thread) while the caller
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
        # The denoiser wrote the latent (and the loader the weights) on the caller's stream: the audio stream
        # waits for this point, and only this point, so it never waits behind the video decoder's kernels.
        ready = torch.cuda.Event()
        ready.record(caller)
        # The latent was allocated on the caller's stream: without this, freeing it there while the vocoder
        # still reads it would let the allocator give its block to the video decoder (silent corruption).
        audio_latent.record_stream(stream)
        timeline.video_stream = caller
        # On CUDA the overlap comes from the streams, not from a thread: a worker thread launching the audio
        # (measured on the H100 for W1) fought the video's launches for the GIL and stretched a 0.014 s audio
        # decode to 0.39 s. Queued before the video instead, the audio's ~0.015 s of launches delayed the video's
        # start by as much (W1: 1.15x the video alone); queued after the first chunk's kernels, they overlap it.
        launched = _LaunchedAudio(audio_latent, audio_decoder, vocoder, ready, stream, timeline)
        audio = AudioFuture(launched, None, timeline, int(vocoder.output_sampling_rate))
        return _video_chunks(video_latent, video_decoder, generator, tiling, audio, timeline), audio
    executor = ThreadPoolExecutor(1, thread_name_prefix="ltx2-edge-audio-decode")
    future = executor.submit(_audio_worker, audio_latent, audio_decoder, vocoder, timeline)
    # The only task: after it the worker thread exits by itself, even if nobody calls result() or close().
    executor.shutdown(wait=False)
    audio = AudioFuture(future, executor, timeline, int(vocoder.output_sampling_rate))
    return _video_chunks(video_latent, video_decoder, generator, tiling, audio, timeline), audio


def _video_chunks(
    latent: torch.Tensor,
    decoder: VideoDecoder,
    generator: torch.Generator | None,
    tiling: TilingConfig | None,
    audio: AudioFuture,
    timeline: _Timeline,
) -> Generator[torch.Tensor, None, None]:
    try:
        timeline.video_start = timeline.clock.mark(timeline.video_stream)
        for chunk in decode_video(latent, decoder, generator, tiling):
            audio._launch()  # after the first chunk's kernels are queued, before waiting for them (CUDA)
            # A failed audio decode makes the clip useless: stop decoding video at the next chunk.
            audio._raise_if_failed()
            yield chunk.cpu()
        timeline.video_end = timeline.clock.mark(timeline.video_stream)
        audio._launch()  # a video with no chunk at all
    finally:
        # Also on close() or on the decoder's exception: no worker thread outlives the iterator. At the end this
        # waits for the audio, so its exception (raised just below) reaches the caller no later than the video.
        audio._shutdown()
    audio._raise_if_failed()


class ChunkMeter:
    """Iterates video chunks, timing each one's decode (the pull, not what the consumer does between pulls).

    ``expected`` holds the frames of each chunk to come (``decode_video.video_chunk_frames``); after every
    chunk ``on_line`` gets a progress line with chunks and frames done and an ETA from the decode rate so far.
    ``seconds``: decode time of the chunks pulled so far (the last pull, which finds no chunk and where
    ``decode_overlapped``'s iterator waits for the audio, is not counted); ``finished_at``:
    ``time.perf_counter()`` when the iterator ran out (None before).
    """

    def __init__(self, chunks: Iterator[torch.Tensor], expected: list[int], on_line: Callable[[str], None]) -> None:
        self._chunks, self._on_line = chunks, on_line
        self.expected = expected
        self.seconds = 0.0
        self.chunks = self.frames = 0
        self.finished_at: float | None = None

    def __iter__(self) -> Iterator[torch.Tensor]:
        total = sum(self.expected)
        while True:
            start = time.perf_counter()
            chunk = next(self._chunks, None)
            now = time.perf_counter()
            if chunk is None:
                self.finished_at = now
                return
            self.seconds += now - start
            self.chunks += 1
            self.frames += chunk.shape[0]
            eta = self.seconds / self.frames * (total - self.frames)
            self._on_line(f"video chunk {self.chunks}/{len(self.expected)}: {self.frames}/{total} frames, "
                          f"{now - start:.2f} s, ETA {eta:.1f} s")  # fmt: skip
            yield chunk
