"""Fitting one stage into the budget: how many of its repeated blocks stay resident, where the rest wait.

The rule, for a stage of fixed tensors + N equal-role blocks + an activation working set:
* all resident when fixed + blocks + activations + slack fit;
* else K resident blocks, K maximal, and N - K streamed through min(P + 1, N - K) preallocated slots of
  the largest streamed block's size (P = prefetch depth);
* streamed blocks wait in pinned host memory when a discrete GPU's host budget holds them; else in the
  checkpoint file (one pinned bounce buffer on a discrete GPU).
* with one memory pool (a Jetson, or ``--unified``) no pinned host copy of a block is ever made: it would be a
  second copy in the same DRAM, counted against the pool, while the page cache of the file is not. Streamed
  blocks are read from the file into their slots through ``FileSource``'s staging ring (two pinned buffers of
  at most 64 MiB), which is counted inside the pool; the technique says so (``ONE_POOL_NOTE``).
* a denoising stage that will capture a CUDA graph (``plan.step_time.will_graph``) also keeps room for the
  capture (``capture_room_bytes``): the graph's private pool cannot reuse what the eager steps cached.
Time per step is max(compute, copy): prefetch overlaps the copy of the next blocks with this block's
compute. Pure arithmetic over header bytes; never allocates, never reads a weight.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace

from ltx2_edge.checkpoint.header import DTYPE_BYTES, TensorInfo
from ltx2_edge.plan.budget import Budget, format_gib
from ltx2_edge.plan.flops import FlopCount
from ltx2_edge.plan.plan_types import PlanRequest, StagePlan
from ltx2_edge.plan.profiles import DeviceProfile
from ltx2_edge.plan.stage_time import StageLoad, stage_time
from ltx2_edge.plan.step_time import DenoiseShape, will_graph

MiB = 1024**2
# Per stage, beyond the counted bytes: what the allocator reserves but has not allocated, and estimation error.
# Measured on the H100 (bench/budget_proof.py, 2026-11-24): PyTorch's default caching allocator reserved up to
# 0.8 GiB over its allocated peak (the VAE decode's many sizes); with expandable segments 0.05-0.3 GiB.
SLACK_BYTES = 512 * MiB
SLACK_EXPANDABLE_BYTES = 256 * MiB
SCALE_BYTES = 4  # one FP32 scale per output channel of a quantized weight
# streaming.sources.FileSource's staging ring: 2 pinned buffers of min(64 MiB, the largest streamed block).
FILE_STAGING_BUFFERS, FILE_STAGING_CHUNK = 2, 64 * MiB
ONE_POOL_NOTE = (
    "; one pool: no pinned host copy of a block (it would be a second copy in the same DRAM), blocks read from the "
    "file's page cache (not counted) into their slots through a {ring} staging ring (counted)"
)

IsQuantized = Callable[[str], bool]

# A captured forward's peak over the eager one's, against the predicted activations a (GiB): resident graphed W1,
# 10 s and 20 s clips at 32 GiB on the H200 (calls 12-13, 2026-12-03: a = 0.74 / 1.68 / 3.26 GiB, measured peak over
# the eager prediction +0.13 / +0.98 / +2.77 GiB) fit ~0.26 a^2, and captures at 16 GiB (10 s and 20 s clips) that
# the eager prediction left 0.07-0.12 GiB for ran out of memory. Growing faster than the activations: the graph's
# pool (no expandable segments) fragments over a forward's largest buffers, which grow with the tokens.
CAPTURE_ROOM_PER_GIB2 = 0.26


def capture_room_bytes(activations: int) -> int:
    """Device bytes a CUDA graph's capture needs beyond the eager forward's activations."""
    return int(CAPTURE_ROOM_PER_GIB2 * activations * activations / 2**30)


@dataclass(frozen=True)
class Weights:
    """A stage's weights in device bytes: ``fixed`` always resident, ``units`` the streamable blocks in order;
    ``file_bytes``: what loading them reads from the files (a BF16 file quantized at load reads twice its device
    bytes; None: the device bytes); ``unit_file_bytes``: each unit's share of it (empty: not split)."""

    fixed: int
    units: tuple[int, ...]
    file_bytes: int | None = None
    unit_file_bytes: tuple[int, ...] = ()

    @property
    def total(self) -> int:
        return self.fixed + sum(self.units)

    @property
    def read_bytes(self) -> int:
        """Bytes read from the files to load these weights once."""
        return self.total if self.file_bytes is None else self.file_bytes


