"""Prediction against measurement (issue 17, item 2): fresh `ltx2-edge generate` processes, their reports, one table.

``run`` starts ``python3 -m ltx2_edge generate ARGS`` as a fresh process (the user's case: imports, CUDA context,
loads and all), times it from outside, and keeps the report beside a small row file. ``table`` reads every row and
prints, per run: the plan's denoise, end-to-end and peak figures against the measured ones, as ratios
(measured / predicted). The plan's figures are the ones the run recorded in its own report (``report["plan"]``),
so they were made before any weight loaded, with the profile the run chose (the report names it).

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


def row_for(row: dict[str, Any], report: dict[str, Any]) -> dict[str, Any]:
    """One table row: predicted and measured denoise steps, denoise stage, end to end, and the largest peak.

    The denoise prediction is the plan's steps x max(compute, copy) (``predicted_seconds``); it is set against the
    measured steps (``steps_seconds``) and, where the plan prices loads (``warm_load_seconds``), against the whole
    stage. End to end is the plan's ``predicted_end_to_end_seconds`` where it has one, else its compute total,
    against the process's wall time. Peaks: the plan's largest stage peak against the largest measured one.
    """
    plan = report["plan"]
    den_plan, den = _planned(report, "denoise"), _stage(report, "denoise")
    measured_steps = den["details"].get("steps_seconds") if den else None
    predicted_peak = max(s["predicted_peak_bytes"] for s in plan["stages"])
    measured_peak = max(s["details"].get("peak_reserved_bytes") or s["peak_bytes"] for s in report["stages"])
    e2e_pred = plan.get("predicted_end_to_end_seconds") or plan["total_seconds"]
    out = {
        "label": row["label"],
        "budget": _budget(report["budget"]),
        "profile": report.get("profile", {}).get("line", ""),
        "denoise_steps_pred_s": den_plan["predicted_seconds"] if den_plan else None,
        "denoise_steps_meas_s": measured_steps,
        "denoise_stage_pred_s": (den_plan["predicted_seconds"] + den_plan.get("warm_load_seconds", 0.0))
        if den_plan
        else None,
        "denoise_stage_meas_s": den["seconds"] if den else None,
        "end_to_end_pred_s": e2e_pred,
        "end_to_end_meas_s": row["process_wall_s"],
        "report_total_s": report["total_seconds"],
        "peak_pred_gib": predicted_peak / GIB,
        "peak_meas_gib": measured_peak / GIB,
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
            s["name"]: {k: s.get(k) for k in ("predicted_seconds", "warm_load_seconds", "cold_load_seconds")}
            for s in plan["stages"]
        },
    }
    for key in ("denoise_steps", "denoise_stage", "end_to_end", "peak"):
        unit = "gib" if key == "peak" else "s"
        pred, meas = out[f"{key}_pred_{unit}"], out[f"{key}_meas_{unit}"]
        out[f"{key}_ratio"] = meas / pred if pred and meas else None
    return out


def _fmt(x: float | None, spec: str = ".2f") -> str:
    return "—" if x is None else format(x, spec)


def markdown(rows: list[dict[str, Any]]) -> str:
    """The table for docs/benchmarks.md: measured / predicted per figure (1.00 = exact)."""
    head = (
        "| run | budget | denoise steps s pred / meas (ratio) | denoise stage s pred / meas (ratio) "
        "| end to end s pred / meas (ratio) | peak GiB pred / meas (ratio) |\n|---|---|---|---|---|---|\n"
    )
    lines = []
    for r in rows:
        cells = []
        for key, unit in (("denoise_steps", "s"), ("denoise_stage", "s"), ("end_to_end", "s"), ("peak", "gib")):
            pred, meas, ratio = r[f"{key}_pred_{unit}"], r[f"{key}_meas_{unit}"], r[f"{key}_ratio"]
            cells.append(f"{_fmt(pred)} / {_fmt(meas)} ({_fmt(ratio)})")
        lines.append(f"| {r['label']} | {r['budget']} | " + " | ".join(cells) + " |")
    return head + "\n".join(lines) + "\n"


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
