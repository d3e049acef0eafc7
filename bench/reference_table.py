"""Renders the reference benchmark's records (bench/reference.py's ours.json and peers.json) as ONE markdown table.

Rows are system x setting; columns: peak device memory (allocator / NVML), peak host memory (RSS / anonymous),
seconds per stage, total, seconds per denoising step, how far the denoising is from the device's compute floor,
and the speed-up against the baseline row (ltx-pipelines bf16 CFG-only, warm) on total time and per step.
Numbers measured on different devices (an H100 call and an H200 call) are never compared: such a ratio cell
names the device instead of a number. Pure: reads JSON, returns text; it never measures anything.
Usage: python bench/reference_table.py ours.json peers.json > table.md
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

GiB = 1024**3
BASELINE = "ltx-pipelines 1.0.0, bf16, CFG only, no cap, warm"
COLUMNS = ("system", "setting", "status", "peak device GiB (alloc / NVML)", "peak host GiB (RSS / anon)",
           "text encode s", "denoise s (load + steps)", "s/step", "x floor", "decode + MP4 s", "total s",
           "speed-up vs baseline (total / step)")  # fmt: skip
NOTES = (
    "peak device: the allocator's max_memory_allocated over the run's stages / NVML's device memory in use "
    "(CUDA context, library workspaces and cached blocks included; idle baseline subtracted).",
    "peak host: the kernel's peak RSS of the process (wait4 ru_maxrss: mapped checkpoint and /dev/shm pages "
    "included) / peak anonymous RSS (sampled every 50 ms).",
    "denoise: weight load + steps; diffusers onloads weights inside its steps (model offload: the first step, "
    "group offloading: every step); ltx2-edge's compilation and graph capture happen in its first accelerated "
    "step and are shown as 'compile'. s/step: steady steps. x floor: s/step x steps / the compute floor of the same "
    "work (the row's GEMM precision, forwards per step and steps) at the device's measured rates; fp8_cast runs "
    "bf16 GEMMs.",
    "decode + MP4: ltx2-edge encodes the MP4 while it decodes; the peers encode after decoding (ltx-pipelines: "
    "media_io.encode_video as its CLI does; diffusers: export_utils.encode_video).",
    "total: ltx2-edge = generate() (every load, stage and the MP4); ltx-pipelines = pipeline construction + call + "
    "MP4; diffusers = pipeline call + MP4 (its random weights are built in-process: no weight loading counted).",
)


def gib(n: float | None) -> str:
    """Bytes as GiB with one decimal; "—" for unknown."""
    return "—" if n is None else f"{n / GiB:.1f}"


def sec(x: float | None, digits: int = 1) -> str:
    """Seconds with ``digits`` decimals; "—" for unknown."""
    return "—" if x is None else f"{x:.{digits}f}"


def pair(a: str, b: str) -> str:
    """Two formatted values as "a / b"; one "—" when both are unknown."""
    return "—" if a == b == "—" else f"{a} / {b}"


def is_ok(rec: dict[str, Any]) -> bool:
    """The run finished and produced its numbers."""
    return rec.get("status") == "ok"


def find_baseline(records: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The record marked ``baseline`` (reference.py marks ltx-pipelines bf16 CFG-only), if it ran and finished."""
    return next((r for r in records if r.get("baseline") and is_ok(r) and r.get("cache", "warm") == "warm"), None)


def speedup(base: dict[str, Any] | None, rec: dict[str, Any]) -> str:
    """``baseline / this`` for total seconds and seconds per step, only between records of the same device."""
    if base is None or not is_ok(rec):
        return "—"
    if rec.get("device_name") != base.get("device_name"):
        return f"n/a: {rec.get('device_name')} vs {base.get('device_name')}"

    def ratio(key: str) -> str:
        mine, theirs = rec.get(key), base.get(key)
        return "—" if not mine or not theirs else f"{theirs / mine:.2f}x"

    return f"{ratio('total_seconds')} / {ratio('seconds_per_step')}"


def floor_seconds(rec: dict[str, Any], floors: dict[str, dict[str, Any]]) -> float | None:
    """The compute floor of the row's denoising on the row's device (None where that device has no rates)."""
    floor = floors.get(rec.get("device_name") or "")
    if not floor or not floor.get("profile") or rec.get("gemm_precision") not in floor:
        return None
    return floor[rec["gemm_precision"]]["seconds_per_forward"] * rec["forwards_per_step"] * rec["steps"]


def status_cell(rec: dict[str, Any], footnotes: list[str]) -> str:
    """ok (cold/warm), or what happened with a footnote holding the whole one-line error or reason."""
    status = rec.get("status", "")
    if status == "ok":
        cache = rec.get("cache", "warm")
        flags = [cache if cache in ("cold", "warm") else f"{cache} [{len(footnotes) + 1}]"]
        if cache not in ("cold", "warm"):
            footnotes.append(cache)
        flags += ["**output not finite**"] if rec.get("finite") is False else []
        flags += ["**over budget**"] if rec.get("within_budget") is False else []
        return f"ok ({', '.join(flags)})"
    footnotes.append(rec.get("error") or status)
    mark = f"[{len(footnotes)}]"
    if status.startswith("not run"):
        return f"not run {mark}"
    error = rec.get("error") or ""
    what = "OOM" if "OutOfMemoryError" in error or "out of memory" in error.lower() else "failed"
    return f"{what} in {rec['failed_stage']} {mark}" if rec.get("failed_stage") else f"{what} {mark}"


