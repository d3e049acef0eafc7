"""The measured stages of ``Generator.generate``: each stage's progress line, its report scope (seconds, peak
memory, technique, details) and its predicted-versus-measured memory (and what it left allocated after release).

``MeasuredStages`` is a mixin of ``Generator``, beside ``StageRuns``: it calls the stage runs (``encode_images``,
``denoise``, ``upsample``) inside ``RunReport.measure`` and reads the generator's budget and progress. This module
must never load weights or run a model itself (``stage_runs`` does), nor decide what to run (``Generator`` does).
"""

from __future__ import annotations

import itertools

import torch
from ltx_core.conditioning import ConditioningItem

from ltx2_edge.memory import runtime
from ltx2_edge.plan.budget import Budget
from ltx2_edge.plan.plan_types import Plan
from ltx2_edge.plan.profiles import DeviceProfile
from ltx2_edge.report import RunReport, StageRecord
from ltx2_edge.request import GenerationRequest
from ltx2_edge.run_types import DenoisePass, Latents
from ltx2_edge.stage_runs import StageRuns
from ltx2_edge.stages import conditioning
from ltx2_edge.stages.denoise import Contexts
from ltx2_edge.stages.latents import video_token_count


class MeasuredStages(StageRuns):
    """``generate``'s stages, each run inside a measured report scope with its progress lines."""

    budget: Budget  # set by ``Generator.__init__``, as is ``profile``
    profile: DeviceProfile

    def _held_bytes(self) -> int:
        """Bytes of a transformer held for the next stage (``denoise(hold=True)``); 0 when none is."""
        held = self._resident.get("transformer") if not self.keep_resident else None
        if held is None:
            return 0
        return sum(t.numel() * t.element_size() for t in itertools.chain(held.parameters(), held.buffers()))

    def _stage_memory(self, rec: StageRecord, predicted: int, baseline: int, held: int = 0) -> None:
        """Budget, prediction and what the device really held, for the report (and leaks between stages; ``held``:
        bytes kept on purpose for the next stage)."""
        cap = self.budget.device_bytes
        # What the budget holds: the allocator's reserved memory (allocated + cached segments; the cap enforces
        # it) and, on a GPU, the runtime's own device memory, which no allocator figure includes.
        runtime_bytes = self.profile.runtime_overhead_bytes if self.device.type == "cuda" else 0
        held_peak = max(rec.peak_bytes, rec.details.get("peak_reserved_bytes", 0)) + runtime_bytes
        rec.details.update(budget_bytes=cap, predicted_peak_bytes=predicted,
                           within_budget=cap is None or held_peak <= cap)  # fmt: skip
        if self.device.type == "cuda":
            self._release()
            rec.details["nvml_used_bytes_after"] = runtime.nvml_used_bytes(self.device)
            retained = torch.cuda.memory_allocated(self.device) - baseline - held
            rec.details.update(retained_bytes_after=retained, held_for_next_stage_bytes=held)
            if not self.keep_resident and retained > 256 * 1024**2:
                self.progress.note(f"{rec.stage} left {retained / 1024**3:.2f} GiB allocated after release")

    def _denoise_stage(
        self, request: GenerationRequest, run: DenoisePass, contexts: Contexts, items: list[ConditioningItem],
        report: RunReport, plan: Plan, baseline: int, weights: str, start: Latents | None = None, hold: bool = False,
    ) -> Latents:  # fmt: skip
        """One denoising stage of ``generate``, measured: weights loaded (LoRAs fused), every step, released (or,
        with ``hold``, kept for the next stage: ``denoise``'s ``hold``)."""
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
        if start is not None and plan.stage("upsample").keeps_transformer:
            origin += "; weights kept resident from stage 1"
        with report.measure(run.stage, f"{weights}{fused}; {residency}; {batching}{origin}", self.device) as rec:
            latents = self.denoise(request, contexts, rec.details, plan, conditionings=items, run=run, start=start,
                                   hold=hold)  # fmt: skip
            rec.details.update(steps=run.steps, schedule=run.schedule, size=f"{run.width}x{run.height}",
                               video_tokens=tokens, keyframe_tokens=keyframe_tokens,
                               passes=list(run.guidance.passes()))  # fmt: skip
            if "accel_summary" in rec.details:
                rec.technique += f"; {rec.details['accel_summary']}"
        predicted = den.predicted_peak_bytes + rec.details.get("accel_extra_peak_bytes", 0)
        self._stage_memory(rec, predicted, baseline, self._held_bytes())
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
        self._stage_memory(rec, stage.predicted_peak_bytes, baseline, self._held_bytes())
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
