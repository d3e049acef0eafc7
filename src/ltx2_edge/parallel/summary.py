"""What a CFG-parallel run printed at its end: one row per rank (its passes, its denoise, its peaks against the
per-GPU budget) from the summaries ``launch.run_cfg_parallel`` returns. Formats only; imports nothing heavy."""

from __future__ import annotations

from typing import Any

_GIB = 1024**3


def summary_lines(summaries: list[dict[str, Any]]) -> list[str]:
    """A table: rank, device, passes, denoise seconds per step, each stage's peak GiB, within the budget."""
    rows = [("rank", "device", "passes", "denoise s/step", "peak GiB by stage", "within budget")]
    for s in summaries:
        stages = s.get("report_stages") or s["stages"]  # rank 0's report has the decode too
        denoise = next((st for st in stages if st["stage"] == "denoise"), {})
        peaks = ", ".join(f"{st['stage']} {st['peak_bytes'] / _GIB:.2f}" for st in stages)
        within = all(st.get("within_budget", True) for st in stages)
        rows.append((str(s["rank"]), s["device"], ", ".join(s["passes"]), str(denoise.get("seconds_per_step", "")),
                     peaks, "yes" if within else "NO"))  # fmt: skip
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = [" | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    lines.insert(1, "-+-".join("-" * w for w in widths))
    return lines
