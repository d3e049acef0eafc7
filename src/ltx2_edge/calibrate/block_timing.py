"""Calibrate's step timings: the run's denoising loop (``stages.denoise.denoise``, ``accel``'s StepEngine, StepGraph
and step invariants) on mini transformers of 2 and 4 blocks at the checkpoint's width, eager and CUDA-graphed.

Per shape (rows = CFG batch 2 x (video + audio tokens)), both models, steps timed as a run times them (device
synchronised before each step's timer is read): eager with text K/V every step (as streamed runs run), graphed with
text K/V frozen (as resident runs run), and the 4-block model with blocks 1 and 3 streamed from pinned memory
(``S4``, eager, the run's ``BlockStreamer``; at these sizes the copies finish behind the resident blocks, so what it
adds over ``E4`` is a streamed block's own cost). Then, per block: ``(t4 - t2) / 2``; outside the blocks:
``t2 - 2 x block``; a streamed block's extra: ``(S4 - E4) / 2``.
What a block takes over its FLOP floor (``plan.step_time.floor_seconds`` with this calibration's own rates) becomes
a line in rows through two shapes; the launch floor is an eager block at a small shape; step 0's extra and the
capture become lines in blocks (first runs at a shape are "cold": new cuBLAS/Triton plans). The SDPA backend is
timed at each shape first, as a run does. Nothing here is fitted to a run: the runs check it.
"""

from __future__ import annotations

import statistics
import sys
import time
import traceback
from collections.abc import Callable
from copy import deepcopy
from dataclasses import dataclass

import torch

from ltx2_edge.accel import attention
from ltx2_edge.accel.engine import AccelSettings
from ltx2_edge.checkpoint.names import TEXT_CONTEXT_TOKENS
from ltx2_edge.guidance import Guidance
from ltx2_edge.plan.activations import token_counts
from ltx2_edge.plan.block_placement import streamed_positions
from ltx2_edge.plan.flops import block_flops
from ltx2_edge.plan.planner import quantized_predicate
from ltx2_edge.plan.profiles import DeviceProfile
from ltx2_edge.plan.step_time import BLOCK_PREFIX, floor_seconds
from ltx2_edge.plan.timings import Line, StepTimings
from ltx2_edge.quant.policy import QuantPolicy
from ltx2_edge.stages.denoise import Contexts, denoise, official_sigmas
from ltx2_edge.stages.latents import noised_latents, pixel_shape
from ltx2_edge.streaming.sources import PinnedHostSource
from ltx2_edge.streaming.streamer import BlockStreamer

BATCH = 2  # CFG: cond + uncond in one forward, as W1 runs
FPS = 24.0


class StepTimingRefused(RuntimeError):
    """No shape of a needed role could run on this device (each refusal in the message)."""


@dataclass(frozen=True)
class StepShape:
    """A clip size the step timings are measured at."""

    width: int
    height: int
    frames: int


# (small: the launch floor, mid, large). GPU: about 0.1, 0.8 and 2.1 x W1's rows, at W1's 512x288 (the large one
# near a 10 s clip); none is W1 itself, whose GEMM shapes calibrate's GEMM step has already warmed.
GPU_SHAPES = (StepShape(256, 160, 25), StepShape(512, 288, 81), StepShape(512, 288, 225))
CPU_SHAPES = (None, StepShape(128, 96, 17), StepShape(128, 96, 41))
# Where a kernel refuses a shape (cuBLASLt's FP8 heuristics have refused some: CUBLAS_STATUS_NOT_SUPPORTED), the
# same role is measured at a shape the runs themselves use: W1 for the mid one, the 10 s clip for the large one, and
# for the launch floor W1's size at 17 frames (on the H200, 2026-12-03, the small shape was refused and the floor
# went unmeasured: eager blocks were then priced below what the 16 GiB run's streamed steps took).
GPU_FALLBACKS = (StepShape(512, 288, 17), StepShape(512, 288, 97), StepShape(512, 288, 241))


