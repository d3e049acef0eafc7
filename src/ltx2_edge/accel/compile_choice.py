"""Whether a run compiles the transformer's block (``--compile auto|off|on``): the pure half of ``accel.compile``.

``decide_compile`` takes what stands in the way (``compile.compile_support``: no CUDA, no Triton, an old ptxas on
Thor; guidance that perturbs single blocks) and, for ``auto``, ``CompileEconomics``: the one-off cost of compiling
against the steps it makes faster. The saving is counted over every clip of the same shapes this process knows it
will run (``ClipsAhead``: this one, the rest of a service's batch, the jobs of that shape waiting in its queue),
so a long-lived process compiles where a one-shot run would not. The cost depends on where the compiled code comes
from: an empty Inductor cache (~36 s), a warm one (~9 s), or this process, which compiled those shapes before and
keeps the code for its whole life (~1 s of re-entry, ``note_compiled``). ``off`` never compiles; ``auto`` says why
it did or did not, naming the clips it counted and the seconds on each side; ``on`` raises with the reason instead
of running something else.

Nothing here imports torch or touches a device: the tests check every decision on a CPU.
"""

from __future__ import annotations

import os
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

CompileMode = Literal["auto", "off", "on"]
COMPILE_MODES: tuple[str, ...] = ("auto", "off", "on")
# What compiling costs and buys, measured on the H100 (W1, fp8, bench/results/2026-11-23-step-accel and the
# reference runs): the first compiled step took 35.6 s with an empty Inductor cache, 9.0 s with a warm one, ~1 s
# when this process had compiled the same shapes before; compiled + graphed steps ran at 1.38x the compute floor
# against 1.72x for graphed eager steps, so compiling saves ~0.34 x the floor per step.
COMPILE_COST_S = {"cold": 36.0, "warm cache": 9.0, "this process": 1.0}
COMPILE_SAVING_X_FLOOR = 0.34
_COST_WORDS = {"cold": "empty Inductor cache", "warm cache": "warm Inductor cache",
               "this process": "compiled before in this process"}  # fmt: skip
# Shapes this process compiled the block for. Dynamo keeps compiled code on the block's code object for the life of
# the process, so a later run of the same shapes (a service's next batch) pays only the re-entry, not the compile.
_COMPILED_HERE: set[tuple] = set()


def cache_dir() -> Path:
    """Where Inductor keeps compiled kernels between runs (set before the first compile)."""
    env = os.environ.get("TORCHINDUCTOR_CACHE_DIR")
    return Path(env) if env else Path.home() / ".cache" / "ltx2-edge" / "inductor"


@dataclass(frozen=True)
class ClipsAhead:
    """The clips of one shape this process knows it will run, this one included: what ``--compile auto`` weighs its
    one-off cost against. ``batch``: clips of the shape run back to back with this one (a service's batch, or a
    caller's ``runs_ahead``); ``queued``: more of them waiting behind the batch in the service's queue, run by a
    later batch of this same process, for which the block compiled now is still compiled."""

    batch: int = 1
    queued: int = 0

    def __post_init__(self) -> None:
        for name, least in (("batch", 1), ("queued", 0)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                raise ValueError(f"clips ahead: {name}={value!r} is not allowed: an integer >= {least}")

    @classmethod
    def of(cls, value: int | ClipsAhead) -> ClipsAhead:
        """``value`` as given to ``prepare(runs_ahead=...)``: a count of clips run back to back, or a ``ClipsAhead``;
        ``ValueError`` (one line) for anything else."""
        if isinstance(value, ClipsAhead):
            return value
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"runs_ahead={value!r} is not allowed: a count of clips >= 1 (this one included) or "
                             "a ClipsAhead")  # fmt: skip
        return cls(batch=value)

    @classmethod
    def among(
        cls, shape: Hashable | None, batch: Sequence[Hashable | None], queued: Sequence[Hashable | None]
    ) -> ClipsAhead:
        """The clips of ``shape`` (what a clip's compiled code is specialised on) in its batch, itself among them,
        and in the queue behind the batch. A clip whose shape is unknown (None) counts alone."""
        if shape is None:
            return cls()
        return cls(batch=max(1, sum(s == shape for s in batch)), queued=sum(s == shape for s in queued))

    @property
    def clips(self) -> int:
        return self.batch + self.queued

    def describe(self) -> str:
        """What was counted, for the compile reason ("over ...")."""
        if self.clips == 1:
            return "this clip alone"
        if not self.queued:
            return f"{self.batch} clips of this shape in this batch"
        here = "this one" if self.batch == 1 else f"{self.batch} in this batch"
        return f"{self.clips} clips of this shape ({here}, {self.queued} queued behind it)"


