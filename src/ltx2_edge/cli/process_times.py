"""Where a ``generate`` process's time goes outside its report's stages: marks from the process's creation
(``psutil``'s ``create_time``) to the command, the engine's imports, the ``Generator``'s setup and the run.

The report's stages start after all of these, so a fresh process's wall time is these plus the report's total plus
its exit; the planner predicts them from the profile's start-up timings (``plan.timings.StartupTimings``) and this
record checks them. Clock: wall time (``time.time``), the clock ``create_time`` is on. Records; decides nothing.
"""

from __future__ import annotations

import os
import time
from typing import Any


class ProcessTimes:
    """Marks of one ``generate`` command, in seconds since the process was created."""

    def __init__(self) -> None:
        import psutil  # here, not at import: ``--help`` stays light

        self.created = psutil.Process(os.getpid()).create_time()
        self.marks: dict[str, float] = {"command_started": self._now()}

    def _now(self) -> float:
        return round(time.time() - self.created, 3)

    def mark(self, name: str) -> None:
        """Record ``name`` now."""
        self.marks[name] = self._now()

    def record(self, run_seconds: float) -> dict[str, Any]:
        """The marks and the spans between them, for the report: ``to_command_s`` (the interpreter and the CLI's
        own imports), ``engine_import_s``, ``setup_s``, ``generate_s`` and, of it, ``outside_run_s`` (the output
        checks and the plan before the report's clock starts, the report's writing after it stops)."""
        m = self.marks
        out: dict[str, Any] = {"marks_s": dict(m), "to_command_s": m["command_started"]}
        for name, (a, b) in {"engine_import_s": ("command_started", "engine_imported"),
                             "setup_s": ("engine_imported", "generator_ready"),
                             "generate_s": ("generator_ready", "generated")}.items():  # fmt: skip
            if a in m and b in m:
                out[name] = round(m[b] - m[a], 3)
        if "generate_s" in out:
            out["outside_run_s"] = round(out["generate_s"] - run_seconds, 3)
            out["before_first_stage_s"] = round(m["generator_ready"] + out["outside_run_s"], 3)
        return out


def prediction_line(plan: dict[str, Any], process: dict[str, Any], run_seconds: float, steps_seconds: float | None,
                    ) -> str:  # fmt: skip
    """The plan's time prediction (``plan_text.plan_to_json``'s figures) against what this process measured, one
    line for the end of ``generate``: before the first stage, the run (the report's total), the denoising steps;
    and the end to end predicted, exit included (the exit itself comes after this line)."""
    stages = plan["stages"]
    parts = [f"before the first stage {plan['startup_seconds']:.1f} / {process['before_first_stage_s']:.1f} s",
             f"the run {sum(s['stage_seconds'] for s in stages):.1f} / {run_seconds:.1f} s"]  # fmt: skip
    denoise = next((s for s in stages if s["name"] == "denoise"), None)
    if denoise is not None and steps_seconds is not None:
        parts.append(f"denoise steps {denoise['predicted_seconds']:.2f} / {steps_seconds:.2f} s")
    missing = plan.get("timings_not_measured") or []
    tail = f" (not measured by the profile, left out or at the floor: {', '.join(missing)})" if missing else ""
    return (
        f"predicted / measured: {'; '.join(parts)}; end to end {plan['predicted_end_to_end_seconds']:.1f} s "
        f"predicted, exit {plan['exit_seconds']:.1f} s included{tail}"
    )
