"""The reference benchmark's single entry (issue 7): every system x setting on W1, measured the same way.

``ours``: ltx2-edge ``generate`` at budgets none / 32 / 24 / 16 GiB, default quantization (fp8 on an H100) and
bf16, discrete and (32/24/16) ``--unified``; the first run right after the page cache is dropped (cold).
``peers``: ltx-pipelines 1.0.0 (peer_official.py) and diffusers 0.42.1 (peer_diffusers.py, in its own Python
environment, ``--diffusers-path``). Each run is a fresh process, measured from outside as well as by itself:
peak host memory from the kernel (``wait4``'s ru_maxrss; RssAnon/RssShmem sampled from /proc every 50 ms), device
memory as NVML sees it (sampled, idle baseline subtracted), plus the system's own stage times and allocator peaks.
Runs go in order of importance; one that would not finish before ``--deadline-s`` after the call began is
recorded "not run: call time", one still running at ``--hard-deadline-s`` is killed and recorded so. The records
file is rewritten after every run, so a call cut short keeps what it measured. It never changes what a system
computes and never hides a failure. Render the table with bench/reference_table.py.
Usage: python bench/reference.py ours|peers --checkpoint-path F --gemma-root D --out-dir DIR [--call-start EPOCH]
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from peer_diffusers import PROMPT
from reference_probe import execute, nvml_reader

BENCH = Path(__file__).resolve().parent
TINY = {"width": 256, "height": 128, "num_frames": 17, "steps": 2}  # --tiny: CPU wiring check of the whole chain
W1 = {"width": 512, "height": 288, "num_frames": 97, "steps": 20}
QUANTIZE_ESTIMATE_S = 60  # `ltx2-edge quantize --to fp8` of the full checkpoint on the H100: 52.5 s

# Our settings, most important first: (quantization, budget GiB, unified, expected wall seconds). The default
# request (auto: fp8 on an H100) cold then warm, bf16 unbounded (the peers' precision), streaming, one pool (fp8
# from a file quantized once, as a Jetson would keep it), then the rest.
# fmt: off
OURS = [("auto", "32", False, 75), ("auto", "32", False, 65), ("bf16", "none", False, 50),
        ("auto", "16", False, 65), ("fp8", "16", True, 80), ("fp8", "24", True, 65), ("auto", "24", False, 65),
        ("fp8", "32", True, 60), ("auto", "none", False, 65), ("bf16", "32", False, 60), ("bf16", "16", False, 65),
        ("bf16", "24", False, 60), ("bf16", "16", True, 150), ("bf16", "32", True, 90), ("bf16", "24", True, 110)]
# fmt: on


def flags(**kw: Any) -> list[str]:
    """``--key value`` pairs (underscores become dashes)."""
    return [x for k, v in kw.items() for x in (f"--{k.replace('_', '-')}", str(v))]


@dataclass
class Run:
    """One system x setting: how to start it and what it is expected to cost (seconds, from earlier calls)."""

    system: str
    label: str
    setting: str
    argv: list[str]
    estimate_s: float
    meta: dict[str, Any] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)


def ours_runs(a: argparse.Namespace) -> list[Run]:
    """ltx2-edge ``generate`` runs, in OURS order; only the first is cold."""
    s = a.size
    clip = flags(width=s["width"], height=s["height"], num_frames=s["num_frames"], num_inference_steps=s["steps"])
    runs = []
    for i, (quant, budget, unified, estimate) in enumerate(OURS):
        mode = "unified" if unified else "discrete"
        label = f"ours-{quant}-{budget}-{mode}" + ("-cold" if i == 0 else "")
        # the allocator comparison (issue 3): the same runs with --cuda-allocator, labelled apart
        label += f"-{a.cuda_allocator}" if a.cuda_allocator else ""
        # fp8 in one pool streams from a pre-quantized file (made once, before the first such run); bf16 from
        # the original file, as a Jetson user with the official checkpoint would.
        prequantized = quant == "fp8"
        argv = ["-m", "ltx2_edge", "generate", "--prompt", PROMPT, "--quiet", "--overwrite", *clip]
        argv += flags(checkpoint_path=a.quantized_path if prequantized else a.checkpoint_path,
                      gemma_root=a.gemma_root, output_path=a.work_dir / f"{label}.mp4", quantization=quant,
                      budget=budget if budget == "none" else f"{budget}GiB")  # fmt: skip
        argv += ["--unified"] if unified else []
        what = {"auto": "default quantization", "fp8": "fp8 (pre-quantized file)", "bf16": "bf16"}[quant]
        setting = f"{what}, budget {budget}, {mode}"
        if a.cuda_allocator:
            argv += flags(cuda_allocator=a.cuda_allocator)
            setting += f", {a.cuda_allocator} allocator"
        # headline: the default request, warm, is what each peer row is compared with.
        meta = {"cold": i == 0, "headline": i == 1, "needs_quantized": prequantized, "budget": budget}
        meta["unified"] = unified
        runs.append(Run("ltx2-edge", label, setting, argv, estimate, meta))
    return runs


def peer_runs(a: argparse.Namespace) -> list[Run]:
    """The peers, most important first: the baseline, what users pick under a 32 GiB cap, then the rest."""
    from ltx2_edge.inputs import DEFAULT_NEGATIVE_PROMPT

    def official(label: str, setting: str, extra: list[str], estimate: float, **meta: Any) -> Run:
        argv = [str(BENCH / "peer_official.py"), *flags(checkpoint_path=a.checkpoint_path, gemma_root=a.gemma_root)]
        argv += flags(steps=a.size["steps"], mp4=a.work_dir / f"{label}.mp4")
        return Run("ltx-pipelines 1.0.0", label, setting, argv + extra, estimate, meta)

    def diffusers(label: str, setting: str, extra: list[str], estimate: float) -> Run:
        argv = [str(BENCH / "peer_diffusers.py"), *flags(gemma_root=a.gemma_root, checkpoint_path=a.checkpoint_path,
                                                         mp4=a.work_dir / f"{label}.mp4", **a.size)]  # fmt: skip
        argv += ["--negative-prompt", DEFAULT_NEGATIVE_PROMPT, *(["--tiny"] if a.tiny else []), *extra]
        # Its own environment: diffusers 0.42.1 needs huggingface_hub >= 1.32, which our transformers refuses.
        env = {"PYTHONPATH": os.pathsep.join([str(a.diffusers_path), str(BENCH.parent / "src")])}
        return Run("diffusers 0.42.1", label, setting, argv, estimate, {}, env)

    cap = flags(device_cap_gib=32)
    runs = [
        official("official-bf16-cfg", "bf16, CFG only", [], 65, baseline=True),
        official("official-bf16-cfg-32g", "bf16, CFG only, 32 GiB cap", cap, 50),
        diffusers("diffusers-group-32g",
                  "bf16, group offloading (block_level, use_stream; decoders resident), 32 GiB cap",
                  ["--offload", "group", *cap], 130),
        diffusers("diffusers-model-32g", "bf16, enable_model_cpu_offload(), 32 GiB cap",
                  ["--offload", "model", *cap], 90),
        official("official-fp8cast-cfg", "fp8_cast, CFG only", ["--quantization", "fp8-cast"], 65),
        official("official-bf16-full", "bf16, default guidance (CFG + STG + modality)", ["--guidance", "full"], 75),
    ]  # fmt: skip
    if a.tiny:  # offloading needs CUDA: the CPU wiring check runs diffusers without it
        runs.append(diffusers("diffusers-none-cpu", "bf16, no offload (CPU wiring check)", ["--offload", "none"], 60))
    return runs


def from_report(report: dict[str, Any]) -> dict[str, Any]:
    """Our run report in the fields every record shares (decode includes our MP4 encoding: they overlap)."""
    stages = {s["stage"]: s for s in report["stages"]}
    details = stages.get("denoise", {}).get("details", {})
    cuda = all(s["memory_kind"] == "cuda allocated" for s in report["stages"])
    decode = sum(s["seconds"] for n, s in stages.items() if n.startswith("decode")) or None
    return {"stages": {"text_encode": stages.get("text_encode", {}).get("seconds"), "decode": decode,
                       "denoise": stages.get("denoise", {}).get("seconds")},
            "denoise_load_seconds": details.get("load_seconds"), "denoise_steps_seconds": details.get("steps_seconds"),
            # Steady steps: compilation and graph capture happen inside the first accelerated step, shown apart.
            "steady_seconds_per_step": details.get("seconds_per_step_steady"),
            "compile_seconds": sum(r[1] for r in details.get("sub_rows", ())) or None,
            "total_seconds": report["total_seconds"], "device_name": report["device"].get("name", "cpu"),
            "peak_allocated_bytes": max(s["peak_bytes"] for s in report["stages"]) if cuda else None,
            "precision": report.get("quantization", {}).get("precision"), "streamed": details.get("residency"),
            "within_budget": all(s["details"].get("within_budget", True) for s in report["stages"])}  # fmt: skip


def last_line(log: Path, offset: int) -> str:
    """The last non-empty line a run wrote (our CLI's one-line error, or a traceback's last line)."""
    with log.open() as f:
        f.seek(offset)
        lines = [ln.strip() for ln in f.read().replace("\r", "\n").splitlines() if ln.strip()]
    return lines[-1][:300] if lines else "no output"


def compute_floor(a: argparse.Namespace) -> dict[str, Any]:
    """The denoising's compute floor on this device, per forward and GEMM precision: each kernel class's FLOPs
    over the measured rate for it (plan/flops.py and plan/profiles.py through the planner, headers only)."""
    from ltx2_edge.checkpoint.validate import inspect_checkpoint, inspect_gemma_folder
    from ltx2_edge.memory import runtime
    from ltx2_edge.plan.budget import Budget
    from ltx2_edge.plan.plan_types import PlanRequest
    from ltx2_edge.plan.profiles import profile_for
    from ltx2_edge.quant.policy import QuantPolicy

    name = "h100" if "H100" in a.device else "cpu" if a.device == "cpu" else None
    if name is None:
        return {"device": a.device, "profile": None, "why": f"no measured rates for {a.device}"}
    header, shards = inspect_checkpoint(a.checkpoint_path).header, inspect_gemma_folder(a.gemma_root).shards
    floor: dict[str, Any] = {"device": a.device, "profile": name, "source": profile_for(name).source}
    s = a.size
    for precision in ("bf16", "fp8", "int8"):
        request = PlanRequest(s["width"], s["height"], s["num_frames"], 24.0, s["steps"], 1, precision)
        plan = runtime.build_plan(header, shards, request, Budget(None, None, False), profile_for(name),
                                  QuantPolicy.from_flags(precision))  # fmt: skip
        stage = plan.stage("denoise")
        floor[precision] = {"seconds_per_forward": stage.compute_seconds_per_step, "flops": stage.flops_per_step}
    return floor


def drop_page_cache() -> str:
    """Drop the kernel's page cache so the next checkpoint read comes from the disk; says what happened."""
    try:
        os.sync()
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
        return "cold"
    except OSError as exc:
        return f"warm (page cache not dropped: {type(exc).__name__}: {exc})"


