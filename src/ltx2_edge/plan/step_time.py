"""A denoising stage's steps in seconds: the FLOP floor plus what calibrate measured beyond it, with the copies of
streamed blocks overlapped as the streamer overlaps them.

Per block: ``floor(block FLOPs) + line(rows)`` (``plan.timings.StepTimings``); CUDA-graphed when the run will
graph (every block resident or streamed from pinned memory, enough replays, a device with graph timings,
``PlanRequest.cuda_graph``), else eager, and an eager block never faster than the launch floor. Text K/V are
frozen (computed once, at step 0) when every block is resident, as ``accel.settings`` decides. Per step: the blocks
plus the work outside them (``fixed``). Steps:
- graphed: step 0 eager (text K/V computed) + its first-step extra; step 1 its warm-up forward (eager) + the
  capture + one replay; the other steps replay;
- eager: step 0 (text K/V computed) + its first-step extra, then steady steps.
With streamed blocks a step is a pipeline (``pipeline_steps``): the blocks run in order, the streamed ones spread
between the resident ones (``plan.block_placement``), each streamed block waiting for its copy; a copy starts when
the previous copy is done and its slot's last block has computed (the streamer's rule); the first ``slots`` copies
are issued when streaming starts; graphed, a step also waits for its own copies (the graph ends with them). Pure
arithmetic, never imports torch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from ltx2_edge.plan.activations import TokenCounts
from ltx2_edge.plan.block_placement import run_order
from ltx2_edge.plan.flops import FlopCount, block_flops
from ltx2_edge.plan.profiles import DeviceProfile
from ltx2_edge.plan.timings import StepTimings

# A CUDA graph is captured only when at least this many replays follow (steps - 2): the run's rule
# (``accel.settings`` imports it) and the planner's. Capturing the whole forward costs a warm-up forward plus the
# capture (0.6-1.1 s measured on the H100 at W1); each replay saves the launch overhead of one eager forward (0.262 ->
# 0.205 s at W1, fp8). Break-even is 10-19 replays: a 20-step run (18 replays) captures, the 8 distilled steps and the
# 3 stage-2 steps run eager (measured: a 3-step stage 2 at 1024x576 took 2.5 s captured, 1.6 s streamed, uncaptured).
GRAPH_MIN_REPLAYS = 10
BLOCK_PREFIX = "model.diffusion_model.transformer_blocks.0."


def floor_seconds(profile: DeviceProfile, precision: str, flops: FlopCount) -> float:
    """Each kernel class's FLOPs over the profile's rate for it (the compute floor)."""
    p = profile
    linear = flops.linear_quantized / p.linear_tflops(precision) + flops.linear_bf16 / p.bf16_tflops
    return (linear + flops.attention / p.attention_tflops + flops.conv / p.conv_tflops) / 1e12


@dataclass(frozen=True)
class DenoiseShape:
    """One denoising forward as the step model sees it: ``rows`` through each block (guidance batch x (video +
    audio tokens)) and ``blocks`` blocks of ``block`` FLOPs, ``text_kv`` of them the text K/V projections. The work
    outside the blocks (about 2 % of W1's FLOPs) is priced by the measured ``fixed`` line alone."""

    rows: int
    blocks: int
    block: FlopCount
    text_kv: FlopCount


def denoise_shape(config: dict[str, Any], tokens: TokenCounts, batch: int, quantized: Any) -> DenoiseShape:
    """The shape of one forward of ``batch`` samples at ``tokens`` (keyframe tokens counted in ``tokens.video``)."""
    block, kv = block_flops(config, tokens, batch, quantized, BLOCK_PREFIX)
    return DenoiseShape(batch * (tokens.video + tokens.audio), config["transformer"]["num_layers"], block, kv)


def _minus(a: FlopCount, b: FlopCount) -> FlopCount:
    return a + b.scaled(-1.0)


@dataclass(frozen=True)
class StepPrediction:
    """The steps of one denoising stage: ``seconds`` all of them; ``steady_s`` one step after the first ones;
    ``first_s`` step 0 (graphed: steps 0 and 1, capture included); ``capture_s`` the capture's share;
    ``compute_s`` one steady step's compute alone (no waiting on copies); ``graphed``/``frozen_text_kv`` the
    accelerations assumed; ``bound``: compute, copy or disk."""

    seconds: float
    steady_s: float
    first_s: float
    capture_s: float
    compute_s: float
    block_s: float
    graphed: bool
    frozen_text_kv: bool
    bound: str
    note: str


def will_graph(t: StepTimings, cuda_graph: bool, streamed: int, steps: int, tier: str = "pinned") -> bool:
    """The run's CUDA-graph rule (``accel.settings.choose_accel``) as the planner can see it: blocks resident or
    streamed from pinned memory (``tier``), enough replays, and graph timings on this device."""
    capturable = streamed == 0 or tier == "pinned"
    return t.graph_block is not None and cuda_graph and capturable and steps - 2 >= GRAPH_MIN_REPLAYS


def pipeline_steps(order: Sequence[bool], slots: int, block_s: float, copy_s: float, fixed_s: float,
                   steps: int, streamed_block_s: float | None = None, join: bool = False) -> list[float]:  # fmt: skip
    """Seconds of each step when the blocks run in ``order`` (True: streamed through ``slots`` slots), each
    ``block_s`` (a streamed one ``streamed_block_s`` when given), then ``fixed_s`` (the rest of the step).

    As the streamer runs them: the streamed block at position ``p`` uses slot ``p % slots``; positions
    ``0..slots-1`` are copied from time 0; when a streamed block has computed, the next block of its slot is
    copied (``p + slots``, or the next step's first block in that slot), starting once that block is done and the
    copy stream has finished the copies asked for before it, lasting ``copy_s``; a streamed block starts at
    max(the previous block done, its copy done). ``join`` (a CUDA graph): a step ends only when its copies are
    done too.
    """
    m = sum(order)
    streamed_s = block_s if streamed_block_s is None else streamed_block_s
    slots = min(slots, m) if m else slots
    copy_done: dict[int, float] = {}  # load n = step * m + position -> when its copy is done
    stream_free = 0.0
    for n in range(slots):
        stream_free += copy_s
        copy_done[n] = stream_free
    t, out, n = 0.0, [], 0
    for _ in range(steps):
        begin = t
        for is_streamed in order:
            if not is_streamed:
                t += block_s
                continue
            t = max(t, copy_done.pop(n)) + streamed_s
            pos = n % m
            nxt = n + slots if pos + slots < m else n - pos + m + pos % slots
            stream_free = max(stream_free, t) + copy_s
            copy_done[nxt] = stream_free
            n += 1
        t += fixed_s
        if join:
            t = max(t, stream_free)
        out.append(t - begin)
    return out


def predict_steps(profile: DeviceProfile, precision: str, shape: DenoiseShape, steps: int, resident: int, slots: int,
                  copy_s: float, cuda_graph: bool, tier: str = "pinned") -> StepPrediction | None:  # fmt: skip
    """The stage's steps under ``profile.timings.step`` (None when the profile has none). ``resident`` of
    ``shape.blocks`` blocks stay; the rest stream from ``tier`` (pinned or file) through ``slots`` slots,
    ``copy_s`` each."""
    t = profile.timings.step
    if t is None:
        return None
    streamed = shape.blocks - resident
    graphed = will_graph(t, cuda_graph, streamed, steps, tier)
    frozen = streamed == 0
    rows = shape.rows
    copy_bound_word = "copy" if tier == "pinned" else "disk"

    def eager_block(freeze: bool) -> float:
        floor = floor_seconds(profile, precision, _minus(shape.block, shape.text_kv) if freeze else shape.block)
        return max(floor + t.eager_block.at(rows), t.launch_block_s)

    eager_fixed = max(0.0, t.eager_fixed.at(rows))
    eager_step_fresh = eager_fixed + shape.blocks * eager_block(False)  # step 0: every text K/V computed
    if graphed and streamed:
        return _graphed_streamed(profile, precision, shape, steps, resident, slots, copy_s, eager_block(False),
                                 eager_fixed, eager_step_fresh)  # fmt: skip
    if graphed:
        assert t.graph_block is not None and t.graph_fixed is not None  # will_graph checked graph_block
        floor = floor_seconds(profile, precision, _minus(shape.block, shape.text_kv))
        block = max(0.0, floor + t.graph_block.at(rows))
        steady = max(0.0, t.graph_fixed.at(rows)) + shape.blocks * block
        first_extra = max(0.0, (t.graph_first_step or t.eager_first_step).at(shape.blocks))
        capture = max(0.0, t.capture.at(shape.blocks)) if t.capture is not None else 0.0
        # Calibrate measures step 1's extra over an eager step as step 0 runs it (and step 0's extra likewise), so
        # both are added to that same eager step here.
        first = eager_step_fresh + first_extra + eager_step_fresh + capture + steady
        total = first + (steps - 2) * steady
        return StepPrediction(total, steady, first, capture, steady, block, True, True, "compute",
                              f"CUDA graph: step 0 eager + {first_extra:.2f} s at new shapes, step 1 warm-up + "
                              f"capture {capture:.2f} s, {steps - 2} replays of {steady:.3f} s")  # fmt: skip
    block = eager_block(frozen)
    first_extra = max(0.0, t.eager_first_step.at(shape.blocks))
    if streamed:
        # A streamed block's own overhead (hooks, slot views, events), where calibrate measured it.
        streamed_block = block + (t.streamed_block_s or 0.0)
        periods = pipeline_steps(run_order(shape.blocks, resident), slots, block, copy_s, eager_fixed, max(steps, 3),
                                 streamed_block)  # fmt: skip
        steady, first = periods[-1], periods[0] + first_extra
        compute = eager_fixed + resident * block + streamed * streamed_block
        total = first + sum(periods[1:steps])
        bound = copy_bound_word if steady > compute * 1.05 else "compute"
        own = (f", +{t.streamed_block_s * 1e3:.2f} ms a streamed one" if t.streamed_block_s
               else ", streamed blocks' own overhead not measured")  # fmt: skip
        note = (f"eager, {resident} resident + {streamed} streamed blocks spread between them ({block * 1e3:.2f} ms "
                f"compute{own}, {copy_s * 1e3:.2f} ms copy each): {steady:.3f} s a step")  # fmt: skip
        return StepPrediction(total, steady, first, 0.0, compute, block, False, False, bound, note)
    steady = eager_fixed + shape.blocks * block
    first = eager_step_fresh + first_extra  # step 0 computes the text K/V that later steps reuse when frozen
    why = "eager" if t.graph_block is not None or not cuda_graph else "eager (no graph timings on this device)"
    note = f"{why}: step 0 + {first_extra:.2f} s at new shapes, then {steady:.3f} s a step"
    return StepPrediction(first + (steps - 1) * steady, steady, first, 0.0, steady, block, False, frozen, "compute",
                          note)  # fmt: skip


def _graphed_streamed(profile: DeviceProfile, precision: str, shape: DenoiseShape, steps: int, resident: int,
                      slots: int, copy_s: float, eager_block: float, eager_fixed: float,
                      eager_step_fresh: float) -> StepPrediction:  # fmt: skip
    """A graphed run with blocks streamed from pinned memory: step 0 and step 1's warm-up run the eager pipeline,
    step 1 captures, the rest replay the graph's pipeline (graph-replayed blocks with their text K/V, the copies as
    graph nodes, each replay ending once its copies are done)."""
    t = profile.timings.step
    assert t is not None and t.graph_block is not None and t.graph_fixed is not None
    streamed = shape.blocks - resident
    order = run_order(shape.blocks, resident)
    block = max(0.0, floor_seconds(profile, precision, shape.block) + t.graph_block.at(shape.rows))
    fixed = max(0.0, t.graph_fixed.at(shape.rows))
    steady = pipeline_steps(order, slots, block, copy_s, fixed, 3, join=True)[-1]
    eager = pipeline_steps(order, slots, eager_block, copy_s, eager_fixed, 2, eager_block + (t.streamed_block_s or 0.0))
    first_extra = max(0.0, (t.graph_first_step or t.eager_first_step).at(shape.blocks))
    capture = max(0.0, t.capture.at(shape.blocks)) if t.capture is not None else 0.0
    first = eager[0] + first_extra + eager[1] + capture + steady
    compute = fixed + shape.blocks * block
    bound = "copy" if steady > compute * 1.05 else "compute"
    note = (f"CUDA graph with the copies of {streamed} streamed blocks ({resident} resident, spread): step 0 eager "
            f"+ {first_extra:.2f} s, step 1 warm-up + capture {capture:.2f} s, {steps - 2} replays of {steady:.3f} s "
            f"({block * 1e3:.2f} ms a block, {copy_s * 1e3:.2f} ms a copy)")  # fmt: skip
    return StepPrediction(first + (steps - 2) * steady, steady, first, capture, compute, block, True, False, bound,
                          note)  # fmt: skip


def without_graph(profile: DeviceProfile) -> DeviceProfile:
    """``profile`` with its graph timings removed (what a run with ``--cuda-graph off`` would see)."""
    t = profile.timings.step
    if t is None:
        return profile
    step = replace(t, graph_block=None, graph_fixed=None, graph_first_step=None, capture=None)
    return replace(profile, timings=replace(profile.timings, step=step))
