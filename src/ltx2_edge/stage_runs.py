"""How the stages before decoding run on loaded weights: text encode, image encode, upsample and denoise (the
transformer loaded with its LoRAs fused, resident or streaming K blocks), and the load/release helpers every stage
run shares. Each call loads what it needs (or takes it from the kept-resident set), runs, and releases it so the
next stage finds the memory back.

``StageRuns`` is a mixin of ``Generator`` rather than a set of free functions: the methods are public API on the
generator (``gen.denoise(...)``), they share its state (files, device, dtype, quantization policy, the
kept-resident modules) and call its plan methods (``guidance``, ``passes``, ``loras``, ``accel``, ``_shape_key``,
``_require_upsampler``), so they move as they are, keep every signature, and tests still patch
``Generator.denoise``. This module must never decide what to run (the request, the plan and ``Generator`` do) nor
measure a stage for the report (``measured_stages`` does).
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable, Sequence
from functools import partial
from typing import TypeVar

import torch
from ltx_core.conditioning import ConditioningItem

from ltx2_edge.accel import for_run
from ltx2_edge.accel.compile import note_compiled
from ltx2_edge.accel.engine import AccelSettings
from ltx2_edge.checkpoint.validate import CheckpointInfo
from ltx2_edge.models import loaders
from ltx2_edge.models.lora import LoraFile, LoraFuser
from ltx2_edge.models.streamed_transformer import load_streamed_transformer
from ltx2_edge.plan.plan_types import Plan, StagePlan
from ltx2_edge.progress import Progress
from ltx2_edge.quant.policy import QuantPolicy
from ltx2_edge.request import GenerationRequest
from ltx2_edge.run_types import DenoisePass, Latents
from ltx2_edge.stages import conditioning
from ltx2_edge.stages.denoise import Contexts, denoise
from ltx2_edge.stages.latents import LatentSetup, final_latents, noised_latents, pixel_shape
from ltx2_edge.stages.schedules import schedule_sigmas
from ltx2_edge.stages.text_encode import TextEncoder
from ltx2_edge.stages.upsample import upsample_latent

T = TypeVar("T")


class StageRuns:
    """The stages of ``Generator`` up to the final latents, each on weights loaded for its call only (unless kept
    resident)."""

    # Set by ``Generator.__init__``.
    checkpoint: CheckpointInfo
    device: torch.device
    dtype: torch.dtype
    policy: QuantPolicy
    progress: Progress
    keep_resident: bool
    _text: TextEncoder
    _resident: dict[str, torch.nn.Module]
    _resident_loras: tuple

    def _module(self, name: str, load: Callable[[], torch.nn.Module]) -> torch.nn.Module:
        if name in self._resident:
            return self._resident[name]
        module = load()
        if self.keep_resident:
            self._resident[name] = module
        return module

    def _release(self) -> None:
        """Free what a stage held (when not kept resident) so the next stage finds the memory back."""
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def encode_text(self, request: GenerationRequest, details: dict | None = None) -> Contexts:
        """Prompt and negative prompt -> video and audio contexts. ``details`` receives per-part seconds.

        Without a negative pass (distilled-one-stage) only the prompt is encoded, and its contexts fill the
        negative slots, which no pass reads.
        """

        def part_done(part: str, seconds: float) -> None:
            if details is not None:
                details[f"{part}_seconds"] = round(seconds, 4)

        negative = self.guidance(request).uses_negative_prompt
        prompts = [request.prompt, request.negative_prompt] if negative else [request.prompt]
        outputs = self._text.encode(prompts, progress=part_done)
        if details is not None:
            details["prompts_encoded"] = len(prompts)
        pos, neg = outputs[0], outputs[-1]
        return Contexts(video=pos.video_encoding, audio=pos.audio_encoding, video_negative=neg.video_encoding,
                        audio_negative=neg.audio_encoding)  # fmt: skip

    def _timed(self, details: dict, key: str, work: Callable[[], T]) -> T:
        """``work()``, finished on the device, its seconds in ``details[key]``."""
        started = time.perf_counter()
        out = work()
        self._sync()
        details[key] = round(time.perf_counter() - started, 4)
        return out

    def _video_encoder(self) -> torch.nn.Module:
        path, dev, dt = self.checkpoint.path, self.device, self.dtype
        return self._module("video_encoder", lambda: loaders.load_video_encoder(path, dev, dt))

    def encode_images(self, request: GenerationRequest, details: dict | None = None) -> list[ConditioningItem]:
        """The encode_image stage: the video VAE encoder, loaded for this call only (unless kept resident), turns
        each of ``request.images`` into its ltx-core conditioning item at the output size, then is released.
        ``details`` receives the load and encode seconds."""
        details = {} if details is None else details
        encoder = self._timed(details, "load_seconds", self._video_encoder)
        encode = partial(conditioning.encode_images, request.images, encoder, request.width, request.height)
        items = self._timed(details, "encode_seconds", encode)
        del encoder, encode
        self._release()
        return items

    def upsample(
        self, request: GenerationRequest, latents: Latents, details: dict | None = None
    ) -> tuple[Latents, list[ConditioningItem]]:
        """Between the two stages: stage 1's video latent x2 through the latent upsampler (normalised with the
        video VAE encoder's statistics), and ``request.images`` re-encoded at the output size by the same encoder.
        Both models exist for this call only (unless kept resident). Returns stage 2's start latents (the audio
        latent and the generator carried over) and its conditioning items."""
        details = {} if details is None else details
        info = self._require_upsampler(request)
        dev, dt = self.device, self.dtype

        def load() -> tuple[torch.nn.Module, torch.nn.Module]:
            return self._video_encoder(), self._module(
                "spatial_upsampler", lambda: loaders.load_spatial_upsampler(info.path, dev, dt)
            )

        encoder, upsampler = self._timed(details, "load_seconds", load)
        video = self._timed(details, "upsample_seconds", partial(upsample_latent, latents.video, encoder, upsampler))
        del upsampler
        items: list[ConditioningItem] = []
        if request.images:
            encode = partial(conditioning.encode_images, request.images, encoder, request.width, request.height)
            items = self._timed(details, "encode_seconds", encode)
            del encode
        del encoder
        self._release()
        details.update(latent_in=list(latents.video.shape), latent_out=list(video.shape))
        return Latents(video=video, audio=latents.audio, generator=latents.generator), items

    def _transformer(
        self, stage: StagePlan | None, details: dict, loras: Sequence[LoraFile] = ()
    ) -> tuple[torch.nn.Module, object | None]:
        # The fuser reads each affected layer's A/B as the layer loads (no LoRA state outlives the load).
        with LoraFuser([f for f in loras if f.spec.strength != 0.0]) as fuser:
            fuse = fuser if fuser.targets else None
            if fuse is not None:
                details["loras"] = [f.describe() for f in fuser.files]
            if stage is None or not stage.streamed_units:
                details["residency"] = "all 48 blocks resident" if stage is not None else "resident (no plan)"
                key = tuple((str(f.spec.path), f.spec.strength) for f in fuser.files)
                if key != self._resident_loras:  # a kept transformer holds other LoRAs' weights: load afresh
                    self._resident.pop("transformer", None)
                    self._resident_loras = key
                load = lambda: loaders.load_transformer(self.checkpoint.path, self.device, self.dtype, self.policy,  # noqa: E731
                                                        fuse)  # fmt: skip
                return self._module("transformer", load), None
            details["residency"] = (f"{stage.resident_units} blocks resident, {stage.streamed_units} streamed from "
                                    f"{stage.source_tier} through {stage.n_slots} slots")  # fmt: skip
            return load_streamed_transformer(self.checkpoint.path, self.device, self.dtype, self.policy,
                                             stage.resident_units, stage.source_tier, stage.n_slots - 1,
                                             fuse)  # fmt: skip

    def denoise(
        self,
        request: GenerationRequest,
        contexts: Contexts,
        details: dict | None = None,
        plan: Plan | None = None,
        conditionings: Sequence[ConditioningItem] = (),
        run: DenoisePass | None = None,
        start: Latents | None = None,
        hold: bool = False,
    ) -> Latents:
        """Noise from the seed (the video state conditioned on ``conditionings`` first, from ``encode_images``),
        then every step of the schedule; returns the final latents.

        ``run``: which of ``passes(request)`` (default: the first). Stage 2 of a two-stage request starts from
        ``start`` (the upsampled video latent, stage 1's audio latent and stage 1's random generator, which it
        continues, as the official pipelines do) noised to its first sigma. ``details`` receives the weight-load
        seconds, each step's seconds and, when blocks stream, the bytes moved and the time compute waited on copies
        (loading is not denoising). ``hold``: keep the (fully resident) transformer after this call, for the next
        ``denoise`` with the same LoRAs to reuse (the plan's ``keeps_transformer``); the next call without
        ``hold`` releases it, unless the generator keeps everything resident anyway.
        """
        details = {} if details is None else details
        run = run if run is not None else self.passes(request)[0]
        if run.from_upsampled != (start is not None):
            raise ValueError(f"{run.stage} {'needs' if run.from_upsampled else 'takes no'} start latents")
        sigmas = schedule_sigmas(run.schedule, self.device, run.steps)
        shape = pixel_shape(run.width, run.height, run.num_frames, run.frame_rate)
        if start is None:
            generator = torch.Generator(device=self.device).manual_seed(request.seed)
            setup = noised_latents(shape, generator, self.device, self.dtype, conditionings=conditionings)
        else:
            generator = start.generator
            setup = noised_latents(shape, generator, self.device, self.dtype, conditionings, sigmas[0], start.video,
                                   start.audio)  # fmt: skip
        started = time.perf_counter()
        transformer, streamer = self._transformer(plan.stage(run.stage) if plan is not None else None, details,
                                                  self.loras(run, plan))  # fmt: skip
        self._sync()
        details["load_seconds"] = round(time.perf_counter() - started, 4)
        quant_report = getattr(transformer, "quant_report", None)
        if quant_report is not None:
            details["quantization"] = quant_report.lines()
        step_seconds: list[float] = details.setdefault("step_seconds", [])
        started = time.perf_counter()

        def on_step(i: int, total: int, seconds: float) -> None:
            step_seconds.append(round(seconds, 4))
            self.progress.step(i, total, seconds, time.perf_counter() - started, run.stage)

        sync = torch.cuda.synchronize if self.device.type == "cuda" else None
        settings = self._accel_settings(run, plan, setup, details)
        accel_stats: dict = {}
        try:
            video, audio = denoise(transformer, setup.video_state, setup.audio_state, sigmas, contexts, run.guidance,
                                   on_step=on_step, synchronize=sync, accel=settings,
                                   accel_stats=accel_stats)  # fmt: skip
            if accel_stats:
                details["accel_stats"] = accel_stats
                for_run.compile_row(details, accel_stats, step_seconds)
                if settings is not None and settings.compile:
                    note_compiled(self._shape_key(run))
        finally:
            if streamer is not None:
                stats = streamer.stats()
                details.update(bytes_streamed=stats.bytes_streamed, block_copies=stats.copies, slots=stats.slots,
                               slot_bytes=stats.slot_bytes, copy_wait_seconds=round(stats.wait_s, 4),
                               pinned_host_bytes=stats.source_pinned_bytes)  # fmt: skip
                streamer.close()
        details["steps_seconds"] = round(sum(step_seconds), 4)
        details["seconds_per_step"] = round(sum(step_seconds) / len(step_seconds), 4)
        if hold and streamer is None:
            self._resident["transformer"] = transformer
            details["held_for_next_stage"] = True
        elif not self.keep_resident:
            self._resident.pop("transformer", None)  # one held for this call has served
        del transformer, streamer
        self._release()
        v, a = final_latents(setup, video, audio)
        return Latents(video=v, audio=a, generator=generator)

    def _accel_settings(
        self, run: DenoisePass, plan: Plan | None, setup: LatentSetup, details: dict
    ) -> AccelSettings | None:
        """The plan's accelerations plus the SDPA backend measured now, on this device, at this run's shapes."""
        if plan is None or run.guidance.mode != "batched":
            return None
        choice = self.accel(run, plan)
        return for_run.measured_settings(choice, self.checkpoint.config, run.guidance.batch,
                                         setup.video_state.latent.shape[1], setup.audio_state.latent.shape[1],
                                         self.device, self.dtype, details)  # fmt: skip