@dataclass(frozen=True)
class Run:
    """One ``denoise`` call's step seconds; ``first_steady``: the first step that is a steady one (eager 1: step 0
    meets new shapes; graphed 2: step 1 captures)."""

    seconds: tuple[float, ...]
    first_steady: int = 1

    @property
    def steady(self) -> float:
        """Median of the steady steps."""
        return statistics.median(self.seconds[self.first_steady :])


def _contexts(config: dict, device: torch.device, dtype: torch.dtype) -> Contexts:
    width = config["transformer"]["caption_channels"]
    gen = torch.Generator(device=device).manual_seed(1)
    return Contexts(*(torch.randn(1, TEXT_CONTEXT_TOKENS, width, device=device, dtype=dtype, generator=gen)
                      for _ in range(4)))  # fmt: skip


def run_steps(model: torch.nn.Module, config: dict, shape: StepShape, steps: int, device: torch.device,
              dtype: torch.dtype, accel: AccelSettings) -> Run:  # fmt: skip
    """``steps`` denoising steps of ``model`` at ``shape`` with CFG, through the run's ``denoise``."""
    setup = noised_latents(pixel_shape(shape.width, shape.height, shape.frames, FPS),
                           torch.Generator(device=device).manual_seed(0), device, dtype)  # fmt: skip
    times: list[float] = []
    sync = torch.cuda.synchronize if device.type == "cuda" else None
    denoise(model, setup.video_state, setup.audio_state, official_sigmas(steps, device),
            _contexts(config, device, dtype), Guidance.preset_named("cfg"), on_step=lambda i, n, s: times.append(s),
            synchronize=sync, accel=accel)  # fmt: skip
    return Run(tuple(times), 2 if accel.cuda_graph else 1)


@dataclass(frozen=True)
class ShapeRuns:
    """Everything timed at one shape: rows, the SDPA choice's seconds, and the runs by name (E2c cold, E2, E4, G2,
    G4), with this shape's FLOP floors of one block (text K/V computed, and frozen)."""

    rows: int
    choice_s: float
    runs: dict[str, Run]
    floor_block: float
    floor_block_frozen: float

    def block(self, mode: str) -> float:
        return (self.runs[f"{mode}4"].steady - self.runs[f"{mode}2"].steady) / 2

    def fixed(self, mode: str) -> float:
        return self.runs[f"{mode}2"].steady - 2 * self.block(mode)

    def streamed_extra(self) -> float | None:
        """What each of S4's 2 streamed blocks took over a resident eager one (None: S4 not run)."""
        if "S4" not in self.runs:
            return None
        return (self.runs["S4"].steady - self.runs["E4"].steady) / 2


def time_shape(models: dict[int, torch.nn.Module], config: dict, shape: StepShape, device: torch.device,
               dtype: torch.dtype, profile: DeviceProfile, precision: str, graphs: bool, steps: int,
               streamed: torch.nn.Module | None = None) -> ShapeRuns:  # fmt: skip
    """Every run at ``shape``: the SDPA backend timed, then E2 (cold), E2, E4, S4 on ``streamed`` (when given) and,
    with ``graphs``, G2 and G4."""
    tokens = token_counts(config, shape.width, shape.height, shape.frames, FPS)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    sync()
    start = time.perf_counter()
    backend, _ = attention.choose_backend(
        attention.step_shapes(config, BATCH, tokens.video, tokens.audio, TEXT_CONTEXT_TOKENS), device, dtype
    )
    choice_s = time.perf_counter() - start
    eager = AccelSettings(attention=backend)
    graphed = AccelSettings(cuda_graph=True, freeze_text_kv=True, attention=backend)
    runs = {"E2c": run_steps(models[2], config, shape, steps, device, dtype, eager)}
    runs["E2"] = run_steps(models[2], config, shape, steps, device, dtype, eager)
    runs["E4"] = run_steps(models[4], config, shape, steps, device, dtype, eager)
    if streamed is not None:
        runs["S4"] = run_steps(streamed, config, shape, steps, device, dtype, eager)
    if graphs:
        for n in (2, 4):
            runs[f"G{n}"] = run_steps(models[n], config, shape, steps + 2, device, dtype, graphed)
            torch.cuda.empty_cache()  # the graph's pool goes before the next run allocates
    block, kv = block_flops(config, tokens, BATCH, quantized_predicate(QuantPolicy.from_flags(precision)), BLOCK_PREFIX)
    return ShapeRuns(BATCH * (tokens.video + tokens.audio), choice_s, runs, floor_seconds(profile, precision, block),
                     floor_seconds(profile, precision, block + kv.scaled(-1.0)))  # fmt: skip