def make_record(run: Run, a: argparse.Namespace, measured: dict[str, Any], result: Path, error: str) -> dict:
    """One run's record: what was measured from outside plus the system's own numbers (or its error)."""
    rec: dict[str, Any] = {"system": run.system, "label": run.label, "setting": run.setting, **run.meta, **measured}
    if not result.is_file() or (run.system == "ltx2-edge" and measured["rc"] != 0):
        rec.update(status="failed", error=f"exit {measured['rc']}, no result: {error}")
    elif run.system == "ltx2-edge":
        raw = json.loads(result.read_text())
        rec.update(from_report(raw), status="ok", raw=raw, forwards_per_step=2)
        rec["gemm_precision"] = rec["precision"]
    else:
        raw = json.loads(result.read_text())
        keys = ("stages", "denoise_load_seconds", "denoise_steps_seconds", "total_seconds", "device_name",
                "peak_allocated_bytes", "status", "error", "failed_stage", "finite")  # fmt: skip
        rec.update({k: raw.get(k) for k in keys}, raw=raw, forwards_per_step=4 if raw["guidance"] == "full" else 2)
        rec["precision"] = {"none": "bf16", "fp8-cast": "fp8_cast"}[raw.get("quantization", "none")]
        rec["gemm_precision"] = "bf16"  # fp8_cast upcasts its weights to bf16 on every call
    if measured["killed_at_deadline"]:
        rec.update(status="failed", error="killed: still running at the call's hard deadline")
    rec["device_name"], rec["steps"] = rec.get("device_name") or a.device, a.size["steps"]
    if rec.get("steady_seconds_per_step"):
        rec["seconds_per_step"] = rec["steady_seconds_per_step"]
    elif rec.get("denoise_steps_seconds"):
        rec["seconds_per_step"] = rec["denoise_steps_seconds"] / rec["steps"]
    return rec