@dataclass(frozen=True)
class CompileEconomics:
    """What compiling would cost and save over ``clips`` (seconds): ``auto`` compiles when it saves more."""

    cost_s: float
    cost_note: str  # a ``COMPILE_COST_S`` key: where the compiled code would come from
    saving_s: float
    clips: ClipsAhead = ClipsAhead()

    def as_dict(self) -> dict:
        """For the report's denoise details."""
        return {"cost_seconds": round(self.cost_s, 3), "cost_note": self.cost_note,
                "saving_seconds": round(self.saving_s, 3), "clips_in_batch": self.clips.batch,
                "clips_queued": self.clips.queued, "counted": self.clips.describe()}  # fmt: skip


def compile_economics(
    shape_key: tuple, floor_seconds: float, copy_bound: bool, clips: ClipsAhead | None = None
) -> CompileEconomics:
    """Estimate for ``clips`` of one shape: ``shape_key`` names the shapes (same key, same compiled code),
    ``floor_seconds`` is one clip's compute floor of the denoising; a copy-bound run (streamed blocks) saves nothing
    by faster kernels. A shape this process compiled before costs only the re-entry (``note_compiled``)."""
    clips = clips if clips is not None else ClipsAhead()
    if shape_key in _COMPILED_HERE:
        note = "this process"
    else:
        cache = cache_dir()
        note = "warm cache" if cache.is_dir() and any(cache.iterdir()) else "cold"
    cost = COMPILE_COST_S[note]
    if clips.queued:  # the queued clips run in a later batch, whose first compiled step re-enters the code once more
        cost += COMPILE_COST_S["this process"]
    saving = 0.0 if copy_bound else floor_seconds * COMPILE_SAVING_X_FLOOR * clips.clips
    return CompileEconomics(cost, note, saving, clips)


def note_compiled(shape_key: tuple) -> None:
    """Record that this process compiled the block for ``shape_key``: a later run of those shapes costs only the
    re-entry (``COMPILE_COST_S["this process"]``)."""
    _COMPILED_HERE.add(shape_key)


def _seconds(value: float) -> str:
    return f"{value:.0f}" if value >= 10 else f"{value:.1f}" if value >= 0.1 else f"{value:.2g}"


@dataclass(frozen=True)
class CompileDecision:
    """What the run does and why (the reason is printed in the plan and report either way)."""

    enabled: bool
    reason: str


class CompileRefused(ValueError):
    """``--compile on`` cannot run here; ``reason`` says why and what to change (the CLI's error is built from it,
    never from this message's text)."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(f"--compile on cannot run: {reason}")


def decide_compile(
    mode: str, support: str | None, economics: CompileEconomics | None, block_perturbations: bool
) -> CompileDecision:
    """Pure: ``mode`` from the user, ``support`` from ``compile_support``, the run's cost/saving and guidance.

    ``economics`` None (unknown): ``auto`` compiles when nothing else stands in the way.

    ``CompileRefused`` (one line, with the reason and what to change) when ``mode == "on"`` cannot be honoured.
    """
    if mode not in COMPILE_MODES:
        raise ValueError(f"compile={mode!r} is not allowed: one of {', '.join(COMPILE_MODES)}")
    if mode == "off":
        return CompileDecision(False, "off (--compile off)")
    blockers = []
    if support is not None:
        blockers.append(support)
    if block_perturbations:
        blockers.append("the guidance perturbs single blocks (STG), which would compile the block once per index: "
                        "use --guidance cfg")  # fmt: skip
    if mode == "on" and blockers:
        raise CompileRefused(f"{blockers[0]}; or use --compile auto")
    if blockers:
        return CompileDecision(False, f"eager: {blockers[0]}")
    what = "transformer block (regional, fused elementwise + 8-bit activation quant)"
    if mode == "on" or economics is None:
        return CompileDecision(True, f"compiled: {what}")
    e, where = economics, _COST_WORDS.get(economics.cost_note, economics.cost_note)
    if e.saving_s <= e.cost_s:
        return CompileDecision(False, f"eager: compiling would cost ~{_seconds(e.cost_s)} s ({where}) and save "
                                      f"~{_seconds(e.saving_s)} s over {e.clips.describe()} (--compile on forces "
                                      "it)")  # fmt: skip
    return CompileDecision(True, f"compiled: saving ~{_seconds(e.saving_s)} s over {e.clips.describe()} against a "
                                 f"~{_seconds(e.cost_s)} s compile ({where}); {what}")  # fmt: skip
