"""Prediction against measurement (issue 17, item 2): fresh `ltx2-edge generate` processes, their reports, one table.

``run`` starts ``python3 -m ltx2_edge generate ARGS`` as a fresh process (the user's case: imports, CUDA context,
loads and all), times it from outside, and keeps the report beside a small row file. ``table`` reads every row and
prints, per run: the plan's denoise, end-to-end and peak figures against the measured ones, as ratios
(measured / predicted), each marked against issue 17's targets, and a second table of the end-to-end parts
(start-up, loads, MP4, exit...) predicted / measured, so a miss shows where it comes from. The plan's figures are
the ones the run recorded in its own report (``report["plan"]``), so they were made before any weight loaded, with
the profile the run chose (the report names it).

    python3 bench/prediction_table.py run --dir D --label w1-32 -- --checkpoint-path F --gemma-root G --budget 32GiB
    python3 bench/prediction_table.py table --dir D --out table.json [--markdown table.md]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

GIB = 2**30


def _run(a: argparse.Namespace) -> None:
    a.dir.mkdir(parents=True, exist_ok=True)
    report = a.dir / f"{a.label}.report.json"
    video = Path(a.video_dir or a.dir) / f"{a.label}.mp4"
    cmd = [sys.executable, "-m", "ltx2_edge", "generate", *a.args, "--output-path", str(video), "--overwrite"]
    started = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - started
    (a.dir / f"{a.label}.log").write_text(done.stdout + done.stderr)
    if done.returncode != 0:
        print(f"{a.label}: exit {done.returncode}: {(done.stderr or done.stdout).strip().splitlines()[-1:]}")
        row = {"label": a.label, "args": a.args, "exit": done.returncode, "process_wall_s": wall}
    else:
        video.with_suffix(".report.json").replace(report)
        row = {"label": a.label, "args": a.args, "exit": 0, "process_wall_s": wall, "report": report.name}
    (a.dir / f"{a.label}.row.json").write_text(json.dumps(row, indent=1))
    print(json.dumps(row))


def _budget(b: dict[str, Any]) -> str:
    size = "unlimited" if b["device_bytes"] is None else f"{b['device_bytes'] / GIB:g} GiB"
    return f"{size} {'one pool' if b['unified'] else 'discrete'}"


def _stage(report: dict[str, Any], name: str) -> dict[str, Any] | None:
    return next((s for s in report["stages"] if s["stage"] == name), None)


def _planned(report: dict[str, Any], name: str) -> dict[str, Any] | None:
    return next((s for s in report["plan"]["stages"] if s["name"] == name), None)


TARGETS = {"denoise_steps": 0.15, "denoise_stage": 0.15, "end_to_end": 0.25, "peak": 0.10}  # issue 17, item 2


def _measured_parts(row: dict[str, Any], report: dict[str, Any]) -> dict[str, float | None]:
    """What the report and the process measured of the parts the plan predicts (None where it did not)."""
    den, text, dec = _stage(report, "denoise"), _stage(report, "text_encode"), _stage(report, "decode")
    proc = report.get("process") or {}
    before = proc.get("before_first_stage_s")
    after_stages = None
    if "marks_s" in proc and "generated" in proc["marks_s"]:
        after_stages = row["process_wall_s"] - proc["marks_s"]["generated"]  # report rewrite, table print, exit
    return {
        "startup_s": before if before is not None else row["process_wall_s"] - report["total_seconds"],
        "exit_s": after_stages,
        "denoise_load_s": den["details"].get("load_seconds") if den else None,
        "decode_load_s": dec["details"].get("load_seconds") if dec else None,
        "mp4_s": dec["details"].get("encode_after_decode_seconds") if dec else None,
        "text_stage_s": text["seconds"] if text else None,
        "decode_stage_s": dec["seconds"] if dec else None,
        "between_stages_s": report["total_seconds"] - sum(s["seconds"] for s in report["stages"]),
    }


def _predicted_parts(plan: dict[str, Any]) -> dict[str, float | None]:
    """The plan's figures for the same parts; None for a part its profile did not measure (``timings_not_measured``:
    the plan left it out) or does not model."""
    stages = {s["name"]: s for s in plan["stages"]}
    missing = plan.get("timings_not_measured") or []

    def get(stage: str, key: str) -> float | None:
        return stages[stage].get(key) if stage in stages else None

    def measured(section: str, value: float | None) -> float | None:
        return None if section in missing else value

    text = [stages[n] for n in ("text_encode", "embeddings") if n in stages]
    return {
        "startup_s": measured("startup", plan.get("startup_seconds")),
        "exit_s": measured("startup", plan.get("exit_seconds")),
        "denoise_load_s": get("denoise", "load_seconds"),
        "decode_load_s": get("decode", "load_seconds"),
        "mp4_s": measured("encode", get("decode", "mp4_seconds")),
        "text_stage_s": sum(s.get("stage_seconds", s["predicted_seconds"]) for s in text) if text else None,
        "decode_stage_s": get("decode", "stage_seconds"),
        "between_stages_s": None,  # not modelled
    }


def row_for(row: dict[str, Any], report: dict[str, Any]) -> dict[str, Any]:
    """One table row: predicted and measured denoise steps, denoise stage, end to end, and the peak.

    Denoise steps: the plan's ``predicted_seconds`` (with step timings: every step as run, first steps and capture
    included) against the measured ``steps_seconds``. Denoise stage: the plan's ``stage_seconds`` (load + steps +
    in-stage setup; older plans: steps + ``warm_load_seconds``) against the stage's row. End to end: the plan's
    ``predicted_end_to_end_seconds`` (older plans: the compute total) against the process's wall time. Peak: each
    stage's own ``details.predicted_peak_bytes`` (the plan's figure plus what the run's accelerations add, such as
    frozen text K/V) against its allocator-reserved peak, for the stage whose reserved peak is largest.
    """
    plan = report["plan"]
    den_plan, den = _planned(report, "denoise"), _stage(report, "denoise")
    measured_steps = den["details"].get("steps_seconds") if den else None
    top = max(report["stages"], key=lambda s: s["details"].get("peak_reserved_bytes") or s["peak_bytes"])
    measured_peak = top["details"].get("peak_reserved_bytes") or top["peak_bytes"]
    planned_top = _planned(report, top["stage"])
    predicted_peak = top["details"].get("predicted_peak_bytes") or (planned_top or {}).get("predicted_peak_bytes")
    e2e_pred = plan.get("predicted_end_to_end_seconds") or plan["total_seconds"]
    stage_pred = None
    if den_plan:
        stage_pred = den_plan.get("stage_seconds") or den_plan["predicted_seconds"] + den_plan.get("warm_load_seconds",
                                                                                                    0.0)  # fmt: skip
    out = {
        "label": row["label"],
        "budget": _budget(report["budget"]),
        "profile": report.get("profile", {}).get("line", ""),
        "timings_not_measured": plan.get("timings_not_measured"),
        "denoise_steps_pred_s": den_plan["predicted_seconds"] if den_plan else None,
        "denoise_steps_meas_s": measured_steps,
        "denoise_stage_pred_s": stage_pred,
        "denoise_stage_meas_s": den["seconds"] if den else None,
        "end_to_end_pred_s": e2e_pred,
        "end_to_end_meas_s": row["process_wall_s"],
        "report_total_s": report["total_seconds"],
        "peak_stage": top["stage"],
        "peak_pred_gib": predicted_peak / GIB if predicted_peak else None,
        "peak_meas_gib": measured_peak / GIB,
        "parts_pred": _predicted_parts(plan),
        "parts_meas": _measured_parts(row, report),
        "stages": {
            s["stage"]: {
                "seconds": s["seconds"],
                "peak_gib": s["peak_bytes"] / GIB,
                "reserved_gib": (s["details"].get("peak_reserved_bytes") or 0) / GIB,
                "predicted_peak_gib": (s["details"].get("predicted_peak_bytes") or 0) / GIB,
                "load_s": s["details"].get("load_seconds"),
            }
            for s in report["stages"]
        },
        "planned": {
            s["name"]: {
                k: s.get(k)
                for k in (
                    "predicted_seconds",
                    "stage_seconds",
                    "load_seconds",
                    "setup_seconds",
                    "mp4_seconds",
                    "steady_step_seconds",
                    "first_steps_seconds",
                    "capture_seconds",
                    "graphed",
                    "warm_load_seconds",
                    "cold_load_seconds",
                    "time_note",
                )
            }  # fmt: skip
            for s in plan["stages"]
        },
    }
    for key in TARGETS:
        unit = "gib" if key == "peak" else "s"
        pred, meas = out[f"{key}_pred_{unit}"], out[f"{key}_meas_{unit}"]
        out[f"{key}_ratio"] = meas / pred if pred and meas else None
        out[f"{key}_within"] = None if out[f"{key}_ratio"] is None else abs(pred / meas - 1) <= TARGETS[key]
    return out


def _fmt(x: float | None, spec: str = ".2f") -> str:
    return "—" if x is None else format(x, spec)


def markdown(rows: list[dict[str, Any]]) -> str:
    """The table for docs/benchmarks.md: predicted / measured per figure, the ratio measured / predicted (1.00 =
    exact) and whether it is within the issue's target (steps and stage 15 %, end to end 25 %, peak 10 %); then the
    parts of the end-to-end time, predicted / measured."""
    head = (
        "| run | budget | denoise steps s pred / meas (ratio) | denoise stage s pred / meas (ratio) "
        "| end to end s pred / meas (ratio) | peak GiB pred / meas (ratio, stage) |\n|---|---|---|---|---|---|\n"
    )
    lines = []
    for r in rows:
        cells = []
        for key, unit in (("denoise_steps", "s"), ("denoise_stage", "s"), ("end_to_end", "s"), ("peak", "gib")):
            pred, meas, ratio = r[f"{key}_pred_{unit}"], r[f"{key}_meas_{unit}"], r[f"{key}_ratio"]
            mark = {True: " ok", False: " **off**", None: ""}[r[f"{key}_within"]]
            where = f", {r['peak_stage']}" if key == "peak" else ""
            cells.append(f"{_fmt(pred)} / {_fmt(meas)} ({_fmt(ratio)}{where}){mark}")
        lines.append(f"| {r['label']} | {r['budget']} | " + " | ".join(cells) + " |")
    parts = list(rows[0]["parts_pred"]) if rows else []
    part_head = "\n| run | " + " | ".join(p.removesuffix("_s").replace("_", " ") for p in parts) + " |\n"
    part_head += "|---|" + "---|" * len(parts) + "\n"
    part_lines = [f"| {r['label']} | " + " | ".join(f"{_fmt(r['parts_pred'][p])} / {_fmt(r['parts_meas'][p])}"
                                                   for p in parts) + " |" for r in rows]  # fmt: skip
    return head + "\n".join(lines) + "\n" + part_head + "\n".join(part_lines) + "\n"


def _table(a: argparse.Namespace) -> None:
    rows = []
    for path in sorted(a.dir.glob("*.row.json")):
        row = json.loads(path.read_text())
        if row.get("exit") != 0:
            print(f"{row['label']}: failed (exit {row.get('exit')}), no row")
            continue
        rows.append(row_for(row, json.loads((a.dir / row["report"]).read_text())))
    text = markdown(rows)
    print(text)
    if a.out:
        a.out.write_text(json.dumps(rows, indent=1))
    if a.markdown:
        a.markdown.write_text(text)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("--dir", type=Path, required=True)
    r.add_argument("--label", required=True)
    r.add_argument("--video-dir", help="where the MP4s go (default --dir)")
    r.add_argument("args", nargs=argparse.REMAINDER, help="-- then the generate arguments")
    t = sub.add_parser("table")
    t.add_argument("--dir", type=Path, required=True)
    t.add_argument("--out", type=Path)
    t.add_argument("--markdown", type=Path)
    a = ap.parse_args()
    if a.cmd == "run":
        a.args = a.args[1:] if a.args[:1] == ["--"] else a.args
        _run(a)
    else:
        _table(a)


if __name__ == "__main__":
    main()