@dataclass(frozen=True)
class Shortfall:
    """A stage that cannot fit: the least it needs, and why. ``host``: the host budget, not the device, is short."""

    stage: str
    need: int
    why: str
    host: bool = False


def allowance(request: PlanRequest, profile: DeviceProfile) -> tuple[int, int]:
    """What every stage's peak carries beyond its counted bytes: (allocator slack, the runtime's device memory)."""
    slack = SLACK_EXPANDABLE_BYTES if request.expandable_segments else SLACK_BYTES
    return slack, profile.runtime_overhead_bytes


class FitContext:
    """What fitting any stage needs: the request, the budget, the device's rates and the precision policy."""

    def __init__(self, request: PlanRequest, budget: Budget, profile: DeviceProfile, is_quantized: IsQuantized) -> None:
        self.request, self.budget, self.profile = request, budget, profile
        self.quantized: IsQuantized = is_quantized if request.precision != "bf16" else (lambda _: False)

    @property
    def pool_extra(self) -> int:
        """Bytes every stage adds to the budgeted memory besides its own: slack, and the runtime's device memory
        (CUDA context, library workspaces: outside the allocator, inside what the device or the pool holds)."""
        return sum(allowance(self.request, self.profile))

    def avail(self) -> float:
        return math.inf if self.budget.device_bytes is None else self.budget.device_bytes

    def device_bytes(self, info: TensorInfo) -> int:
        """Bytes on the device: a quantized matrix at 1 byte per weight + an FP32 scale per row; floats as BF16."""
        if len(info.shape) == 2 and self.quantized(info.name) and DTYPE_BYTES[info.dtype] > 1:
            return info.numel + info.shape[0] * SCALE_BYTES
        if info.name.endswith(".weight_scale"):  # a pre-quantized file's scales stay FP32 on the device
            return info.nbytes
        return info.numel * min(DTYPE_BYTES[info.dtype], 2) if info.dtype.startswith(("F", "BF")) else info.nbytes

    def weights(self, tensors: dict[str, TensorInfo], unit_prefix: str | None) -> Weights:
        """Group ``tensors`` into fixed bytes and per-block bytes (blocks are ``{unit_prefix}N.*``)."""
        fixed, units, unit_file = 0, {}, {}
        for name, info in tensors.items():
            if unit_prefix is not None and name.startswith(unit_prefix):
                idx = int(name[len(unit_prefix) :].split(".", 1)[0])
                units[idx] = units.get(idx, 0) + self.device_bytes(info)
                unit_file[idx] = unit_file.get(idx, 0) + info.nbytes
            else:
                fixed += self.device_bytes(info)
        order = sorted(units)
        return Weights(fixed, tuple(units[i] for i in order), sum(t.nbytes for t in tensors.values()),
                       tuple(unit_file[i] for i in order))  # fmt: skip

    def seconds(self, flops: FlopCount) -> float:
        """The compute floor: each kernel class's FLOPs over the profile's rate for it."""
        p = self.profile
        linear = flops.linear_quantized / p.linear_tflops(self.request.precision) + flops.linear_bf16 / p.bf16_tflops
        return (linear + flops.attention / p.attention_tflops + flops.conv / p.conv_tflops) / 1e12


