"""How the stages before decoding run on loaded weights: text encode, image encode, upsample and denoise.

``StageRunner`` takes what the ``RunPlan`` decided (a pass plan, the stage's streaming) and the ``ModelCache`` every
module comes from; each method loads what it needs through the cache, runs, and returns its result with the
details the report shows. It never decides what to run, never measures a stage for the report (``stage_scope``
does) and never releases weights itself: when a stage ends, the cache drops what the plan does not keep.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import TypeVar

import torch
from ltx_core.conditioning import ConditioningItem

from ltx2_edge.accel import for_run
from ltx2_edge.accel.compile_choice import note_compiled
from ltx2_edge.accel.engine import AccelSettings, EngineSlot
from ltx2_edge.engine.run_plan import PassPlan, RunPlan, require_upsampler
from ltx2_edge.engine.setup import EngineSetup
from ltx2_edge.engine.streamed_hold import StreamedHold, stats_since
from ltx2_edge.models import loaders
from ltx2_edge.models.lora import LoraFile, LoraFuser
from ltx2_edge.models.model_cache import ModelCache
from ltx2_edge.models.streamed_transformer import load_streamed_transformer
from ltx2_edge.plan.plan_types import StagePlan
from ltx2_edge.progress import Progress
from ltx2_edge.run_types import Latents
from ltx2_edge.stages import conditioning
from ltx2_edge.stages.denoise import Contexts, PassSplit, denoise
from ltx2_edge.stages.latents import LatentSetup, final_latents, noised_latents, pixel_shape
from ltx2_edge.stages.schedules import schedule_sigmas
from ltx2_edge.stages.text_encode import HiddenStates, TextEncoder
from ltx2_edge.stages.upsample import upsample_latent

T = TypeVar("T")
Details = dict


class StageRunner:
    """The stages up to the final latents, on weights from ``cache``."""

    def __init__(self, setup: EngineSetup, cache: ModelCache, text: TextEncoder, progress: Progress) -> None:
        self.setup, self.cache, self.text, self.progress = setup, cache, text, progress
        self.device, self.dtype = setup.device, setup.dtype
        # Set by a CFG-parallel rank (``parallel.worker``): each denoise runs this process's share of the passes.
        self.pass_split: PassSplit | None = None
        # Set by a batch that holds the transformer and its step graph (``phased``): the denoises of the batch
        # then replay one CUDA graph instead of capturing one each.
        self.step_slot: EngineSlot | None = None
        # Set by a batch whose clips all stream the transformer alike (``phased``): the streamed transformer, its
        # slots and pinned copies are loaded once for the batch instead of once per clip.
        self.streamed_hold: StreamedHold | None = None

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def timed(self, details: Details, key: str, work: Callable[[], T]) -> T:
        """``work()``, finished on the device, its seconds in ``details[key]``."""
        started = time.perf_counter()
        out = work()
        self.sync()
        details[key] = round(time.perf_counter() - started, 4)
        return out

    # ---- text ----
    def encode_text(self, plan: RunPlan) -> tuple[Contexts, Details]:
        """Prompt and negative prompt -> video and audio contexts, with per-part seconds and streaming figures.

        Without a negative pass (distilled-one-stage) only the prompt is encoded, and its contexts fill the negative
        slots, which no pass reads. Gemma and the connectors stay loaded after it only when the plan keeps them or
        the cache's owner holds them (the service's text phase, over many requests)."""
        hidden, details = self.gemma_states(plan)
        contexts, connected = self.connect(plan, hidden)
        return contexts, details | connected

    def gemma_states(self, plan: RunPlan) -> tuple[HiddenStates, Details]:
        """The text stage's Gemma part alone: the prompts' hidden states on the device (``connect`` finishes)."""
        details: Details = {}
        request, text = plan.request, plan.memory.stage("text_encode")
        self.text.layer_streaming = (
            (text.resident_units, text.source_tier, text.n_slots - 1) if text.streamed_units else None
        )
        prompts = [request.prompt, request.negative_prompt] if plan.guidance.uses_negative_prompt else [request.prompt]
        keep = tuple(plan.keep("text_encode") & {"gemma", "embeddings"})
        hidden = self.text.hidden_states(prompts, progress=_part_seconds(details), keep=keep)
        details.update(prompts_encoded=len(prompts), prompt_tokens=self.text.count_tokens(request.prompt))
        stats = self.text.last_stream_stats if text.streamed_units else None
        if stats is not None:
            details.update(bytes_streamed=stats.bytes_streamed, layer_copies=stats.copies, slots=stats.slots,
                           copy_wait_seconds=round(stats.wait_s, 4))  # fmt: skip
        return hidden, details

    def connect(self, plan: RunPlan, hidden: HiddenStates) -> tuple[Contexts, Details]:
        """The text stage's connectors part: ``hidden`` (from ``gemma_states``, wherever it waited) -> contexts."""
        details: Details = {}
        keep = tuple(plan.keep("text_encode") & {"gemma", "embeddings"})
        outputs = self.text.connect(hidden, progress=_part_seconds(details), keep=keep)
        pos, neg = outputs[0], outputs[-1]
        contexts = Contexts(video=pos.video_encoding, audio=pos.audio_encoding, video_negative=neg.video_encoding,
                            audio_negative=neg.audio_encoding)  # fmt: skip
        return contexts, details

    # ---- images and the upsampler ----
    def _video_encoder(self) -> torch.nn.Module:
        path, dev, dt = self.setup.checkpoint.path, self.device, self.dtype
        return self.cache.get("video_encoder", lambda: loaders.load_video_encoder(path, dev, dt))

    def encode_images(self, images: Sequence, width: int, height: int) -> tuple[list[ConditioningItem], Details]:
        """The video VAE encoder turns each image into its ltx-core conditioning item at ``width`` x ``height``."""
        details: Details = {}
        encoder = self.timed(details, "load_seconds", self._video_encoder)
        items = self.timed(details, "encode_seconds",
                           lambda: conditioning.encode_images(images, encoder, width, height))  # fmt: skip
        return items, details

    def upsample(self, plan: RunPlan, latents: Latents) -> tuple[Latents, list[ConditioningItem], Details]:
        """Between the two stages: stage 1's video latent x2 through the latent upsampler (normalised with the video
        VAE encoder's statistics), and the images re-encoded at the output size by the same encoder. Returns stage
        2's start latents (the audio latent and the generator carried over) and its conditioning items."""
        details: Details = {}
        request, info = plan.request, require_upsampler(self.setup, plan.request)
        dev, dt = self.device, self.dtype

        def load() -> tuple[torch.nn.Module, torch.nn.Module]:
            up = self.cache.get("spatial_upsampler", lambda: loaders.load_spatial_upsampler(info.path, dev, dt))
            return self._video_encoder(), up

        encoder, upsampler = self.timed(details, "load_seconds", load)
        video = self.timed(details, "upsample_seconds", lambda: upsample_latent(latents.video, encoder, upsampler))
        items: list[ConditioningItem] = []
        if request.images:
            items = self.timed(details, "encode_seconds", lambda: conditioning.encode_images(
                request.images, encoder, request.width, request.height))  # fmt: skip
        details.update(latent_in=list(latents.video.shape), latent_out=list(video.shape))
        return Latents(video=video, audio=latents.audio, generator=latents.generator), items, details

    # ---- denoising ----
    def _transformer(
        self, stage: StagePlan, details: Details, loras: Sequence[LoraFile]
    ) -> tuple[torch.nn.Module, object | None]:
        # The fuser reads each affected layer's A/B as the layer loads (no LoRA state outlives the load).
        setup = self.setup
        with LoraFuser(list(loras)) as fuser:
            fuse = fuser if fuser.targets else None
            if fuse is not None:
                details["loras"] = [f.describe() for f in fuser.files]
            if not stage.streamed_units:
                details["residency"] = "all 48 blocks resident"
                key = tuple((str(f.spec.path), f.spec.strength) for f in fuser.files)  # other LoRAs: load afresh
                load = lambda: loaders.load_transformer(setup.checkpoint.path, self.device, self.dtype,  # noqa: E731
                                                        setup.policy, fuse)  # fmt: skip
                return self.cache.get("transformer", load, key), None
            # Streamed blocks are never in the cache (their slots and copy stream belong to one streamer); a batch
            # may keep the whole streamed pair in its ``streamed_hold``.
            details["residency"] = (f"{stage.resident_units} blocks resident, {stage.streamed_units} streamed from "
                                    f"{stage.source_tier} through {stage.n_slots} slots")  # fmt: skip
            load = lambda: load_streamed_transformer(setup.checkpoint.path, self.device, self.dtype,  # noqa: E731
                                                     setup.policy, stage.resident_units, stage.source_tier,
                                                     stage.n_slots - 1, fuse)  # fmt: skip
            if self.streamed_hold is None:
                return load()
            key = (tuple((str(f.spec.path), f.spec.strength) for f in fuser.files), stage.resident_units,
                   stage.source_tier, stage.n_slots)  # fmt: skip
            model, streamer, reused = self.streamed_hold.get(key, load)
            if reused:
                details["residency"] += " (kept from the batch's previous clip: nothing loaded)"
            return model, streamer

    def denoise(
        self,
        pass_plan: PassPlan,
        seed: int,
        contexts: Contexts,
        conditionings: Sequence[ConditioningItem] = (),
        start: Latents | None = None,
        on_step: Callable[[int, int, float], None] | None = None,
    ) -> tuple[Latents, Details]:
        """Noise from ``seed`` (the video state conditioned on ``conditionings`` first), then every step of the pass's
        schedule; returns the final latents and the load seconds, each step's seconds and, when blocks stream, the
        bytes moved and the time compute waited on copies (loading is not denoising).

        Stage 2 of a two-stage request starts from ``start`` (the upsampled video latent, stage 1's audio latent and
        stage 1's random generator, which it continues, as the official pipelines do) noised to its first sigma.
        ``on_step(i, total, seconds)`` is called after each step (the service's cancel check raises from it)."""
        run, details = pass_plan.run, {}
        if run.from_upsampled != (start is not None):
            raise ValueError(f"{run.stage} {'needs' if run.from_upsampled else 'takes no'} start latents")
        sigmas = schedule_sigmas(run.schedule, self.device, run.steps)
        shape = pixel_shape(run.width, run.height, run.num_frames, run.frame_rate)
        if start is None:
            generator = torch.Generator(device=self.device).manual_seed(seed)
            setup = noised_latents(shape, generator, self.device, self.dtype, conditionings=conditionings)
        else:
            generator = start.generator
            setup = noised_latents(shape, generator, self.device, self.dtype, conditionings, sigmas[0], start.video,
                                   start.audio)  # fmt: skip
        started = time.perf_counter()
        transformer, streamer = self._transformer(pass_plan.stage, details, pass_plan.active_loras)
        self.sync()
        details["load_seconds"] = round(time.perf_counter() - started, 4)
        quant_report = getattr(transformer, "quant_report", None)
        if quant_report is not None:
            details["quantization"] = quant_report.lines()
        step_seconds: list[float] = details.setdefault("step_seconds", [])
        held = self.streamed_hold is not None and self.streamed_hold.holds(streamer)
        stream_before = streamer.stats() if held and streamer is not None else None
        started = time.perf_counter()

        def step_done(i: int, total: int, seconds: float) -> None:
            step_seconds.append(round(seconds, 4))
            self.progress.step(i, total, seconds, time.perf_counter() - started, run.stage)
            if on_step is not None:
                on_step(i, total, seconds)

        sync = torch.cuda.synchronize if self.device.type == "cuda" else None
        settings = self._accel_settings(pass_plan, setup, details)
        accel_stats: dict = {}
        try:
            video, audio = denoise(transformer, setup.video_state, setup.audio_state, sigmas, contexts, run.guidance,
                                   on_step=step_done, synchronize=sync, accel=settings,
                                   accel_stats=accel_stats, slot=self.step_slot, split=self.pass_split,
                                   streamer=streamer)  # fmt: skip
            if accel_stats:
                details["accel_stats"] = accel_stats
                for_run.compile_row(details, accel_stats, step_seconds)
                if settings is not None and settings.compile:
                    note_compiled(pass_plan.shape_key)
        except BaseException:
            if held and self.streamed_hold is not None:
                self.streamed_hold.after_error()
            raise
        finally:
            if streamer is not None:
                stats = stats_since(streamer.stats(), stream_before)
                details.update(bytes_streamed=stats.bytes_streamed, block_copies=stats.copies, slots=stats.slots,
                               slot_bytes=stats.slot_bytes, copy_wait_seconds=round(stats.wait_s, 4),
                               pinned_host_bytes=stats.source_pinned_bytes)  # fmt: skip
                if not held:
                    streamer.close()
        details["steps_seconds"] = round(sum(step_seconds), 4)
        details["seconds_per_step"] = round(sum(step_seconds) / len(step_seconds), 4)
        v, a = final_latents(setup, video, audio)
        return Latents(video=v, audio=a, generator=generator), details

    def _accel_settings(self, pass_plan: PassPlan, setup: LatentSetup, details: Details) -> AccelSettings | None:
        """The plan's accelerations plus the SDPA backend measured now, on this device, at this run's shapes."""
        if pass_plan.run.guidance.mode != "batched":
            return None
        return for_run.measured_settings(pass_plan.accel, self.setup.checkpoint.config, pass_plan.run.guidance.batch,
                                         setup.video_state.latent.shape[1], setup.audio_state.latent.shape[1],
                                         self.device, self.dtype, details)  # fmt: skip


def _part_seconds(details: Details) -> Callable[[str, float], None]:
    """A text-part progress callback that records ``<part>_seconds`` in ``details``."""

    def done(part: str, seconds: float) -> None:
        details[f"{part}_seconds"] = round(seconds, 4)

    return done