def _through(points: list[tuple[float, float]]) -> Line:
    (x0, y0), (x1, y1) = points[0], points[-1]
    return Line.through(x0, y0, x1, y1)


def fit_step_timings(small: ShapeRuns | None, mid: ShapeRuns, large: ShapeRuns, graphs: bool, how: str,
                     ) -> StepTimings:  # fmt: skip
    """The step model from the runs (``StepTimings``' fields; see the module docstring)."""
    pair = (mid, large)
    launch = max(0.0, small.block("E")) if small is not None else 0.0  # noise can make 4 blocks look faster
    eager_res = [(s.rows, s.block("E") - s.floor_block) for s in pair]

    def first(s: ShapeRuns, mode: str) -> tuple[float, float]:
        """(step 0's extra at 2 blocks on a cold shape, its extra per block) over the steady eager step: the extra
        per block from the warm runs (2 and 4 blocks), the shape's own cost from the cold run over the warm one."""
        w2 = s.runs[f"{mode}2"].seconds[0] - s.runs["E2"].steady
        w4 = s.runs[f"{mode}4"].seconds[0] - s.runs["E4"].steady
        per_block = max(0.0, (w4 - w2) / 2)
        shape_cost = max(0.0, (s.runs["E2c"].seconds[0] - s.runs["E2c"].steady) - (s.runs["E2"].seconds[0]
                                                                                    - s.runs["E2"].steady))  # fmt: skip
        return shape_cost + w2, per_block

    def mean_line(values: list[tuple[float, float]]) -> Line:
        at2 = statistics.fmean(v[0] for v in values)
        per = statistics.fmean(v[1] for v in values)
        return Line(at2 - 2 * per, per)

    eager_first = mean_line([first(s, "E") for s in pair])
    fields: dict = {}
    if graphs:
        graph_res = [(s.rows, s.block("G") - s.floor_block_frozen) for s in pair]
        graph_block = _through(graph_res)
        # Eager over graphed where the GPU, not the launches, bounds the block (the large shape).
        extra = eager_res[-1][1] - graph_res[-1][1]
        eager_block = Line(graph_block.at_zero + extra, graph_block.per_unit)
        captures = []
        for s in pair:
            c2 = s.runs["G2"].seconds[1] - s.runs["E2"].steady - s.runs["G2"].steady
            c4 = s.runs["G4"].seconds[1] - s.runs["E4"].steady - s.runs["G4"].steady
            captures.append((c2, max(0.0, (c4 - c2) / 2)))
        fields = {
            "graph_block": graph_block,
            "graph_fixed": _through([(s.rows, s.fixed("G")) for s in pair]),
            "graph_first_step": mean_line([first(s, "G") for s in pair]),
            "capture": mean_line(captures),
        }
    else:
        eager_block = _through(eager_res)
    extras = [s.streamed_extra() for s in pair]
    if all(e is not None for e in extras):  # about constant in rows (host work): the pair's mean
        fields["streamed_block_s"] = max(0.0, statistics.fmean(e for e in extras if e is not None))
    return StepTimings(eager_block=eager_block, eager_fixed=_through([(s.rows, s.fixed("E")) for s in pair]),
                       launch_block_s=launch, eager_first_step=eager_first, backend_choice_s=mid.choice_s,
                       rows=tuple(s.rows for s in (small, mid, large) if s is not None), how=how, **fields)  # fmt: skip