class Call:
    """One device call's runs in order, under its deadlines; the records file rewritten after each."""

    def __init__(self, a: argparse.Namespace) -> None:
        self.a, self.start = a, a.call_start or time.time()
        self.nvml, a.device = nvml_reader()
        self.log, self.out = a.out_dir / f"{a.call}.log", a.out_dir / f"{a.call}.json"
        self.doc: dict[str, Any] = {"call": a.call, "device": a.device, "command": " ".join(sys.argv),
                                    "request": a.size, "floor": self.floor(), "prep": [], "records": [],
                                    "started_utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(self.start)),
                                    "notes": []}  # fmt: skip
        if str(a.gemma_root).startswith("/dev/shm"):
            self.doc["notes"].append("Gemma folder in RAM-backed /dev/shm: read from memory in every run, never cold")
        self.quantized: str | None = None  # "ok", or why the pre-quantized file is missing, once tried
        self.pace: dict[str, float] = {}  # per system: the largest (wall / estimate) of its runs in this call

    def floor(self) -> dict[str, Any]:
        try:
            return compute_floor(self.a)
        except Exception as exc:  # the runs matter more than their floor: say why it is missing, go on
            return {"device": self.a.device, "profile": None, "why": f"not computed: {type(exc).__name__}: {exc}"}

    def elapsed(self) -> float:
        return time.time() - self.start

    def write(self) -> None:
        tmp = self.out.with_suffix(".partial")
        tmp.write_text(json.dumps(self.doc, indent=1, default=str))
        os.replace(tmp, self.out)

    def launch(self, run: Run) -> tuple[dict[str, Any], str]:
        """Start ``run`` with what is left before the hard deadline; (measurements, its last output line)."""
        with self.log.open("a") as f:
            f.write(f"\n=== {run.label} ({self.elapsed():.0f} s into the call): {shlex.join(run.argv)}\n")
        offset = self.log.stat().st_size
        measured = execute(run.argv, run.env, self.log, self.a.hard_deadline_s - self.elapsed(), self.nvml)
        return measured, last_line(self.log, offset)

    def skip(self, run: Run, why: str) -> None:
        self.doc["records"].append({"system": run.system, "label": run.label, "setting": run.setting,
                                    "device_name": self.a.device, "status": f"not run: {why}", **run.meta})  # fmt: skip
        self.write()

    def quantize(self) -> None:
        """Make the pre-quantized fp8 file the one-pool fp8 runs stream from (once per call)."""
        a = self.a
        if a.reuse_quantized and Path(a.quantized_path).is_file():  # made by an earlier call on this same box
            self.quantized = "ok"
            self.doc["prep"].append({"label": "quantize-fp8", "status": "reused from an earlier call on this box"})
            return
        argv = ["-m", "ltx2_edge", "quantize", "--to", "fp8", "--overwrite"]
        device = "cpu" if a.device == "cpu" else "cuda"
        argv += flags(checkpoint_path=a.checkpoint_path, out=a.quantized_path, device=device)
        measured, line = self.launch(Run("ltx2-edge", "quantize-fp8", "ltx2-edge quantize --to fp8", argv, 0))
        self.quantized = "ok" if measured["rc"] == 0 else f"the pre-quantized file was not made: {line}"
        if self.quantized == "ok" and str(a.quantized_path).startswith("/dev/shm"):
            note = "the --unified fp8 runs stream from a pre-quantized file in RAM-backed /dev/shm (never cold)"
            self.doc["notes"].append(note)
        self.doc["prep"].append({"label": "quantize-fp8", "argv": argv, "status": self.quantized, **measured})

    def run(self, run: Run) -> None:
        a, first_quantized = self.a, run.meta.get("needs_quantized") and self.quantized is None
        # Estimates come from earlier calls; this machine's pace so far scales them (never below 0.6).
        needs = run.estimate_s * max(self.pace.get(run.system, 1.0), 0.6)
        needs += QUANTIZE_ESTIMATE_S if first_quantized else 0
        if self.elapsed() + needs > a.deadline_s:
            return self.skip(run, f"call time (needs ~{needs:.0f} s, {a.deadline_s - self.elapsed():.0f} s left)")
        if first_quantized:
            self.quantize()
        if run.meta.get("needs_quantized") and self.quantized != "ok":
            return self.skip(run, str(self.quantized))
        cache = drop_page_cache() if run.meta.get("cold") else "warm"
        result = a.work_dir / (f"{run.label}.report.json" if run.system == "ltx2-edge" else f"{run.label}.json")
        result.unlink(missing_ok=True)  # a stale result from an earlier call must not pass for this run's
        argv = run.argv if run.system == "ltx2-edge" else [*run.argv, "--out", str(result)]
        measured, line = self.launch(Run(run.system, run.label, run.setting, argv, run.estimate_s, run.meta, run.env))
        rec = {**make_record(run, a, measured, result, line), "cache": cache}
        pace = measured["wall_seconds"] / run.estimate_s
        self.pace[run.system] = max(self.pace.get(run.system, pace), pace)
        self.doc["records"].append(rec)
        self.write()
        shown = f"{rec.get('total_seconds') or 0:.1f} s" if rec["status"] == "ok" else rec.get("error")
        print(f"[reference] {run.label}: {rec['status']} {shown} (wall {rec['wall_seconds']:.0f} s)", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("call", choices=("ours", "peers"))
    ap.add_argument("--checkpoint-path", type=Path, required=True)
    ap.add_argument("--gemma-root", type=Path, required=True)
    ap.add_argument("--out-dir", type=Path, required=True, help="records (CALL.json) and the runs' log (CALL.log)")
    ap.add_argument("--work-dir", type=Path, default=Path("/tmp/reference"), help="MP4s and per-run results")
    ap.add_argument("--quantized-path", type=Path, default=Path("/dev/shm/ltx2-fp8.safetensors"))
    ap.add_argument("--diffusers-path", type=Path, default=Path("/tmp/dsite"), help="diffusers' own site dir")
    ap.add_argument("--call-start", type=float, default=None, help="epoch seconds the device call began")
    ap.add_argument("--deadline-s", type=float, default=540, help="start no run expected to end after this")
    ap.add_argument("--hard-deadline-s", type=float, default=585, help="kill a run still going at this")
    ap.add_argument("--only", default="", help="comma list of run labels (default: all)")
    ap.add_argument("--cuda-allocator", default="", help="ours: pass --cuda-allocator; labels get it as a suffix")
    ap.add_argument("--reuse-quantized", action="store_true", help="keep a --quantized-path file already there")
    ap.add_argument("--tiny", action="store_true", help="small request: CPU wiring check on the tiny checkpoint")
    a = ap.parse_args()
    a.size = TINY if a.tiny else W1
    for folder in (a.out_dir, a.work_dir):
        folder.mkdir(parents=True, exist_ok=True)
    call = Call(a)
    runs = ours_runs(a) if a.call == "ours" else peer_runs(a)
    for run in runs:
        if not a.only or run.label in a.only.split(","):
            call.run(run)
    call.write()


if __name__ == "__main__":
    main()