def file_staging_bytes(slot: int) -> int:
    """Pinned bytes of ``FileSource``'s staging ring for blocks of at most ``slot`` bytes (0 when none stream)."""
    return FILE_STAGING_BUFFERS * min(FILE_STAGING_CHUNK, slot)


def _residency(ctx: FitContext, base: int, units: tuple[int, ...],
               room: Callable[[int], int] = lambda k: 0) -> tuple[int, int, int] | None:  # fmt: skip
    """(K resident, slots, slot bytes) with K maximal such that base + resident + slots (+ the staging ring inside
    one pool, when blocks stream, + ``room(K)``) fit; None if K=0 fails."""
    for k in range(len(units), -1, -1):
        streamed = units[k:]
        slots = min(ctx.request.prefetch_depth + 1, len(streamed))
        slot = max(streamed, default=0)
        ring = file_staging_bytes(slot) if ctx.budget.unified else 0
        if base + sum(units[:k]) + slots * slot + ring + room(k) <= ctx.avail():
            return k, slots, slot
    return None


def _tier(ctx: FitContext, streamed: int, host: int) -> str:
    """Where ``streamed`` bytes of blocks wait, with ``host`` bytes already in host memory."""
    budget = ctx.budget
    if not streamed:
        return "resident"
    if not budget.unified and (budget.host_bytes is None or host + streamed <= budget.host_bytes):
        return "pinned"
    return "file"


