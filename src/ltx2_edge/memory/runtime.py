"""From a running machine to the planner's inputs, and back: budget, profile, plan, enforcement, measurement.

The planner is pure; this module is where it meets the device: which profile describes this GPU, what the OS
says is available, the merged Gemma header, the policy's quantized-weight predicate, turning a plan's tiles into
ltx-core's ``TilingConfig``, and enforcing a discrete GPU's device budget with
``torch.cuda.set_per_process_memory_fraction`` so that a planning error fails loudly instead of silently using
more. It decides nothing the plan has not decided.
"""

from __future__ import annotations

from pathlib import Path

import psutil
import torch
from ltx_core.model.video_vae import SpatialTilingConfig, TemporalTilingConfig, TilingConfig

from ltx2_edge.calibrate.choice import choose_profile
from ltx2_edge.calibrate.identity import device_identity
from ltx2_edge.checkpoint.header import Header, TensorInfo, read_header
from ltx2_edge.plan.budget import Budget
from ltx2_edge.plan.file_reads import with_reads
from ltx2_edge.plan.plan_types import Plan, PlanRequest
from ltx2_edge.plan.planner import plan as make_plan
from ltx2_edge.plan.planner import quantized_predicate
from ltx2_edge.plan.profiles import DeviceProfile
from ltx2_edge.plan.tile_plan import VideoTiling
from ltx2_edge.quant.policy import QuantPolicy
from ltx2_edge.quant.prequantized import describe_source


def device_profile(device: torch.device, cache_dir: Path | None = None) -> tuple[DeviceProfile, str]:
    """The profile that predicts times on ``device`` and the note the report carries ("" when the rates are this
    device's own): this device's calibrated profile (``ltx2-edge calibrate``, in ``cache_dir``, default the user's
    cache), else one shipped for it, else the nearest shipped one (``calibrate.choice``)."""
    return choose_profile(device_identity(device), cache_dir)


def is_integrated(device: torch.device) -> bool:
    """True on a unified-memory device (Jetson), where host and device share one pool."""
    return device.type == "cuda" and bool(getattr(torch.cuda.get_device_properties(device), "is_integrated", False))


def budget_for(device: torch.device, budget_bytes: int | None, host_budget: int | None | str, unified: bool) -> Budget:
    """The run's ``Budget``: ``--budget``, ``--host-budget`` (or "auto"), ``--unified``, and what the OS has free."""
    return Budget.for_device(budget_bytes, is_integrated=is_integrated(device), unified=unified,
                             host_budget=host_budget, host_available_bytes=psutil.virtual_memory().available)  # type: ignore[arg-type]  # fmt: skip


def gemma_tensors(shards: tuple[Path, ...]) -> dict[str, TensorInfo]:
    """All shards' header entries, merged (headers only)."""
    merged: dict[str, TensorInfo] = {}
    for shard in shards:
        merged.update(read_header(shard).tensors)
    return merged


def build_plan(
    checkpoint_header: Header,
    gemma_shards: tuple[Path, ...],
    request: PlanRequest,
    budget: Budget,
    profile: DeviceProfile,
    policy: QuantPolicy,
) -> Plan:
    """Plan ``request`` (raises ``BudgetError`` before anything loads when it cannot fit); each stage names the file
    it reads (``plan.file_reads``)."""
    plan = make_plan(checkpoint_header, gemma_tensors(gemma_shards), request, budget, profile,
                     quantized_predicate(policy))  # fmt: skip
    folder = gemma_shards[0].parent if gemma_shards else Path("the Gemma folder")
    gemma = describe_source(folder, [read_header(s) for s in gemma_shards], policy.precision, folder=True)
    return with_reads(plan, describe_source(checkpoint_header.path, [checkpoint_header], policy.precision), gemma)


def tiling_config(tiling: VideoTiling | None) -> TilingConfig | None:
    """The plan's decode tiling as ltx-core's ``TilingConfig`` (None: decode untiled)."""
    if tiling is None or (tiling.spatial_tile_px is None and tiling.temporal_tile_frames is None):
        return None
    spatial = None
    if tiling.spatial_tile_px is not None:
        spatial = SpatialTilingConfig(tile_size_in_pixels=tiling.spatial_tile_px,
                                      tile_overlap_in_pixels=tiling.spatial_overlap_px)  # fmt: skip
    temporal = None
    if tiling.temporal_tile_frames is not None:
        temporal = TemporalTilingConfig(tile_size_in_frames=tiling.temporal_tile_frames,
                                        tile_overlap_in_frames=tiling.temporal_overlap_frames)  # fmt: skip
    return TilingConfig(spatial_config=spatial, temporal_config=temporal)


def enforce_device_budget(device: torch.device, budget: Budget, runtime_bytes: int) -> str:
    """Cap this process's CUDA allocations at the device budget less the runtime's own device memory
    (``runtime_bytes``: CUDA context and library workspaces, which the allocator never sees) on discrete GPUs;
    returns what was done."""
    if device.type != "cuda" or budget.unified or budget.device_bytes is None:
        return "no allocator cap" if device.type == "cuda" else "cpu: no device cap"
    index = device.index if device.index is not None else torch.cuda.current_device()
    total = torch.cuda.get_device_properties(index).total_memory
    fraction = min(1.0, max(0.0, budget.device_bytes - runtime_bytes) / total)
    torch.cuda.set_per_process_memory_fraction(fraction, index)  # wants an index, not a bare "cuda"
    return (f"allocator capped at {fraction:.3f} of {total / 1024**3:.1f} GiB (the budget less "
            f"{runtime_bytes / 1024**3:.2f} GiB for the CUDA runtime)")  # fmt: skip


def nvml_used_bytes(device: torch.device) -> int | None:
    """Device memory in use as NVML sees it (CUDA context and library workspaces included), if available."""
    if device.type != "cuda":
        return None
    try:
        return int(torch.cuda.device_memory_used(device))
    except Exception:  # NVML missing or not permitted: the report says "unavailable"
        return None
