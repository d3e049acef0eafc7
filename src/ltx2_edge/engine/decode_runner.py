"""How the decode stage runs on loaded weights: the video VAE decoder (tiled as the plan says), the audio decoder and
vocoder beside it, and the MP4 they stream into; plus the serial ``decode_video`` / ``decode_audio`` paths that
equal them bit for bit.

Every decoder comes from the ``ModelCache``. This module never decides what to run, never measures the stage for
the report (``stage_scope`` does), and never writes an MP4 except atomically (``decode_to_mp4``).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Generator as Gen
from collections.abc import Iterator, Mapping
from pathlib import Path

import torch
from ltx_core.model.video_vae import TilingConfig

from ltx2_edge.engine.setup import EngineSetup
from ltx2_edge.memory import runtime
from ltx2_edge.models import loaders
from ltx2_edge.models.model_cache import ModelCache
from ltx2_edge.mp4.mux import MuxStats
from ltx2_edge.plan.plan_types import Plan
from ltx2_edge.progress import Progress
from ltx2_edge.run_types import Latents
from ltx2_edge.stages.decode import AudioFuture, decode_overlapped
from ltx2_edge.stages.decode_audio import decode_audio
from ltx2_edge.stages.decode_stage import decode_to_mp4
from ltx2_edge.stages.decode_video import decode_video

AUDIO_PARTS = ("audio_decoder", "vocoder")


class DecodeRunner:
    """The decoders, from ``cache``; the caller's stage scope (or ``release``) lets them go."""

    def __init__(self, setup: EngineSetup, cache: ModelCache, progress: Progress) -> None:
        self.setup, self.cache, self.progress = setup, cache, progress

    def _load(self, part: str) -> torch.nn.Module:
        loader = {"video_decoder": loaders.load_video_decoder, "audio_decoder": loaders.load_audio_decoder,
                  "vocoder": loaders.load_vocoder}[part]  # fmt: skip
        s = self.setup
        return self.cache.get(part, lambda: loader(s.checkpoint.path, s.device, s.dtype))

    def release(self, keep: tuple[str, ...] = ()) -> None:
        """Drop the decoders (those not in ``keep`` nor held by the cache's owner)."""
        for part in ("video_decoder", *AUDIO_PARTS):
            self.cache.done_with(part, keep)

    def decode_audio(self, latents: Latents) -> tuple[torch.Tensor, int]:
        """Final audio latent -> waveform [channels, samples] (CPU float32) and its sample rate (serial path)."""
        out = decode_audio(latents.audio, self._load("audio_decoder"), self._load("vocoder"))
        self.release()
        return out

    def decode_video(self, latents: Latents, plan: Plan | None = None) -> Iterator[torch.Tensor]:
        """Final video latent -> uint8 frame chunks [f, h, w, 3] on the CPU (tiled as the plan says; serial path)."""
        decoder = self._load("video_decoder")
        for chunk in decode_video(latents.video, decoder, latents.generator, tiling(plan)):
            yield chunk.cpu()
        del decoder
        self.release()

    def decode(self, latents: Latents, plan: Plan | None = None) -> tuple[Gen[torch.Tensor, None, None], AudioFuture]:
        """Both decoders: the audio decode starts now, beside the lazy video decode.

        Returns uint8 video chunks [f, h, w, 3] on the CPU (tiled as the plan says) and the audio future; they equal
        ``decode_video`` and ``decode_audio``, bit for bit. Close the chunks when stopping early
        (``contextlib.closing``): that joins the audio worker, after which nothing but the cache holds the decoders.
        """
        audio_decoder, vocoder = self._load("audio_decoder"), self._load("vocoder")
        video_decoder = self._load("video_decoder")
        return decode_overlapped(latents.video, video_decoder, latents.generator, tiling(plan), latents.audio,
                                 audio_decoder, vocoder)  # fmt: skip

    def decode_into(
        self,
        latents: Latents,
        plan: Plan,
        frame_rate: float,
        audio_channels: int,
        output_path: Path,
        metadata: Mapping[str, str],
        overwrite: bool = False,
        keep: tuple[str, ...] = (),
    ) -> tuple[MuxStats, dict]:
        """The decode stage: video and audio decoded at once and encoded on a writer thread into ``output_path``.

        Video chunks stream into H.264 as they decode; the waveform joins the AAC stream when its decode ends. The
        MP4 is written atomically: a failure in either decode or in the writer leaves no file and no temporary.
        Returns what the writer wrote and the load, video, audio, hidden-audio and encode seconds, the tiles and
        the audio format. The decoders are let go when it ends, but those in ``keep`` (or held by the cache's owner),
        whether it succeeds or fails."""
        details: dict = {}
        started = time.perf_counter()
        try:
            chunks, audio = self.decode(latents, plan)
            details["load_seconds"] = round(time.perf_counter() - started, 4)
            stats = decode_to_mp4(chunks, audio, latents.video, tiling(plan), plan.stage("decode").tiles, frame_rate,
                                  audio_channels, output_path, metadata, overwrite,
                                  lambda line: self.progress.stage("decode", line), details,
                                  video_encoder=self.setup.video_encoder)  # fmt: skip
            del chunks, audio
        finally:
            self.release(keep)
        return stats, details


def decoded_frames(
    runner: DecodeRunner, latents: Latents, plan: Plan, keep: tuple[str, ...] = ()
) -> tuple[list[torch.Tensor], torch.Tensor, int, dict]:
    """The decode stage's device part alone: every video chunk (uint8 on the CPU) and the waveform, with the
    decoders let go after (but ``keep``). For a caller that writes the MP4 later, on another thread, while the
    device does other work (the service's next clip); the plan's decode stage already counts the decoded frames
    as host memory it holds."""
    details: dict = {}
    started = time.perf_counter()
    try:
        chunks, audio = runner.decode(latents, plan)
        details["load_seconds"] = round(time.perf_counter() - started, 4)
        started = time.perf_counter()
        with contextlib.closing(chunks):
            frames = list(chunks)
        details["video_decode_seconds"] = round(time.perf_counter() - started, 4)
        result = audio.result()
        del chunks, audio
    finally:
        runner.release(keep)
    wave = result.waveform
    details.update(audio_decode_seconds=round(result.seconds, 4), audio_hidden_seconds=round(result.hidden_seconds, 4),
                   video_chunks=len(frames), sample_rate=result.sample_rate, source_channels=int(wave.shape[0]),
                   source_samples=int(wave.shape[1]))  # fmt: skip
    return frames, result.waveform, result.sample_rate, details


def tiling(plan: Plan | None) -> TilingConfig | None:
    """ltx-core's tiling for the plan's decode tiles (None: untiled, or no plan)."""
    return runtime.tiling_config(plan.stage("decode").tiles) if plan is not None else None