def streamed_mini(model: torch.nn.Module, device: torch.device) -> tuple[torch.nn.Module, BlockStreamer]:
    """A copy of the 4-block ``model`` with blocks 1 and 3 streamed from pinned host memory through 3 slots, as
    ``models.streamed_blocks`` streams a run's (``plan.block_placement``: 2 of 4 spread); close the streamer after."""
    copy = deepcopy(model)
    blocks = getattr(copy, "velocity_model", copy).transformer_blocks
    streamed = streamed_positions(len(blocks), len(blocks) - 2)
    source = PinnedHostSource.from_modules({i: blocks[i] for i in streamed})
    resident = [i for i in range(len(blocks)) if i not in streamed]
    return copy, BlockStreamer(blocks, source, resident, device=device, prefetch=2)


def measure_step_timings(models: dict[int, torch.nn.Module], config: dict, device: torch.device, dtype: torch.dtype,
                         profile: DeviceProfile, precision: str, quick: bool,
                         progress: Callable[[str], None] = lambda _: None) -> tuple[StepTimings, dict]:  # fmt: skip
    """Time every shape and fit ``StepTimings``; also returns the raw runs (for the profile's detail)."""
    graphs = device.type == "cuda"
    shapes = GPU_SHAPES if device.type == "cuda" else CPU_SHAPES
    fallbacks = GPU_FALLBACKS if device.type == "cuda" else (None, None, None)
    steps = 3 if quick else 5
    measured: list[ShapeRuns | None] = []
    used: list[StepShape] = []
    refused: list[str] = []
    s4 = "a streamed block's extra (S4 - E4) / 2, blocks 1 and 3 of 4 streamed from pinned memory"
    try:
        streamed, streamer = streamed_mini(models[4], device)
    except (RuntimeError, ValueError) as exc:  # the rest of the step timings stand without it: say so
        streamed, streamer = None, None
        s4 = f"a streamed block's extra not measured ({type(exc).__name__}: {str(exc).splitlines()[0][:160]})"
        traceback.print_exc(file=sys.stderr)
    try:
        for role, (shape, fallback) in enumerate(zip(shapes, fallbacks, strict=True)):
            if shape is None or (quick and role == 0):
                measured.append(None)
                continue
            runs = None
            for candidate in (shape, fallback):
                if candidate is None:
                    continue
                name = f"{candidate.width}x{candidate.height}x{candidate.frames}"
                progress(f"steps at {name}")
                try:
                    runs = time_shape(models, config, candidate, device, dtype, profile, precision,
                                      graphs and role > 0, steps, streamed if role > 0 else None)  # fmt: skip
                except RuntimeError as exc:  # a kernel that refuses a shape: say so, try the role's next shape
                    refused.append(f"{name}: {str(exc).splitlines()[0][:200]}")
                    traceback.print_exc(file=sys.stderr)
                    if streamer is not None:
                        streamer.reset()  # a forward that raised part-way leaves the streamed sequence mid-step
                    continue
                used.append(candidate)
                break
            if runs is None and role > 0:  # only the small shape (the launch floor) is optional
                raise StepTimingRefused("; ".join(refused))
            measured.append(runs)
    finally:
        if streamer is not None:
            streamer.close()
        del streamed
    small, mid, large = measured
    assert mid is not None and large is not None
    where = ", ".join(f"{s.width}x{s.height}x{s.frames}" for s in used)
    skipped = f"; refused, so measured elsewhere or left out: {'; '.join(refused)}" if refused else ""
    how = (f"the run's denoise loop on {precision} mini transformers of 2 and 4 blocks at the checkpoint's width, "
           f"CFG batch {BATCH}, at {where}; per block (t4 - t2) / 2 over its FLOP floor at this profile's rates; "
           f"{s4}; "
           f"{'eager and CUDA-graphed' if graphs else 'eager (no CUDA graph here)'}{skipped}")  # fmt: skip
    detail = {f"{s.rows} rows": {"choice_s": round(s.choice_s, 4), "floor_block_s": s.floor_block,
                                 **{k: [round(x, 5) for x in r.seconds] for k, r in s.runs.items()}}
              for s in measured if s is not None}  # fmt: skip
    return fit_step_timings(small, mid, large, graphs, how), detail
