"""The reference benchmark's table (bench/reference_table.py) on hand-made records: ratios, floors, refusals."""

from __future__ import annotations

import pytest

from conftest import load_bench

table = load_bench("reference_table")

H100, H200 = "NVIDIA H100 80GB HBM3", "NVIDIA H200"
GiB = 1024**3
FLOOR = {
    "device": H100,
    "profile": "h100",
    "bf16": {"seconds_per_forward": 0.0725},
    "fp8": {"seconds_per_forward": 0.0575},
}


def rec(system: str, setting: str, device: str = H100, **kw) -> dict:
    base = {"system": system, "setting": setting, "device_name": device, "status": "ok", "cache": "warm", "steps": 20,
            "forwards_per_step": 2, "gemm_precision": "bf16"}  # fmt: skip
    return base | kw


def baseline(**kw) -> dict:
    fields = dict(baseline=True, total_seconds=44.0, seconds_per_step=0.40, denoise_steps_seconds=8.0,
                  stages={"text_encode": 24.4, "denoise": 15.3, "decode": 0.5, "mux": 2.5})  # fmt: skip
    return rec("ltx-pipelines 1.0.0", "bf16, CFG only", **(fields | kw))


def rows(markdown: str) -> list[dict[str, str]]:
    """The table's body as {column: cell} per row."""
    lines = [ln for ln in markdown.splitlines() if ln.startswith("| ") and not ln.startswith("| system")]
    return [dict(zip(table.COLUMNS, (c.strip() for c in ln.strip("|").split(" | ")), strict=True)) for ln in lines]


def doc(*records: dict, floor: dict | None = None, steps: int = 20) -> dict:
    return {"call": "x", "device": H100, "started_utc": "2026-11-24 10:00:00", "request": {"steps": steps},
            "floor": floor, "records": list(records), "notes": ["Gemma folder in RAM-backed /dev/shm"]}  # fmt: skip


def test_speedups_are_baseline_over_row_for_total_and_step():
    ours = rec("ltx2-edge", "fp8, budget 32", total_seconds=22.0, seconds_per_step=0.16, gemm_precision="fp8")
    out = table.render([doc(ours), doc(baseline())])
    got = {r["system"]: r for r in rows(out)}
    assert got["ltx2-edge"]["speed-up vs baseline (total / step)"] == "2.00x / 2.50x"
    assert got["ltx-pipelines 1.0.0"]["speed-up vs baseline (total / step)"] == "1.00x / 1.00x"
    assert got["ltx-pipelines 1.0.0"]["setting"].endswith("**(baseline)**")
    assert f"Baseline for every ratio: {table.BASELINE} ({H100})." in out


def test_records_from_another_device_get_no_ratio():
    ours = rec("ltx2-edge", "fp8, budget 32", device=H200, total_seconds=20.0, seconds_per_step=0.15)
    out = table.render([doc(ours), doc(baseline())])
    cell = rows(out)[0]["speed-up vs baseline (total / step)"]
    assert cell == f"n/a: {H200} vs {H100}"
    assert f"Records from 2 devices ({H100}, {H200})" in out


def test_compute_floor_scales_with_precision_forwards_and_steps():
    # x floor uses the steady step time (compilation is shown apart): floor 0.0575 x 2 x 20 = 2.3 s for ours.
    ours = rec("ltx2-edge", "fp8", gemm_precision="fp8", denoise_steps_seconds=9.05, seconds_per_step=0.4025)
    full = baseline(forwards_per_step=4, denoise_steps_seconds=17.4, seconds_per_step=0.87, baseline=False)  # 5.8 s
    other = rec("ltx2-edge", "bf16", device=H200, denoise_steps_seconds=5.0)
    out = table.render([doc(ours, full, other, floor=FLOOR)])
    assert [r["x floor"] for r in rows(out)] == ["3.50x", "3.00x", "—"]
    assert "bf16 72.5 ms a forward, 2.90 s for 20 CFG steps, fp8 57.5 ms a forward, 2.30 s for 20 CFG steps" in out


