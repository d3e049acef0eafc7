"""How the decode stage runs on loaded weights: the video VAE decoder (tiled as the plan says), the audio decoder
and vocoder beside it, and the MP4 they stream into; plus the serial ``decode_video`` / ``decode_audio`` paths that
equal them bit for bit.

``DecodeRuns`` is a mixin of ``Generator`` on top of ``StageRuns`` (whose ``_module`` / ``_release`` it uses), so
the decode methods keep their signatures on the generator. This module must never decide what to run nor measure
the stage for the report (``Generator.generate`` does), and never writes an MP4 except atomically
(``decode_to_mp4``).
"""

from __future__ import annotations

import time
from collections.abc import Generator as Gen
from collections.abc import Iterator, Mapping
from pathlib import Path

import torch
from ltx_core.model.video_vae import TilingConfig

from ltx2_edge.memory import runtime
from ltx2_edge.models import loaders
from ltx2_edge.mp4.mux import MuxStats
from ltx2_edge.plan.plan_types import Plan
from ltx2_edge.request import GenerationRequest
from ltx2_edge.run_types import Latents
from ltx2_edge.stage_runs import StageRuns
from ltx2_edge.stages.decode import AudioFuture, decode_overlapped
from ltx2_edge.stages.decode_audio import decode_audio
from ltx2_edge.stages.decode_stage import decode_to_mp4
from ltx2_edge.stages.decode_video import decode_video


class DecodeRuns(StageRuns):
    """The decoders of ``Generator``, loaded for each call only (unless kept resident)."""

    def _tiling(self, plan: Plan | None) -> TilingConfig | None:
        return runtime.tiling_config(plan.stage("decode").tiles) if plan is not None else None

    def decode_audio(self, latents: Latents) -> tuple[torch.Tensor, int]:
        """Final audio latent -> waveform [channels, samples] (CPU float32) and its sample rate (serial path)."""
        path, dev, dt = self.checkpoint.path, self.device, self.dtype
        decoder = self._module("audio_decoder", lambda: loaders.load_audio_decoder(path, dev, dt))
        vocoder = self._module("vocoder", lambda: loaders.load_vocoder(path, dev, dt))
        out = decode_audio(latents.audio, decoder, vocoder)
        del decoder, vocoder
        self._release()
        return out

    def decode_video(self, latents: Latents, plan: Plan | None = None) -> Iterator[torch.Tensor]:
        """Final video latent -> uint8 frame chunks [f, h, w, 3] on the CPU (tiled as the plan says; serial path)."""
        path, dev, dt = self.checkpoint.path, self.device, self.dtype
        decoder = self._module("video_decoder", lambda: loaders.load_video_decoder(path, dev, dt))
        for chunk in decode_video(latents.video, decoder, latents.generator, self._tiling(plan)):
            yield chunk.cpu()
        del decoder
        self._release()

    def decode(self, latents: Latents, plan: Plan | None = None) -> tuple[Gen[torch.Tensor, None, None], AudioFuture]:
        """Both decoders, loaded for this call only: the audio decode starts now, beside the lazy video decode.

        Returns uint8 video chunks [f, h, w, 3] on the CPU (tiled as the plan says) and the audio future; they
        equal ``decode_video`` and ``decode_audio``, bit for bit. The decoders are released when the chunks run
        out or the iterator is closed: close it when stopping early (``contextlib.closing``).
        """
        path, dev, dt = self.checkpoint.path, self.device, self.dtype
        audio_decoder = self._module("audio_decoder", lambda: loaders.load_audio_decoder(path, dev, dt))
        vocoder = self._module("vocoder", lambda: loaders.load_vocoder(path, dev, dt))
        video_decoder = self._module("video_decoder", lambda: loaders.load_video_decoder(path, dev, dt))
        chunks, audio = decode_overlapped(latents.video, video_decoder, latents.generator, self._tiling(plan),
                                          latents.audio, audio_decoder, vocoder)  # fmt: skip
        return self._released_after(chunks), audio

    def _released_after(self, chunks: Gen[torch.Tensor, None, None]) -> Gen[torch.Tensor, None, None]:
        try:
            yield from chunks
        finally:
            chunks.close()  # joins the audio worker; after it nothing holds the decoders (unless kept resident)
            self._release()

    def decode_into(
        self,
        latents: Latents,
        request: GenerationRequest,
        output_path: Path,
        metadata: Mapping[str, str],
        *,
        overwrite: bool = False,
        plan: Plan | None = None,
        details: dict | None = None,
    ) -> MuxStats:
        """The decode stage: video and audio decoded at once and encoded on a writer thread into ``output_path``.

        Video chunks stream into H.264 as they decode; the waveform joins the AAC stream when its decode ends.
        The MP4 is written atomically: a failure in either decode or in the writer leaves no file and no
        temporary. ``details`` receives the load, video, audio, hidden-audio and encode seconds, the tiles and
        the audio format, with what the writer wrote.
        """
        details = {} if details is None else details
        started = time.perf_counter()
        chunks, audio = self.decode(latents, plan)
        details["load_seconds"] = round(time.perf_counter() - started, 4)
        tiles = plan.stage("decode").tiles if plan is not None else None
        return decode_to_mp4(chunks, audio, latents.video, self._tiling(plan), tiles, request.frame_rate,
                             request.audio_channels, output_path, metadata, overwrite,
                             lambda line: self.progress.stage("decode", line), details)  # fmt: skip
