"""The pipelines benchmark (issue 8): ltx2-edge's pipelines beyond one-stage, each at 32 and 16 GiB, one device call.

distilled-one-stage at W1 (512x288, 97 frames); distilled and two-stage at 1024x576, 97 frames (stage 1 at
512x288: two-stage with CFG and 20 steps, distilled with its 8 sigmas; then the upsampler and 3 stage-2 sigmas);
default quantization (fp8 on an H100). Each run is a fresh ``ltx2-edge generate`` process measured as
bench/reference.py measures (``Call``: host and NVML peaks from outside, deadlines, records rewritten after each
run). The distilled runs name their model with ``--distilled-checkpoint-path`` (the random full checkpoint under
the distilled file's name: timing and memory do not depend on the values). Renders every run's per-stage table.
Usage: python bench/pipelines.py --checkpoint-path F --distilled-checkpoint-path F2 --gemma-root D
       --spatial-upsampler-path U --distilled-lora L --out-dir DIR [--call-start EPOCH] [--tiny]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from reference import Call, Run, flags
from reference_table import gib, sec

W1 = (512, 288, 97)
LARGE = (1024, 576, 97)
TINY = {"distilled-one-stage": (128, 64, 9), "distilled": (128, 128, 9), "two-stage": (128, 128, 9)}
# (label, pipeline, budget GiB, expected wall seconds), most important first.
RUNS = [
    ("distilled-one-stage-w1-32", "distilled-one-stage", 32, 45),
    ("distilled-1024x576-32", "distilled", 32, 70),
    ("two-stage-1024x576-32", "two-stage", 32, 90),
    ("distilled-one-stage-w1-16", "distilled-one-stage", 16, 45),
    ("distilled-1024x576-16", "distilled", 16, 75),
    ("two-stage-1024x576-16", "two-stage", 16, 95),
]


def pipeline_runs(a: argparse.Namespace) -> list[Run]:
    """One ``Run`` per RUNS row, with the files each pipeline needs."""
    runs = []
    for label, pipeline, budget, estimate in RUNS:
        width, height, frames = TINY[pipeline] if a.tiny else (W1 if pipeline == "distilled-one-stage" else LARGE)
        argv = ["-m", "ltx2_edge", "generate", "--prompt", "A red kite over a windy beach at sunset, waves and gulls",
                "--quiet", "--overwrite", "--pipeline", pipeline]  # fmt: skip
        argv += flags(width=width, height=height, num_frames=frames, gemma_root=a.gemma_root, budget=f"{budget}GiB",
                      output_path=a.work_dir / f"{label}.mp4")  # fmt: skip
        if pipeline.startswith("distilled"):
            argv += flags(distilled_checkpoint_path=a.distilled_checkpoint_path)
        else:
            argv += flags(checkpoint_path=a.checkpoint_path, distilled_lora=a.distilled_lora)
            argv += flags(num_inference_steps=2) if a.tiny else []
        if pipeline != "distilled-one-stage":
            argv += flags(spatial_upsampler_path=a.spatial_upsampler_path)
        setting = f"{pipeline}, {width}x{height}x{frames}, default quantization, budget {budget} GiB"
        runs.append(Run("ltx2-edge", label, setting, argv, estimate, {"budget": str(budget), "pipeline": pipeline}))
    return runs


def stage_table(record: dict[str, Any]) -> list[str]:
    """The run's per-stage table (stage | peak | predicted | budget | seconds | technique) from its report."""
    outside = (f"host anon peak {gib(record.get('peak_host_anon_bytes'))} GiB, NVML peak "
               f"{gib(record.get('peak_nvml_bytes'))} GiB")  # fmt: skip
    head = [f"**{record['label']}** ({record['setting']}): total {sec(record.get('total_seconds'))} s, wall "
            f"{sec(record.get('wall_seconds'), 0)} s, {outside}", ""]  # fmt: skip
    if record.get("status") != "ok":
        return [*head, f"not measured: {record.get('error') or record.get('status')}", ""]
    rows = [
        "| stage | peak GiB (allocator) | predicted GiB | budget GiB | seconds | technique |",
        "|---|---|---|---|---|---|",
    ]
    for stage in record["raw"]["stages"]:
        d = stage.get("details", {})
        rows.append(
            f"| {stage['stage']} | {gib(stage.get('peak_bytes'))} | {gib(d.get('predicted_peak_bytes'))} | "
            f"{gib(d.get('budget_bytes'))} | {sec(stage.get('seconds'), 2)} | {stage.get('technique', '')} |"
        )
    return [*head, *rows, ""]


def render(doc: dict[str, Any]) -> str:
    """Markdown: a summary line per run, then each run's per-stage table."""
    lines = [f"Device: {doc.get('device')}; call started {doc.get('started_utc')} UTC", ""]
    for record in doc["records"]:
        lines += stage_table(record)
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for name in ("checkpoint-path", "distilled-checkpoint-path", "gemma-root", "spatial-upsampler-path",
                 "distilled-lora", "out-dir"):  # fmt: skip
        ap.add_argument(f"--{name}", type=Path, required=True)
    ap.add_argument("--work-dir", type=Path, default=Path("/tmp/pipelines"))
    ap.add_argument("--call-start", type=float, default=None)
    ap.add_argument("--deadline-s", type=float, default=540)
    ap.add_argument("--hard-deadline-s", type=float, default=585)
    ap.add_argument("--only", default="")
    ap.add_argument("--tiny", action="store_true", help="CPU wiring check on the tiny checkpoint")
    a = ap.parse_args()
    a.call, a.size, a.quantized_path = "pipelines", {"width": 512, "height": 288, "num_frames": 97, "steps": 8}, None
    for folder in (a.out_dir, a.work_dir):
        folder.mkdir(parents=True, exist_ok=True)
    call = Call(a)
    for run in pipeline_runs(a):
        if not a.only or run.label in a.only.split(","):
            call.run(run)
    call.write()
    (a.out_dir / "pipelines_table.md").write_text(render(json.loads((a.out_dir / "pipelines.json").read_text())))
    print(render(call.doc))


if __name__ == "__main__":
    main()
