"""The accelerations of one run, from its request, plan and device: the glue between ``Generator`` and ``accel``.

``choose_for_run`` turns the user's flags, the plan's denoise stage and the guidance into ``AccelChoice`` (pure
apart from asking the machine whether it can compile); ``measured_settings`` adds the SDPA backend timed on the
device at the run's shapes and records every choice with its reason in the stage's report details;
``compile_row`` gives compilation and graph capture their own line in the report table. Nothing here runs the
model.
"""

from __future__ import annotations

import statistics
from dataclasses import replace

import torch

from ltx2_edge.accel import attention
from ltx2_edge.accel.compile import compile_support
from ltx2_edge.accel.compile_choice import ClipsAhead, CompileRefused, cache_dir, compile_economics
from ltx2_edge.accel.engine import AccelSettings
from ltx2_edge.accel.settings import AccelChoice, AccelInputs, choose_accel
from ltx2_edge.accel.step_invariants import text_kv_bytes
from ltx2_edge.checkpoint.names import TEXT_CONTEXT_TOKENS
from ltx2_edge.errors import RequestError
from ltx2_edge.guidance import Guidance
from ltx2_edge.plan.plan_types import StagePlan


def perturbs_single_blocks(guidance: Guidance) -> bool:
    """True when a pass perturbs chosen blocks only (STG): their branches then depend on the block index."""
    return any(
        pert.blocks is not None for p in guidance.passes() for pert in (guidance.perturbation(p).perturbations or ())
    )


def compute_floor_seconds(denoise: StagePlan) -> float:
    """One clip's compute floor of the denoising: what ``COMPILE_SAVING_X_FLOOR`` is a fraction of. With a profile's
    step timings ``predicted_seconds`` is the steps as they run (eager steps, capture), which would overstate the
    saving; without them it is the floor already."""
    floor = denoise.compute_seconds_per_step * denoise.steps
    return floor if floor > 0 else denoise.predicted_seconds


def choose_for_run(
    *, compile_mode: str, cuda_graph_mode: str, device: torch.device, dtype: torch.dtype, guidance: Guidance,
    denoise: StagePlan, budget_bytes: int | None, config: dict, shape_key: tuple,
    runs_ahead: int | ClipsAhead = 1,
) -> AccelChoice:  # fmt: skip
    """The run's accelerations; ``RequestError`` for a ``--compile on`` that cannot run. ``runs_ahead``: clips of
    the same shapes this process is known to run, this one included (a count run back to back, or a service's
    ``ClipsAhead``: its batch and its queue): compiling once pays for all of them."""
    economics = compile_economics(shape_key, compute_floor_seconds(denoise), denoise.bottleneck != "compute",
                                  ClipsAhead.of(runs_ahead))  # fmt: skip
    inputs = AccelInputs(
        compile_mode=compile_mode, compile_support=compile_support(device), compile_economics=economics,
        cuda_graph_mode=cuda_graph_mode, device_type=device.type, batched=guidance.mode == "batched",
        block_perturbations=perturbs_single_blocks(guidance), streamed_blocks=denoise.streamed_units,
        stream_tier=denoise.source_tier,
        capture_room=not denoise.no_capture_room,
        budget_bytes=budget_bytes, predicted_peak_bytes=denoise.predicted_peak_bytes,
        text_kv_bytes=text_kv_bytes(config, guidance.batch, TEXT_CONTEXT_TOKENS, dtype.itemsize), steps=denoise.steps,
    )  # fmt: skip
    try:
        return choose_accel(inputs)
    except CompileRefused as exc:
        raise RequestError("--compile", compile_mode, exc.reason) from None


def measured_settings(
    choice: AccelChoice, config: dict, batch: int, video_tokens: int, audio_tokens: int, device: torch.device,
    dtype: torch.dtype, details: dict,
) -> AccelSettings:  # fmt: skip
    """``choice`` plus the SDPA backend timed now at the run's shapes; the choices and reasons go to ``details``."""
    shapes = attention.step_shapes(config, batch, video_tokens, audio_tokens, TEXT_CONTEXT_TOKENS)
    backend, timings = attention.choose_backend(shapes, device, dtype)
    settings = replace(choice.settings, attention=backend)
    if choice.compile_economics is not None:  # what --compile auto weighed: the clips counted, cost and saving
        details["compile_economics"] = choice.compile_economics.as_dict()
    details.update(accel=list(choice.settings.reasons), accel_compiled=choice.settings.compile,
                   attention_backend=backend or "default dispatch", attention_timings=timings,
                   accel_extra_peak_bytes=choice.extra_peak_bytes, accel_summary=settings.describe())  # fmt: skip
    return settings


def compile_row(details: dict, stats: dict, step_seconds: list[float]) -> None:
    """Compilation and graph capture happen inside the denoise stage's first accelerated step: give them a line (and
    a refused capture one that says why the steps ran eager)."""
    if stats.get("graph_refused"):
        details.setdefault("sub_rows", []).append(("no CUDA graph", 0.0, stats["graph_refused"]))
    first = stats.get("capture_seconds") or stats.get("compile_step_seconds")
    steady = step_seconds[2:]
    if stats.get("graph_reused") and steady:
        details["seconds_per_step_steady"] = round(statistics.median(steady), 4)
        details.setdefault("sub_rows", []).append(
            ("graph reused", 0.0, "captured by an earlier clip of this batch: no capture, steps 1.. replay it")
        )
        return
    if first is None or not steady:
        return
    overhead = max(0.0, first - statistics.median(steady))
    captured, compiled = stats.get("capture_seconds") is not None, bool(details.get("accel_compiled"))
    what = " + ".join(w for w, on in (("compile", compiled), ("graph capture", captured)) if on)
    details["seconds_per_step_steady"] = round(statistics.median(steady), 4)
    where = f"; Inductor cache {cache_dir()}" if compiled else ""
    details.setdefault("sub_rows", []).append((what, round(overhead, 3), f"inside denoise, once per run{where}"))