def fit_stage(
    ctx: FitContext,
    name: str,
    w: Weights,
    activations: int,
    flops: FlopCount,
    steps: int,
    unit_word: str,
    host_held: int = 0,
    shape: DenoiseShape | None = None,
) -> StagePlan | Shortfall:
    """Plan one stage (``steps`` passes of ``flops``), or say the least it needs. ``host_held``: anonymous host
    bytes the stage keeps (decoded frames), inside the pool when there is one pool. ``shape``: a denoising
    forward's blocks and rows, for the step model (``plan.step_time``) when the profile has step timings."""
    p, budget, n = ctx.profile, ctx.budget, len(w.units)
    in_pool = ctx.pool_extra + (host_held if budget.unified else 0)
    base = w.fixed + activations + in_pool
    host_base = host_held + (0 if budget.unified else p.runtime_overhead_bytes)
    step_t = p.timings.step if shape is not None else None

    def room(k: int) -> int:
        streamed = sum(w.units[k:])
        graphed = step_t is not None and will_graph(step_t, ctx.request.cuda_graph, n - k, steps,
                                                    _tier(ctx, streamed, host_base))  # fmt: skip
        return capture_room_bytes(activations) if graphed else 0

    choice = _residency(ctx, base, w.units, room)
    no_room = False
    if choice is None and step_t is not None:
        # Fits eager, not with a capture's room: planned (and run) without a graph rather than refused.
        choice = _residency(ctx, base, w.units)
        no_room = choice is not None
    if choice is None:
        slots, slot = min(ctx.request.prefetch_depth + 1, n), max(w.units, default=0)
        ring = file_staging_bytes(slot) if budget.unified else 0
        parts = [f"non-{unit_word} weights {format_gib(w.fixed)}", f"{slots} slots of {format_gib(slot)}"]
        parts = parts if n else [f"weights {format_gib(w.fixed)}"]
        why = ", ".join([*parts, f"activations {format_gib(activations)}", f"slack {format_gib(in_pool)}"])
        return Shortfall(name, base + slots * slot + ring, why + (f", staging {format_gib(ring)}" if ring else ""))
    k, slots, slot = choice
    streamed = sum(w.units[k:])
    slots, slot = (slots, slot) if streamed else (0, 0)
    ring = file_staging_bytes(slot) if streamed and budget.unified else 0
    host, tier = host_base, _tier(ctx, streamed, host_base)
    if tier == "pinned":
        host += streamed
    elif tier == "file":
        host += 0 if budget.unified else slot
    if not budget.unified and budget.host_bytes is not None and host > budget.host_bytes:
        return Shortfall(name, host, "runtime, bounce buffer and decoded frames in host memory", host=True)
    compute = ctx.seconds(flops)
    copy = streamed / ((p.h2d_pinned_gbps if tier == "pinned" else p.file_read_warm_gbps) * 1e9)
    if streamed:
        source = "pinned host" if tier == "pinned" else "the checkpoint file"
        technique = (
            f"{k} of {n} {unit_word}s resident, {n - k} spread between them streamed from {source} through {slots}"
            f" slots"
            f" (prefetch depth {ctx.request.prefetch_depth})"
        )
        if ring:
            technique += ONE_POOL_NOTE.format(ring=f"{ring // MiB} MiB")
    else:
        technique = f"all resident ({n} {unit_word}s)" if n else "all resident"
    resident = w.fixed + sum(w.units[:k])
    block_copy = slot / ((p.h2d_pinned_gbps if tier == "pinned" else p.file_read_warm_gbps) * 1e9)
    # Without step timings a pass takes max(compute, copy): prefetch overlaps the copies with the compute.
    request = replace(ctx.request, cuda_graph=False) if no_room else ctx.request
    timed = stage_time(ctx.profile, request, name, _stage_load(ctx, w, k, tier), flops, max(compute, copy), steps,
                       block_copy, k, slots, shape, tier)  # fmt: skip
    if no_room:
        technique += "; no CUDA graph: the budget leaves no room for its capture"
    bound = "compute" if compute >= copy else ("copy" if tier == "pinned" else "disk")
    steps_timed = timed.steps
    return StagePlan(
        name=name,
        weights_resident_bytes=resident,
        weights_streamed_bytes=streamed,
        slot_bytes=slot,
        n_slots=slots,
        activations_bytes=activations,
        predicted_peak_bytes=resident + slots * slot + activations + in_pool + ring + (0 if no_room else room(k)),
        resident_units=k,
        streamed_units=n - k,
        source_tier=tier,
        tiles=None,
        bytes_moved_per_step=streamed,
        predicted_seconds=timed.compute_s,
        bottleneck=steps_timed.bound if steps_timed is not None else bound,  # type: ignore[arg-type]
        technique=technique,
        host_bytes=host,
        steps=steps,
        compute_seconds_per_step=compute,
        copy_seconds_per_step=copy,
        file_read_bytes=w.read_bytes,
        cold_load_seconds=w.read_bytes / (p.file_read_cold_gbps * 1e9),
        warm_load_seconds=w.read_bytes / (p.file_read_warm_gbps * 1e9),
        flops_per_step=flops.total,
        load_seconds=timed.load_s,
        setup_seconds=timed.setup_s,
        mp4_seconds=timed.mp4_s,
        steady_step_seconds=steps_timed.steady_s if steps_timed is not None else 0.0,
        first_steps_seconds=steps_timed.first_s if steps_timed is not None else 0.0,
        capture_seconds=steps_timed.capture_s if steps_timed is not None else 0.0,
        graphed=steps_timed.graphed if steps_timed is not None else False,
        no_capture_room=no_room,
        time_note=timed.note,
    )


def _stage_load(ctx: FitContext, w: Weights, k: int, tier: str) -> StageLoad:
    """What loading the stage reads: the fixed part and the K resident units; streamed units too when they wait in
    pinned host memory (read, quantized on the device, packed); from the file they are not loaded."""
    unit_read = w.unit_file_bytes or tuple(0 for _ in w.units)
    fixed_read = w.read_bytes - sum(unit_read)
    pinned = tier == "pinned"
    return StageLoad(fixed_read, sum(unit_read[:k]), sum(unit_read[k:]) if pinned else 0,
                     sum(w.units[k:]) if pinned else 0, ctx.request.precision != "bf16")  # fmt: skip
