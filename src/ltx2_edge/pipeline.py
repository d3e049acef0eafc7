"""Runs one generation: text encode -> [encode images] -> denoise -> [upsample -> denoise_2] -> decode (video and
audio at once, encoded as it decodes), each in a measured scope. The bracketed pair is the two-stage pipelines'
(two-stage, distilled): stage 1 at half the output size, the latent upsampler x2, stage 2 at the output size.

``Generator`` is long-lived: it validates its files once (headers only), plans every request against the memory
budget before anything loads (refusing an impossible one with the smallest budget that works), and runs the
stages the way the plan says: a stage's weights exist only while it runs; the transformer is resident or streams
K blocks. With no budget (``budget=None``) and ``keep_resident``, stages stay loaded between calls, so a robot
or an installation making many clips does not reload tens of GB per clip. What to run comes in as a
``GenerationRequest``; this module decides nothing about the clip itself.

This module holds what to run (files, budget, ``plan`` / ``check`` / ``passes`` / ``accel`` / ``loras``, all
decided before any weight loads), the ``generate`` orchestration and ``close``. How each stage runs on loaded
weights lives in ``stage_runs`` and ``decode_runs``, the measured scopes of ``generate``'s stages in
``measured_stages``, the run types in ``run_types`` (re-exported here). It must never load weights outside a
stage run.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch

from ltx2_edge.accel import for_run
from ltx2_edge.accel.compile import COMPILE_MODES
from ltx2_edge.accel.settings import CUDA_GRAPH_MODES, AccelChoice
from ltx2_edge.atomic import check_output_path
from ltx2_edge.checkpoint.names import TRANSFORMER_PREFIX as CHECKPOINT_PREFIX
from ltx2_edge.checkpoint.upsampler_file import UpsamplerInfo, check_upsampler_matches, inspect_upsampler
from ltx2_edge.checkpoint.validate import check_text_encoder_fits, inspect_checkpoint, inspect_gemma_folder
from ltx2_edge.decode_runs import DecodeRuns
from ltx2_edge.errors import RequestError
from ltx2_edge.guidance import Guidance
from ltx2_edge.inputs import UNGUIDED_PRESET
from ltx2_edge.measured_stages import MeasuredStages
from ltx2_edge.memory import runtime
from ltx2_edge.memory.allocator import ALLOCATOR_MODES, configure_allocator
from ltx2_edge.models.lora import LoraFile, LoraFuser, baked_loras, check_fusable
from ltx2_edge.models.lora import inspect_transformer_loras as inspect_loras
from ltx2_edge.mp4.mux import mp4_metadata
from ltx2_edge.plan.budget import DEFAULT_BUDGET_BYTES
from ltx2_edge.plan.plan_text import plan_to_json
from ltx2_edge.plan.plan_types import Plan, PlanRequest, SecondStage
from ltx2_edge.progress import Progress
from ltx2_edge.quant.policy import QuantPolicy
from ltx2_edge.quant.precision import resolve_precision
from ltx2_edge.report import RunReport, device_info, versions
from ltx2_edge.request import STAGE_2_SCHEDULE, GenerationRequest
from ltx2_edge.run_types import DenoisePass, Latents, Result, default_device, default_dtype
from ltx2_edge.stages import conditioning
from ltx2_edge.stages.schedules import schedule_steps
from ltx2_edge.stages.text_encode import TextEncoder
from ltx2_edge.stages.upsample import upsample_flops, upsample_working_bytes

__all__ = ["DenoisePass", "Generator", "Latents", "Result", "default_device", "default_dtype"]


class Generator(MeasuredStages, DecodeRuns):
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
        cuda_allocator: str = "auto",
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
        if cuda_allocator not in ALLOCATOR_MODES:
            raise RequestError("cuda-allocator", cuda_allocator, "one of " + ", ".join(ALLOCATOR_MODES))
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
        # Before anything loads: segments made earlier keep the allocator kind they were made with.
        self.allocator, allocator_note = configure_allocator(cuda_allocator, self.device,
                                                             runtime.is_integrated(self.device))  # fmt: skip
        self.enforcement = runtime.enforce_device_budget(self.device, self.budget,
                                                         self.profile.runtime_overhead_bytes)  # fmt: skip
        if self.allocator != "none":
            self.enforcement += f"; {allocator_note}"
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
                                 pixels(run2), same_weights=first.loras == run2.loras)  # fmt: skip
        preq = PlanRequest(
            first.width, first.height, first.num_frames, first.frame_rate, first.steps,
            guidance_batch=len(first.guidance.passes()), precision=self.policy.precision,
            prefetch_depth=self.prefetch_depth, images=len(request.images), image_float_pixels=pixels(first),
            conditioning_tokens=tokens(first), second_stage=second, expandable_segments=self.allocator == "expandable",
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

    # ---- the whole run ----
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
                    "enforcement": self.enforcement, "allocator": self.allocator},
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
        hold = bool(rest) and plan.stage("upsample").keeps_transformer
        try:
            latents = self._denoise_stage(request, first, contexts, items, report, plan, baseline, weights, hold=hold)
            del items
            if rest:
                upsampled, items = self._upsample_stage(request, latents, report, plan, baseline)
                latents = self._denoise_stage(request, rest[0], contexts, items, report, plan, baseline, weights,
                                              upsampled)  # fmt: skip
                del upsampled, items
        finally:
            if hold and not self.keep_resident:  # a failure between the stages must not leave it held
                self._resident.pop("transformer", None)
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

    def close(self) -> None:
        """Release everything kept resident."""
        self._resident.clear()
        self._text.close()
        self._release()
