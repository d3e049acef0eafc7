"""A Plan as the report shows it: a readable table, and a JSON-ready dict. Formatting only; never re-plans."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from ltx2_edge.plan.budget import GiB
from ltx2_edge.plan.file_reads import reads_lines
from ltx2_edge.plan.plan_types import Plan, StagePlan
from ltx2_edge.plan.provenance import origin_line, profile_origin
from ltx2_edge.plan.stage_fit import allowance
from ltx2_edge.plan.timings import STAND_INS

_HEADERS = ("stage", "peak", "resident", "streamed", "slots", "source", "moved/step", "bound", "seconds", "technique")


def _gib(n: int) -> str:
    return f"{n / GiB:.2f} GiB" if n else "-"


def _row(s: StagePlan) -> tuple[str, ...]:
    units = s.resident_units + s.streamed_units
    resident = _gib(s.weights_resident_bytes) + (f" ({s.resident_units}/{units})" if s.streamed_units else "")
    streamed = _gib(s.weights_streamed_bytes) + (f" ({s.streamed_units}/{units})" if s.streamed_units else "")
    slots = f"{s.n_slots} x {s.slot_bytes / GiB:.2f} GiB" if s.n_slots else "-"
    steps = f" ({s.steps} steps)" if s.steps > 1 else ""
    return (
        s.name,
        _gib(s.predicted_peak_bytes),
        resident,
        streamed,
        slots,
        s.source_tier,
        _gib(s.bytes_moved_per_step),
        s.bottleneck,
        f"{s.predicted_seconds:.2f}{steps}",
        s.technique,
    )


def format_plan(plan: Plan) -> str:
    """The plan as an aligned text table, one row per stage, then the totals and where the rates come from (the
    profile, and ``provenance.origin_line``: whose rates, chosen how, which are measured, published, assumed)."""
    rows = [_HEADERS, *(_row(s) for s in plan.stages)]
    widths = [max(len(r[i]) for r in rows) for i in range(len(_HEADERS) - 1)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r[:-1], widths, strict=True)) + "  " + r[-1] for r in rows]
    r = plan.request
    host = "" if plan.budget.unified else f"; host peak {_gib(plan.host_peak_bytes)}"
    images = f", {r.images} image(s) (+{r.conditioning_tokens} keyframe tokens)" if r.images else ""
    s2 = r.second_stage
    stage_1 = "stage 1 at " if s2 is not None else ""
    then = (f"; then the latent upsampler x2 and stage 2 at {s2.width}x{s2.height}, {s2.steps} steps, 1 pass per "
            "forward") if s2 is not None else ""  # fmt: skip
    lines += [
        "",
        f"request: {stage_1}{r.width}x{r.height}, {r.num_frames} frames at {r.frame_rate:g} fps, "
        f"{r.num_inference_steps} steps, {r.guidance_batch} guidance pass(es) per forward{images}{then}, "
        f"{r.precision} weights, prefetch depth {r.prefetch_depth}",
        f"budget: {plan.budget.describe()}",
        f"total: peak {_gib(plan.peak_bytes)}{host}; predicted {plan.total_seconds:.2f} s warm"
        f" (+ {plan.cold_load_seconds:.1f} s to read the weights from a cold disk)",
        f"profile {plan.profile.name}: {plan.profile.source}",
        f"rates: {origin_line(plan.profile)}",
        *reads_lines(plan),
        *time_lines(plan),
    ]
    slack, runtime = allowance(r, plan.profile)
    allocator = " (CUDA expandable segments)" if r.expandable_segments else ""
    lines.append(f"each stage's peak includes {slack / GiB:.2f} GiB of slack{allocator} and {runtime / GiB:.2f} GiB "
                 "for the runtime's own memory (on a GPU: CUDA context, library workspaces)")  # fmt: skip
    return "\n".join(lines)


def time_lines(plan: Plan) -> list[str]:
    """A fresh process's predicted time, part by part, which parts the profile has not measured and what stands in
    for them (``timings.STAND_INS``), and where each stage's figures come from."""
    missing = plan.profile.timings.missing()
    loads = sum(s.load_seconds for s in plan.stages)
    passes = sum(s.predicted_seconds for s in plan.stages)
    setup = sum(s.setup_seconds for s in plan.stages)
    mp4 = sum(s.mp4_seconds for s in plan.stages)
    lines = [f"end to end: {plan.predicted_end_to_end_seconds:.1f} s for a fresh process, warm page cache (start-up "
             f"{plan.startup_seconds:.1f}, loads {loads:.1f}, passes {passes:.1f}, in-stage setup {setup:.1f}, MP4 "
             f"{mp4:.1f}, exit {plan.exit_seconds:.1f})"]  # fmt: skip
    if missing:
        lines.append(f"  not measured by profile {plan.profile.name} (`ltx2-edge calibrate` measures them): "
                     + "; ".join(f"{name}: {STAND_INS[name]}" for name in missing))  # fmt: skip
    if len(missing) == len(STAND_INS):  # nothing measured: each stage's note would only repeat the line above
        return lines
    for s in plan.stages:
        if s.time_note:
            lines.append(f"  {s.name}: {s.stage_seconds:.2f} s ({s.time_note})")
    return lines


def plan_to_json(plan: Plan) -> dict[str, Any]:
    """The plan as plain JSON types: request, budget, profile (and ``profile_origin``: where each rate comes from),
    every stage field (``reads``: the file it reads; ``file_read_bytes`` and its seconds warm and cold; with measured
    timings ``load_seconds``, ``setup_seconds``, ``mp4_seconds`` and ``stage_seconds``), and the totals
    (``predicted_end_to_end_seconds``: a fresh process, ``plan_types.Plan``'s)."""
    stages = []
    for s in plan.stages:
        d = asdict(s)
        d["tiles"] = None if s.tiles is None else {**asdict(s.tiles), "description": s.tiles.describe()}
        d["stage_seconds"] = s.stage_seconds
        stages.append(d)
    return {
        "request": asdict(plan.request),
        "budget": {**asdict(plan.budget), "description": plan.budget.describe()},
        "profile": asdict(plan.profile),
        "profile_origin": profile_origin(plan.profile),
        "stages": stages,
        "peak_bytes": plan.peak_bytes,
        "host_peak_bytes": plan.host_peak_bytes,
        "total_seconds": plan.total_seconds,
        "cold_load_seconds": plan.cold_load_seconds,
        "warm_load_seconds": plan.warm_load_seconds,
        "file_read_bytes": plan.file_read_bytes,
        "startup_seconds": plan.startup_seconds,
        "exit_seconds": plan.exit_seconds,
        "predicted_end_to_end_seconds": plan.predicted_end_to_end_seconds,
        "timings_not_measured": plan.profile.timings.missing(),
    }
