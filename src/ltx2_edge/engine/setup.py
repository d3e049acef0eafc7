"""``EngineSetup``: the run settings resolved against this machine and these files, once, when a ``Generator`` starts.

The checkpoint, the Gemma folder and the upsampler are checked by their headers; the device, dtype, quantization
policy, budget, device profile and CUDA allocator are decided, with a note for each choice that differs from what
was asked. Every later decision (the ``RunPlan``) and every stage run (``StageRunner``) reads this one frozen
object. This module must never load a weight nor plan a request.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from ltx2_edge.checkpoint.header import read_header
from ltx2_edge.checkpoint.upsampler_file import UpsamplerInfo, check_upsampler_matches, inspect_upsampler
from ltx2_edge.checkpoint.validate import (
    CheckpointInfo,
    GemmaInfo,
    check_precision_matches,
    check_text_encoder_fits,
    inspect_checkpoint,
    inspect_gemma_folder,
)
from ltx2_edge.engine.settings import RunSettings
from ltx2_edge.memory import runtime
from ltx2_edge.memory.allocator import configure_allocator
from ltx2_edge.mp4.video_encoders import resolve_video_encoder
from ltx2_edge.plan.budget import Budget
from ltx2_edge.plan.profiles import DeviceProfile
from ltx2_edge.quant.policy import QuantPolicy
from ltx2_edge.quant.precision import resolve_precision
from ltx2_edge.quant.prequantized import choose_files
from ltx2_edge.run_types import default_device, default_dtype


@dataclass(frozen=True)
class EngineSetup:
    """What every run of one generator shares. ``notes``: what runs instead of what was asked, and why."""

    settings: RunSettings
    checkpoint: CheckpointInfo
    gemma: GemmaInfo
    upsampler: UpsamplerInfo | None
    device: torch.device
    dtype: torch.dtype
    policy: QuantPolicy
    budget: Budget
    profile: DeviceProfile
    allocator: str
    enforcement: str
    keep_resident: bool
    notes: tuple[str, ...]
    video_encoder: str = "libx264"  # the H.264 encoder decode uses (--video-encoder, probed once here)

    @classmethod
    def resolve(cls, checkpoint_path: Path, gemma_root: Path, settings: RunSettings) -> EngineSetup:
        """Check the files (headers only) and decide everything ``settings`` leaves to the machine, the pre-quantized
        copies read in place of ``checkpoint_path`` and ``gemma_root`` included (``quant.prequantized``).

        Configures the CUDA allocator and caps the process's device memory at the budget (less the runtime's own
        memory): both must happen before anything is allocated on the device."""
        checkpoint = inspect_checkpoint(Path(checkpoint_path))
        gemma = inspect_gemma_folder(Path(gemma_root))
        check_text_encoder_fits(checkpoint, gemma)  # a tiny checkpoint with a full Gemma, say
        upsampler = None
        if settings.spatial_upsampler_path is not None:
            upsampler = inspect_upsampler(settings.spatial_upsampler_path)
            check_upsampler_matches(upsampler, checkpoint.config)
        device = torch.device(settings.device) if settings.device is not None else default_device()
        dtype = getattr(torch, settings.dtype) if settings.dtype is not None else default_dtype(device)
        precision, precision_note = resolve_precision(settings.quantization, device)
        policy = QuantPolicy.from_flags(precision, settings.keep_bf16, settings.quantize_all)
        files = choose_files(checkpoint, gemma, policy, settings.prequantized)  # the copies quantize writes, if there
        checkpoint, gemma = files.checkpoint, files.gemma
        # A pre-quantized file runs only at its own precision: refused here, from headers, before any weight.
        headers = [checkpoint.header, *(read_header(shard) for shard in gemma.shards)]
        check_precision_matches(headers, precision, settings.quantization)
        budget = runtime.budget_for(device, settings.budget, settings.host_budget, settings.unified)
        profile, profile_note = runtime.device_profile(device)
        keep_resident = settings.keep_resident and budget.device_bytes is None
        resident_note = ""
        if settings.keep_resident and not keep_resident:
            resident_note = (
                "keep_resident applies with no budget (--budget none): under a budget each stage is released"
            )
        allocator, allocator_note = configure_allocator(settings.cuda_allocator, device, runtime.is_integrated(device))
        enforcement = runtime.enforce_device_budget(device, budget, profile.runtime_overhead_bytes)
        if allocator != "none":
            enforcement += f"; {allocator_note}"
        video_encoder, encoder_note = resolve_video_encoder(settings.video_encoder)
        notes = tuple(n for n in (resident_note, precision_note, profile_note, encoder_note, *files.notes) if n)
        return cls(settings, checkpoint, gemma, upsampler, device, dtype, policy, budget, profile, allocator,
                   enforcement, keep_resident, notes)  # fmt: skip