def test_failures_keep_their_error_and_stage_and_get_no_ratio():
    oom = "OutOfMemoryError: CUDA out of memory. Tried to allocate 128.00 MiB. GPU 0 has a total capacity of 79.19 GiB"
    capped = baseline(baseline=False, status="failed", failed_stage="denoise_load", error=oom, total_seconds=None)
    skipped = rec("diffusers 0.42.1", "group offloading", status="not run: call time (needs ~130 s, 40 s left)")
    out = table.render([doc(baseline(), capped, skipped)])
    got = rows(out)
    assert got[1]["status"] == "OOM in denoise_load [1]" and got[2]["status"] == "not run [2]"
    assert f"- [1] {oom}" in out and "- [2] not run: call time (needs ~130 s, 40 s left)" in out
    assert got[1]["speed-up vs baseline (total / step)"] == got[2]["speed-up vs baseline (total / step)"] == "—"


@pytest.mark.parametrize("why", ["failed", "cold"])
def test_no_usable_baseline_means_no_ratios(why):
    base = baseline(status="failed", error="x") if why == "failed" else baseline(cache="cold")
    ours = rec("ltx2-edge", "fp8", total_seconds=22.0, seconds_per_step=0.16)
    out = table.render([doc(ours, base)])
    assert "**not measured, so no ratios**" in out
    assert {r["speed-up vs baseline (total / step)"] for r in rows(out)} == {"—"}


def test_memory_and_stage_cells():
    ours = rec("ltx2-edge", "bf16, budget none", peak_allocated_bytes=38619217408, peak_nvml_bytes=None,
               peak_host_rss_bytes=12 * GiB, peak_host_anon_bytes=3 * GiB // 2, denoise_load_seconds=7.28,
               denoise_steps_seconds=5.93, stages={"text_encode": 8.7, "denoise": 13.64, "decode": 4.12},
               finite=False, within_budget=False)  # fmt: skip
    got = rows(table.render([doc(ours)]))[0]
    assert got["peak device GiB (alloc / NVML)"] == "36.0 / —"
    assert got["peak host GiB (RSS / anon)"] == "12.0 / 1.5"
    assert got["denoise s (load + steps)"] == "13.6 (7.3 + 5.9)"
    assert got["decode + MP4 s"] == "4.1" and got["text encode s"] == "8.7"
    assert got["status"] == "ok (warm, **output not finite**, **over budget**)"


def test_decode_adds_the_peers_mux_and_calls_merge_into_one_table():
    out = table.render([doc(rec("ltx2-edge", "a")), doc(baseline(), floor=FLOOR)])
    got = rows(out)
    assert len(got) == 2 and got[1]["decode + MP4 s"] == "3.0"
    assert out.count("| system |") == 1 and out.count("Gemma folder in RAM-backed /dev/shm") == 1  # said once


def test_a_run_measured_by_a_later_call_replaces_its_not_run_row():
    skipped = rec("ltx2-edge", "bf16, unified", label="ours-bf16-16-unified", status="not run: call time")
    later = rec("ltx2-edge", "bf16, unified", label="ours-bf16-16-unified", total_seconds=110.8)
    never = rec("ltx2-edge", "bf16, 24", label="ours-bf16-24-unified", status="not run: call time")
    got = rows(table.render([doc(baseline(), skipped, never), doc(later)]))
    expected = [("bf16, 24", "not run [1]"), ("bf16, unified", "ok (warm)")]
    assert [(r["setting"], r["status"]) for r in got[1:]] == expected


def test_our_headline_run_against_each_peer_row():
    ours = rec("ltx2-edge", "default quantization, budget 32, discrete", headline=True, total_seconds=22.0,
               seconds_per_step=0.2)  # fmt: skip
    group = rec("diffusers 0.42.1", "group offloading", total_seconds=88.0, seconds_per_step=1.0)
    h200 = rec("diffusers 0.42.1", "model offload", device=H200, total_seconds=50.0, seconds_per_step=0.5)
    out = table.render([doc(ours), doc(baseline(), group, h200)])
    assert "- ltx-pipelines 1.0.0, bf16, CFG only: 2.00x / 2.00x" in out
    assert "- diffusers 0.42.1, group offloading: 4.00x / 5.00x" in out
    assert f"- diffusers 0.42.1, model offload: n/a: {H100} vs {H200}" in out
    cold = table.render([doc(rec("ltx2-edge", "x", headline=True, status="failed", error="e")), doc(baseline())])
    assert "did not finish: no per-peer ratios" in cold
