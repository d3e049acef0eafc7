"""Runs one generation: text encode -> [encode images] -> denoise -> [upsample -> denoise_2] -> decode (video and
audio at once, encoded as it decodes), each in a measured scope. The bracketed pair is the two-stage pipelines'
(two-stage, distilled): stage 1 at half the output size, the latent upsampler x2, stage 2 at the output size.

``Generator`` is long-lived: it validates its files once (headers only), plans every request against the memory
budget before anything loads (refusing an impossible one with the smallest budget that works), and runs the
stages the way the plan says: a stage's weights exist only while it runs; the transformer is resident or streams
K blocks. With no budget (``budget=None``) and ``keep_resident``, stages stay loaded between calls, so a robot
or an installation making many clips does not reload tens of GB per clip. What to run comes in as a
``GenerationRequest``; this module decides nothing about the clip itself.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from collections.abc import Generator as Gen
from dataclasses import dataclass
from pathlib import Path

import torch
from ltx_core.conditioning import ConditioningItem
from ltx_core.model.video_vae import TilingConfig

from ltx2_edge.accel import for_run
from ltx2_edge.accel.compile import COMPILE_MODES, note_compiled
from ltx2_edge.accel.engine import AccelSettings
from ltx2_edge.accel.settings import CUDA_GRAPH_MODES, AccelChoice
from ltx2_edge.atomic import check_output_path
from ltx2_edge.checkpoint.upsampler_file import UpsamplerInfo, check_upsampler_matches, inspect_upsampler
from ltx2_edge.checkpoint.validate import check_text_encoder_fits, inspect_checkpoint, inspect_gemma_folder
from ltx2_edge.errors import RequestError
from ltx2_edge.guidance import UNGUIDED_PRESET, Guidance
from ltx2_edge.memory import runtime
from ltx2_edge.memory.budget import DEFAULT_BUDGET_BYTES
from ltx2_edge.memory.plan_text import plan_to_json
from ltx2_edge.memory.plan_types import Plan, PlanRequest, SecondStage, StagePlan
from ltx2_edge.models import loaders
from ltx2_edge.models.lora import CHECKPOINT_PREFIX, LoraFile, LoraFuser, LoraSpec, baked_loras, check_fusable
from ltx2_edge.models.lora import inspect_transformer_loras as inspect_loras
from ltx2_edge.models.streamed_transformer import load_streamed_transformer
from ltx2_edge.progress import Progress
from ltx2_edge.quant.policy import QuantPolicy, resolve_precision
from ltx2_edge.report import RunReport, StageRecord, device_info, versions
from ltx2_edge.request import STAGE_2_SCHEDULE, GenerationRequest
from ltx2_edge.stages import conditioning
from ltx2_edge.stages.decode import AudioFuture, decode_overlapped
from ltx2_edge.stages.decode_audio import decode_audio
from ltx2_edge.stages.decode_stage import decode_to_mp4
from ltx2_edge.stages.decode_video import decode_video
from ltx2_edge.stages.denoise import Contexts, denoise
from ltx2_edge.stages.latents import LatentSetup, final_latents, noised_latents, pixel_shape, video_token_count
from ltx2_edge.stages.mux import MuxStats, mp4_metadata
from ltx2_edge.stages.schedules import schedule_sigmas, schedule_steps
from ltx2_edge.stages.text_encode import TextEncoder
from ltx2_edge.stages.upsample import upsample_flops, upsample_latent, upsample_working_bytes


def default_device() -> torch.device:
    """The first CUDA device if there is one, else the CPU."""
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


def default_dtype(device: torch.device) -> torch.dtype:
    """bf16 on GPUs (the checkpoint's dtype); float32 on the CPU, where bf16 matmuls are slow and inexact."""
    return torch.bfloat16 if device.type == "cuda" else torch.float32


@dataclass
class Latents:
    """Final latents of a run, before decoding, and the generator state the decoder continues from."""

    video: torch.Tensor
    audio: torch.Tensor
    generator: torch.Generator


@dataclass(frozen=True)
class DenoisePass:
    """One denoising stage of a run, as ``Generator.passes`` derives it from the request.

    ``stage``: its plan stage, ``denoise`` (the only one, or stage 1 at half the output size) or ``denoise_2``
    (stage 2 of the two-stage pipelines: it starts from the upsampled latent noised to its first sigma, with one
    unguided forward per step). ``loras``: fused into the weights this pass loads (stage 2 of two-stage adds the
    distilled LoRA). ``images``: the conditioning images, fitted to this pass's size.
    """

    stage: str
    width: int
    height: int
    num_frames: int
    frame_rate: float
    schedule: str
    steps: int
    guidance: Guidance
    loras: tuple[LoraSpec, ...]
    images: tuple = ()

    @property
    def from_upsampled(self) -> bool:
        return self.stage == "denoise_2"


@dataclass
class Result:
    """What ``Generator.generate`` returns."""

    output_path: Path
    report_path: Path
    report: RunReport
    latents: Latents


class Generator:
    """Keeps the model files (and, with no budget and ``keep_resident``, the loaded stages) for many clips."""

    def __init__(
        self,
        checkpoint_path: str | Path,
        gemma_root: str | Path,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        budget: int | None = DEFAULT_BUDGET_BYTES,
        host_budget: int | None | str = "auto",
        unified: bool = False,
        prefetch_depth: int = 2,
        keep_resident: bool = False,
        guidance_mode: str = "batched",
        quantization: str = "auto",
        keep_bf16: tuple[str, ...] = (),
        quantize_all: bool = False,
        compile: str = "auto",
        cuda_graph: str = "auto",
        progress: Progress | None = None,
        spatial_upsampler_path: str | Path | None = None,
    ) -> None:
        self.checkpoint = inspect_checkpoint(Path(checkpoint_path))
        self.gemma = inspect_gemma_folder(Path(gemma_root))
        check_text_encoder_fits(self.checkpoint, self.gemma)  # a tiny checkpoint with a full Gemma, say
        # The two-stage pipelines' latent upsampler: checked (headers) now, loaded only between their stages.
        self.upsampler: UpsamplerInfo | None = None
        if spatial_upsampler_path is not None:
            self.upsampler = inspect_upsampler(Path(spatial_upsampler_path))
            check_upsampler_matches(self.upsampler, self.checkpoint.config)
        self.device = torch.device(device) if device is not None else default_device()
        self.dtype = dtype or default_dtype(self.device)
        self.guidance_mode = guidance_mode
        if compile not in COMPILE_MODES:
            raise RequestError("compile", compile, "one of " + ", ".join(COMPILE_MODES))
        if cuda_graph not in CUDA_GRAPH_MODES:
            raise RequestError("cuda-graph", cuda_graph, "one of " + ", ".join(CUDA_GRAPH_MODES))
        self.compile_mode, self.cuda_graph_mode = compile, cuda_graph
        self.prefetch_depth = prefetch_depth
        self.progress = progress or Progress()
        self.notes: list[str] = []
        precision, note = resolve_precision(quantization, self.device)
        self.policy = QuantPolicy.from_flags(precision, tuple(keep_bf16), quantize_all)
        self.budget = runtime.budget_for(self.device, budget, host_budget, unified)
        self.profile, profile_note = runtime.device_profile(self.device)
        if keep_resident and self.budget.device_bytes is not None:
            note2 = "keep_resident applies with no budget (--budget none): under a budget each stage is released"
            self.notes.append(note2)
            keep_resident = False
        self.keep_resident = keep_resident
        self.notes += [n for n in (note, profile_note) if n]
        self.enforcement = runtime.enforce_device_budget(self.device, self.budget)
        for line in self.notes:
            self.progress.note(line)
        self._text = TextEncoder(self.gemma.root, self.checkpoint.path, device=self.device, dtype=self.dtype,
                                 keep_resident=keep_resident, policy=self.policy)  # fmt: skip
        self._resident: dict[str, torch.nn.Module] = {}
        self._resident_loras: tuple = ()  # the LoRAs fused into a kept-resident transformer

    # ---- before anything loads ----
    def guidance(self, request: GenerationRequest) -> Guidance:
        """The guidance passes ``request`` asks for, run batched or sequentially as this generator does
        (distilled-one-stage: one unguided pass)."""
        if request.guidance == UNGUIDED_PRESET:
            return Guidance.unguided(mode=self.guidance_mode)  # type: ignore[arg-type]
        return Guidance.preset_named(request.guidance, mode=self.guidance_mode)  # type: ignore[arg-type]

    def passes(self, request: GenerationRequest) -> tuple[DenoisePass, ...]:
        """The denoising stages ``request`` runs: one, or the two-stage pipelines' stage 1 and stage 2."""
        first = request.stage_1() if request.two_stage else request
        passes = [DenoisePass("denoise", first.width, first.height, first.num_frames, first.frame_rate, first.schedule,
                              first.num_inference_steps, self.guidance(first), first.loras, first.images)]  # fmt: skip
        if request.two_stage:
            extra = (request.distilled_lora,) if request.distilled_lora is not None else ()
            passes.append(DenoisePass("denoise_2", request.width, request.height, request.num_frames,
                                      request.frame_rate, STAGE_2_SCHEDULE, schedule_steps(STAGE_2_SCHEDULE),
                                      Guidance.unguided(mode=self.guidance_mode),  # type: ignore[arg-type]
                                      (*request.loras, *extra), request.images))  # fmt: skip
        return tuple(passes)

    def plan(self, request: GenerationRequest) -> Plan:
        """The memory plan of ``request`` (``BudgetError`` if it cannot fit), from headers and the conditioning
        images' sizes: each image is opened and decoded here (``RequestError`` for a missing or unreadable one).
        A two-stage request without the upsampler file is refused here (``RequestError``)."""
        sizes = conditioning.check_image_files(request.images)
        first, *rest = self.passes(request)

        def pixels(run: DenoisePass) -> int:
            return max((conditioning.image_device_pixels(size, run.width, run.height) for size in sizes), default=0)

        def tokens(run: DenoisePass) -> int:
            return conditioning.conditioning_token_count(run.images, run.width, run.height)

        second = None
        if rest:
            (run2,) = rest
            up = self._require_upsampler(request)
            frames = (first.num_frames - 1) // 8 + 1  # the VAE's 8x temporal compression, first frame alone
            latent = (1, up.config["in_channels"], frames, first.height // 32, first.width // 32)
            work, flops = upsample_working_bytes(up.config, latent, 2), upsample_flops(up.header.tensors, latent)
            second = SecondStage(run2.width, run2.height, run2.steps, up.weight_bytes, work, flops, tokens(run2),
                                 pixels(run2))  # fmt: skip
        preq = PlanRequest(
            first.width, first.height, first.num_frames, first.frame_rate, first.steps,
            guidance_batch=len(first.guidance.passes()), precision=self.policy.precision,
            prefetch_depth=self.prefetch_depth, images=len(request.images), image_float_pixels=pixels(first),
            conditioning_tokens=tokens(first), second_stage=second,
        )  # fmt: skip
        return runtime.build_plan(self.checkpoint.header, self.gemma.shards, preq, self.budget, self.profile,
                                  self.policy)  # fmt: skip

    def _require_upsampler(self, request: GenerationRequest) -> UpsamplerInfo:
        if self.upsampler is None:
            raise RequestError("spatial-upsampler-path", None, f"the latent upsampler file for --pipeline "
                               f"{request.pipeline} (Lightricks' ltx-2-spatial-upscaler-x2-1.0.safetensors; "
                               "`ltx2-edge make-checkpoint` writes a random one beside ltx2.safetensors)")  # fmt: skip
        return self.upsampler

    def accel(self, run: DenoisePass, plan: Plan) -> AccelChoice:
        """How ``run``'s denoising forwards run (compiled, graphed, text K/V kept); ``RequestError`` for
        ``--compile on`` where it cannot run. The SDPA backend is measured later, on the device, when it starts."""
        return for_run.choose_for_run(
            compile_mode=self.compile_mode, cuda_graph_mode=self.cuda_graph_mode, device=self.device, dtype=self.dtype,
            guidance=run.guidance, denoise=plan.stage(run.stage), budget_bytes=self.budget.device_bytes,
            config=self.checkpoint.config, shape_key=self._shape_key(run),
        )  # fmt: skip

    def _shape_key(self, run: DenoisePass) -> tuple:
        """What the compiled block is specialised on: same key, same compiled code."""
        keyframe_tokens = conditioning.conditioning_token_count(run.images, run.width, run.height)
        return (run.width, run.height, run.num_frames, keyframe_tokens, run.guidance.batch, self.policy.precision,
                str(self.dtype))  # fmt: skip

    def check(self, request: GenerationRequest, output_path: Path | None, overwrite: bool) -> Plan:
        """Raise for a prompt over the context, a bad output path, a missing or unreadable image, a missing
        upsampler, an impossible budget, a LoRA that cannot be fused or a ``--compile on`` that cannot run;
        return the plan."""
        self._text.tokenizer.check(request.prompt, "prompt")
        if self.guidance(request).uses_negative_prompt:
            self._text.tokenizer.check(request.negative_prompt, "negative_prompt")
        if output_path is not None:
            check_output_path(output_path, overwrite)
        plan = self.plan(request)
        for run in self.passes(request):
            self.accel(run, plan)
            self.loras(run, plan)
        return plan

    def loras(self, run: DenoisePass, plan: Plan | None) -> tuple[LoraFile, ...]:
        """``run.loras`` checked against the transformer (headers only) and against where its weights come
        from: blocks streaming from the file, or 8-bit weights in a pre-quantized checkpoint, cannot take a LoRA
        at load (``RequestError`` naming ``ltx2-edge quantize --lora``, which bakes them in)."""
        files = inspect_loras(run.loras, self.checkpoint.config)
        active = [f for f in files if f.spec.strength != 0.0]  # strength 0 changes no weight: nothing to fuse
        den = plan.stage(run.stage) if plan is not None else None
        if active and den is not None and den.streamed_units and den.source_tier == "file":
            raise RequestError("lora", str(active[0].spec.path),
                               "a run whose blocks do not stream from the file (this plan streams them from the file: "
                               "unified memory or a small --host-budget); bake LoRAs in with `ltx2-edge quantize "
                               "--checkpoint-path BF16_FILE --to fp8|int8 --lora PATH STRENGTH ...` and run its output "
                               "without --lora")  # fmt: skip
        with LoraFuser(active) as fuser:
            check_fusable(self.checkpoint.header, fuser, CHECKPOINT_PREFIX)
        return files

    # ---- stages ----
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

    def encode_images(self, request: GenerationRequest, details: dict | None = None) -> list[ConditioningItem]:
        """The encode_image stage: the video VAE encoder, loaded for this call only (unless kept resident), turns
        each of ``request.images`` into its ltx-core conditioning item at the output size, then is released.
        ``details`` receives the load and encode seconds."""
        details = {} if details is None else details
        started = time.perf_counter()
        path, dev, dt = self.checkpoint.path, self.device, self.dtype
        encoder = self._module("video_encoder", lambda: loaders.load_video_encoder(path, dev, dt))
        self._sync()
        details["load_seconds"] = round(time.perf_counter() - started, 4)
        started = time.perf_counter()
        items = conditioning.encode_images(request.images, encoder, request.width, request.height)
        self._sync()
        details["encode_seconds"] = round(time.perf_counter() - started, 4)
        del encoder
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
        started = time.perf_counter()
        path, dev, dt = self.checkpoint.path, self.device, self.dtype
        encoder = self._module("video_encoder", lambda: loaders.load_video_encoder(path, dev, dt))
        upsampler = self._module("spatial_upsampler", lambda: loaders.load_spatial_upsampler(info.path, dev, dt))
        self._sync()
        details["load_seconds"] = round(time.perf_counter() - started, 4)
        started = time.perf_counter()
        video = upsample_latent(latents.video, encoder, upsampler)
        self._sync()
        details["upsample_seconds"] = round(time.perf_counter() - started, 4)
        del upsampler
        items: list[ConditioningItem] = []
        if request.images:
            started = time.perf_counter()
            items = conditioning.encode_images(request.images, encoder, request.width, request.height)
            self._sync()
            details["encode_seconds"] = round(time.perf_counter() - started, 4)
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
    ) -> Latents:
        """Noise from the seed (the video state conditioned on ``conditionings`` first, from ``encode_images``),
        then every step of the schedule; returns the final latents.

        ``run``: which of ``passes(request)`` (default: the first). Stage 2 of a two-stage request starts from
        ``start`` (the upsampled video latent, stage 1's audio latent and stage 1's random generator, which it
        continues, as the official pipelines do) noised to its first sigma. ``details`` receives the weight-load
        seconds, each step's seconds and, when blocks stream, the bytes moved and the time compute waited on copies
        (loading is not denoising).
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

    # ---- the whole run ----
    def _stage_memory(self, rec: StageRecord, predicted: int, baseline: int) -> None:
        """Budget, prediction and what the device really held, for the report (and leaks between stages)."""
        cap = self.budget.device_bytes
        rec.details.update(budget_bytes=cap, predicted_peak_bytes=predicted,
                           within_budget=cap is None or rec.peak_bytes <= cap)  # fmt: skip
        if self.device.type == "cuda":
            self._release()
            rec.details["nvml_used_bytes_after"] = runtime.nvml_used_bytes(self.device)
            retained = torch.cuda.memory_allocated(self.device) - baseline
            rec.details["retained_bytes_after"] = retained
            if not self.keep_resident and retained > 256 * 1024**2:
                self.progress.note(f"{rec.stage} left {retained / 1024**3:.2f} GiB allocated after release")

    def generate(self, request: GenerationRequest, output_path: str | Path, overwrite: bool = False) -> Result:
        """Generate one clip into ``output_path`` (MP4, written atomically) and its ``.report.json``."""
        out = Path(output_path)
        plan = self.check(request, out, overwrite)
        guidance = self.guidance(request)
        report = RunReport(request=request.to_dict(), device=device_info(self.device), versions=versions(),
                           output_path=str(out))  # fmt: skip
        report.extra.update(
            model={"checkpoint": str(self.checkpoint.path), "model_version": self.checkpoint.model_version,
                   "gemma_root": str(self.gemma.root), "dtype": str(self.dtype).removeprefix("torch.")},
            guidance=guidance.describe(),
            quantization={"precision": self.policy.precision, "policy": self.policy.describe()},
            budget={"describe": self.budget.describe(), "device_bytes": self.budget.device_bytes,
                    "host_bytes": self.budget.host_bytes, "unified": self.budget.unified,
                    "enforcement": self.enforcement},
            plan=plan_to_json(plan),
            loras={"fused_at_load": {run.stage: [f.describe() for f in self.loras(run, plan)]
                                     for run in self.passes(request)},
                   "baked_into_checkpoint": baked_loras(self.checkpoint.header)},
        )  # fmt: skip
        if self.upsampler is not None and request.two_stage:
            report.extra["model"]["spatial_upsampler"] = str(self.upsampler.path)
        report.notes.extend(self.notes)
        start, dev = time.perf_counter(), self.device
        weights = "bf16" if self.policy.precision == "bf16" else f"{self.policy.precision} Linears, keep-list bf16"
        baseline = torch.cuda.memory_allocated(dev) if dev.type == "cuda" else 0
        predicted = {s.name: s.predicted_peak_bytes for s in plan.stages}

        text = plan.stage("text_encode")
        self._text.layer_streaming = (
            (text.resident_units, text.source_tier, text.n_slots - 1) if text.streamed_units else None
        )
        layers = text.technique.split(";")[0]
        over = "prompt and negative prompt" if guidance.uses_negative_prompt else "the prompt (no negative pass)"
        self.progress.stage("text_encode", f"Gemma 3 over {over}, then the connectors; {layers}")
        technique = f"staged: Gemma language model only ({weights}), {layers}, freed after"
        with report.measure("text_encode", technique, dev) as rec:
            contexts = self.encode_text(request, rec.details)
            rec.details["prompt_tokens"] = self._text.count_tokens(request.prompt)
            stats = self._text.last_stream_stats if text.streamed_units else None
            if stats is not None:
                rec.details.update(bytes_streamed=stats.bytes_streamed, layer_copies=stats.copies, slots=stats.slots,
                                   copy_wait_seconds=round(stats.wait_s, 4))  # fmt: skip
        self._stage_memory(rec, max(predicted["text_encode"], predicted["embeddings"]), baseline)
        self.progress.done("text_encode", rec.seconds)
        first, *rest = self.passes(request)
        at_first = request.stage_1() if request.two_stage else request
        items = self._encode_image_stage(at_first, report, plan, baseline) if request.images else []
        latents = self._denoise_stage(request, first, contexts, items, report, plan, baseline, weights)
        del items
        if rest:
            upsampled, items = self._upsample_stage(request, latents, report, plan, baseline)
            latents = self._denoise_stage(request, rest[0], contexts, items, report, plan, baseline, weights, upsampled)
            del upsampled, items
        del contexts

        tiles = plan.stage("decode").tiles
        tiling = tiles.describe() if tiles is not None else "untiled"
        beside = "own CUDA stream" if dev.type == "cuda" else "worker thread"
        self.progress.stage("decode", f"video VAE decoder ({tiling}) with the audio decoder + vocoder beside it "
                                      f"({beside}); H.264 + AAC on a writer thread")  # fmt: skip
        metadata = mp4_metadata({**request.to_dict(), "guidance": guidance.describe()}, self.checkpoint.model_version)
        technique = (f"staged: both decoders for this stage only; video {tiling}; audio beside it ({beside}); "
                     "encoded on a writer thread")  # fmt: skip
        with report.measure("decode", technique, dev) as rec:
            self.decode_into(latents, request, out, metadata, overwrite=overwrite, plan=plan, details=rec.details)
        self._stage_memory(rec, predicted["decode"], baseline)
        self.progress.done("decode", rec.seconds)

        report.total_seconds = time.perf_counter() - start
        report_path = out.with_suffix(".report.json")
        report.write(report_path)
        return Result(output_path=out, report_path=report_path, report=report, latents=latents)

    def _denoise_stage(
        self, request: GenerationRequest, run: DenoisePass, contexts: Contexts, items: list[ConditioningItem],
        report: RunReport, plan: Plan, baseline: int, weights: str, start: Latents | None = None,
    ) -> Latents:  # fmt: skip
        """One denoising stage of ``generate``, measured: weights loaded (LoRAs fused), every step, released."""
        tokens = video_token_count(run.width, run.height, run.num_frames)
        keyframe_tokens = conditioning.conditioning_token_count(run.images, run.width, run.height)
        den = plan.stage(run.stage)
        at = f" at {run.width}x{run.height}" if request.two_stage else ""
        passes = f"{run.guidance.batch} guidance pass(es) per forward"
        self.progress.stage(run.stage, f"{run.steps} steps ({run.schedule} sigmas){at}, {tokens} video tokens, "
                                       f"{passes}; {den.technique}")  # fmt: skip
        residency = den.technique.split(";")[0]
        batching = (f"guidance batched x{run.guidance.batch} in one forward per step"
                    if run.guidance.mode == "batched" else "guidance passes run one by one")  # fmt: skip
        fused = f"; {len(run.loras)} LoRA(s) fused at load" if run.loras else ""
        origin = "; from the upsampled latent" if start is not None else ""
        with report.measure(run.stage, f"{weights}{fused}; {residency}; {batching}{origin}", self.device) as rec:
            latents = self.denoise(request, contexts, rec.details, plan, conditionings=items, run=run, start=start)
            rec.details.update(steps=run.steps, schedule=run.schedule, size=f"{run.width}x{run.height}",
                               video_tokens=tokens, keyframe_tokens=keyframe_tokens,
                               passes=list(run.guidance.passes()))  # fmt: skip
            if "accel_summary" in rec.details:
                rec.technique += f"; {rec.details['accel_summary']}"
        self._stage_memory(rec, den.predicted_peak_bytes + rec.details.get("accel_extra_peak_bytes", 0), baseline)
        self.progress.done(run.stage, rec.seconds)
        return latents

    def _upsample_stage(
        self, request: GenerationRequest, latents: Latents, report: RunReport, plan: Plan, baseline: int
    ) -> tuple[Latents, list[ConditioningItem]]:
        """The upsample stage of ``generate``, measured: encoder + upsampler loaded, latent x2, images again."""
        stage = plan.stage("upsample")
        again = f", {len(request.images)} image(s) re-encoded" if request.images else ""
        self.progress.stage("upsample", f"latent upsampler x2 to {request.width}x{request.height}{again}")
        technique = f"staged: video VAE encoder + latent upsampler for this stage only, freed after; {stage.technique}"
        with report.measure("upsample", technique, self.device) as rec:
            start, items = self.upsample(request, latents, rec.details)
        self._stage_memory(rec, stage.predicted_peak_bytes, baseline)
        self.progress.done("upsample", rec.seconds)
        return start, items

    def _encode_image_stage(
        self, request: GenerationRequest, report: RunReport, plan: Plan, baseline: int
    ) -> list[ConditioningItem]:
        """The encode_image stage of ``generate``, measured: encoder loaded, images encoded, encoder released."""
        stage = plan.stage("encode_image")
        size = f"{request.width}x{request.height}"
        self.progress.stage("encode_image", f"video VAE encoder over {len(request.images)} image(s) at {size}")
        technique = f"staged: video VAE encoder for this stage only, freed after; {stage.technique}"
        with report.measure("encode_image", technique, self.device) as rec:
            items = self.encode_images(request, rec.details)
            rec.details.update(images=[spec.describe() for spec in request.images], size=size)
        self._stage_memory(rec, stage.predicted_peak_bytes, baseline)
        self.progress.done("encode_image", rec.seconds)
        return items

    def close(self) -> None:
        """Release everything kept resident."""
        self._resident.clear()
        self._text.close()
        self._release()