def row(rec: dict[str, Any], base: dict[str, Any] | None, floors: dict, footnotes: list[str]) -> list[str]:
    """One record's cells, in COLUMNS order; its error or reason, if any, appended to ``footnotes``."""
    stages = rec.get("stages") or {}
    load, steps, denoise = rec.get("denoise_load_seconds"), rec.get("denoise_steps_seconds"), stages.get("denoise")
    denoise_cell = sec(denoise) + (f" ({sec(load)} + {sec(steps)})" if load is not None and steps is not None else "")
    if rec.get("compile_seconds"):
        denoise_cell += f", compile {sec(rec['compile_seconds'])}"
    per_step = rec.get("seconds_per_step")
    decode = [stages[k] for k in ("decode", "mux") if stages.get(k) is not None]
    floor = floor_seconds(rec, floors)
    setting = rec.get("setting", "") + (" **(baseline)**" if rec is base else "")
    return [rec.get("system", ""), setting, status_cell(rec, footnotes),
            pair(gib(rec.get("peak_allocated_bytes")), gib(rec.get("peak_nvml_bytes"))),
            pair(gib(rec.get("peak_host_rss_bytes")), gib(rec.get("peak_host_anon_bytes"))),
            sec(stages.get("text_encode")), denoise_cell, sec(rec.get("seconds_per_step"), 3),
            "—" if floor is None or not per_step else f"{per_step * rec['steps'] / floor:.2f}x",
            sec(sum(decode)) if decode else "—", sec(rec.get("total_seconds")), speedup(base, rec)]  # fmt: skip


def against_peers(records: list[dict[str, Any]]) -> list[str]:
    """Our headline run (default quantization, 32 GiB, warm) against each peer row that finished."""
    ours = next((r for r in records if r.get("headline") and is_ok(r)), None)
    if ours is None:
        return ["Our default run (default quantization, budget 32, warm) did not finish: no per-peer ratios."]
    lines = [f"Our default run ({ours.get('setting')}, warm) against each peer row (peer / ours, total / step):"]
    peers = [p for p in records if p.get("system") != "ltx2-edge" and is_ok(p)]
    lines += [f"- {p['system']}, {p.get('setting')}: {speedup(p, ours)}" for p in peers] or ["- no peer run finished"]
    return lines


def versions(records: list[dict[str, Any]]) -> str:
    """Each system's package versions as its runs reported them (ours in its report, the peers in their records)."""
    out: dict[str, dict[str, str]] = {}
    for rec in records:
        out.setdefault(rec.get("system", "?"), {}).update((rec.get("raw") or {}).get("versions") or {})
    shown = {system: ", ".join(f"{k} {v}" for k, v in sorted(found.items())) for system, found in out.items()}
    return "; ".join(f"{system}: {text}" for system, text in shown.items() if text)


def render(docs: list[dict[str, Any]]) -> str:
    """One markdown table over every call's records, with the baseline, floors, devices and notes stated."""
    records = [r for d in docs for r in d.get("records", [])]
    # A run one call had no time for and a later call measured: the measurement replaces the "not run" row.
    ran = {r.get("label") for r in records if not str(r.get("status", "")).startswith("not run")}
    records = [r for r in records if r.get("label") is None or r["label"] not in ran
               or not str(r.get("status", "")).startswith("not run")]  # fmt: skip
    notes = list(dict.fromkeys(n for d in docs for n in d.get("notes", [])))
    floors = {d["floor"]["device"]: d["floor"] for d in docs if d.get("floor")}
    base = find_baseline(records)
    devices = sorted({r.get("device_name") or "?" for r in records})
    calls = ", ".join(f"{d.get('call')} ({d.get('started_utc')} UTC, {d.get('device')})" for d in docs)
    found = f" ({base.get('device_name')})." if base else ": **not measured, so no ratios**."
    lines = [f"Calls: {calls}.", f"Baseline for every ratio: {BASELINE}{found}",
             f"Versions: {versions(records)}."]  # fmt: skip
    if len(devices) > 1:
        lines.append(f"**Records from {len(devices)} devices ({', '.join(devices)}): ratios only on the baseline's.**")
    steps = max((d.get("request") or {}).get("steps", 0) for d in docs)
    for device, floor in floors.items():
        if not floor.get("profile"):
            lines.append(f"Compute floor on {device}: none ({floor.get('why', 'no rates')}).")
            continue
        per = [(p, floor[p]["seconds_per_forward"]) for p in ("bf16", "fp8", "int8") if p in floor]
        text = ", ".join(f"{p} {f * 1e3:.1f} ms a forward, {f * 2 * steps:.2f} s for {steps} CFG steps" for p, f in per)
        lines.append(f"Compute floor of the denoising on {device} ({floor['profile']} rates): {text}.")
    footnotes: list[str] = []
    body = [row(r, base, floors, footnotes) for r in records]
    lines += ["", "| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(cells) + " |" for cells in body]
    lines += ["", *against_peers(records), ""] + [f"- {n}" for n in NOTES]
    lines += [f"- {n}" for n in notes]
    lines += [f"- [{i}] {text}" for i, text in enumerate(footnotes, 1)]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("records", type=Path, nargs="+", help="JSON files written by bench/reference.py")
    args = ap.parse_args()
    print(render([json.loads(p.read_text()) for p in args.records]), end="")


if __name__ == "__main__":
    main()
