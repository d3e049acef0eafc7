"""Budget proof (issue 3) from the runs' own reports: per run and stage, the allocator's allocated and reserved
peaks against the planner's prediction and the budget.

The cap (``set_per_process_memory_fraction``) holds *reserved* memory, so "predicted within 10% of measured" is
read against both figures: allocated is what the plan counts, reserved what the cap enforces. Reads the
``records[*].raw`` reports that bench/reference.py and bench/pipelines.py write.
Usage: python bench/budget_proof.py CALL.json [CALL.json ...] [--markdown OUT.md]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

GIB = 1024**3


def _allocator(report: dict[str, Any]) -> str:
    """The allocator the run used (reports from before the choice existed ran PyTorch's default: caching)."""
    return report.get("budget", {}).get("allocator", "caching")


def stage_rows(label: str, report: dict[str, Any], nvml_peak: int | None = None) -> list[dict[str, Any]]:
    """One row per stage that carries a prediction: the figures, the errors and the budget check.

    ``held`` is what the budget holds: the reserved peak plus the runtime's device memory (CUDA context and
    library workspaces, outside the allocator), measured as the run's NVML peak less its largest reserved
    peak (``nvml_peak``: from outside the process, idle baseline subtracted); None without NVML.
    """
    stages = [s for s in report["stages"] if s["details"].get("predicted_peak_bytes")]
    reserved_peaks = [s["details"].get("peak_reserved_bytes") or s["peak_bytes"] for s in stages]
    runtime = None if nvml_peak is None or not stages else nvml_peak - max(reserved_peaks)
    rows = []
    for stage, reserved in zip(stages, reserved_peaks, strict=True):
        d = stage["details"]
        predicted, allocated = d["predicted_peak_bytes"], stage["peak_bytes"]
        held = None if runtime is None else reserved + runtime
        rows.append({
            "run": label, "stage": stage["stage"], "allocator": _allocator(report), "allocated": allocated,
            "reserved": d.get("peak_reserved_bytes"), "runtime": runtime, "held": held, "predicted": predicted,
            "budget": d.get("budget_bytes"), "error_allocated": allocated / predicted - 1,
            "error_reserved": None if "peak_reserved_bytes" not in d else reserved / predicted - 1,
            "error_held": None if held is None else held / predicted - 1, "within_budget": d.get("within_budget"),
        })  # fmt: skip
    return rows


def rows_from(paths: list[Path]) -> list[dict[str, Any]]:
    """Every successful run's stage rows, in the files' order."""
    rows: list[dict[str, Any]] = []
    for path in paths:
        for rec in json.loads(path.read_text())["records"]:
            if rec.get("status") == "ok" and rec.get("raw"):
                rows += stage_rows(rec["label"], rec["raw"], rec.get("peak_nvml_bytes"))
    return rows


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{x * 100:+.0f}%"


def _gib(x: int | None) -> str:
    return "—" if x is None else f"{x / GIB:.2f}"


def markdown(rows: list[dict[str, Any]]) -> str:
    """The table plus one line per allocator: the error ranges and whether every stage stayed in budget."""
    out = ["| run | stage | allocator | allocated GiB | reserved GiB | + runtime GiB = held | predicted GiB | "
           "alloc. vs pred. | reserved vs pred. | held vs pred. | budget GiB | ≤ budget |",
           "|---|---|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in rows:
        ok = {True: "yes", False: "**no**", None: "?"}[r["within_budget"]]
        held = "—" if r["held"] is None else f"{_gib(r['runtime'])} = {_gib(r['held'])}"
        out.append(f"| {r['run']} | {r['stage']} | {r['allocator']} | {_gib(r['allocated'])} | {_gib(r['reserved'])} "
                   f"| {held} | {_gib(r['predicted'])} | {_pct(r['error_allocated'])} | {_pct(r['error_reserved'])} "
                   f"| {_pct(r['error_held'])} | {_gib(r['budget'])} | {ok} |")  # fmt: skip
    out.append("")
    for kind in sorted({r["allocator"] for r in rows}):
        mine = [r for r in rows if r["allocator"] == kind]
        parts = [f"- {kind}: {len(mine)} stages"]
        for key, what in (("error_allocated", "allocated"), ("error_reserved", "reserved"), ("error_held", "held")):
            errs = [r[key] for r in mine if r[key] is not None]
            if errs:
                inside = sum(1 for e in errs if abs(e) <= 0.10)
                parts.append(f"{what} vs predicted {_pct(min(errs))}..{_pct(max(errs))} ({inside} of {len(errs)} "
                             "within 10%)")  # fmt: skip
        parts.append(f"all within budget: {all(r['within_budget'] is not False for r in mine)}")
        out.append("; ".join(parts))
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("calls", nargs="+", type=Path)
    ap.add_argument("--markdown", type=Path, help="also write the table here")
    a = ap.parse_args()
    text = markdown(rows_from(a.calls))
    print(text)
    if a.markdown:
        a.markdown.write_text(text + "\n")


if __name__ == "__main__":
    main()
