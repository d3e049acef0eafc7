"""Calibrate's start-up timing: a fresh Python interpreter does what ``ltx2-edge generate`` does before its first
stage (imports the CLI and the engine, starts CUDA, and, given the model files, builds the run's ``Generator``:
file checks, tokenizer, budget) and reports when each part ended; its exit is timed from outside.

The child is this interpreter (``sys.executable``), started ``reps`` times (calibrate: once, about 10 s on a GPU box;
the libraries' files are already in the page cache, since calibrate itself imported them); the fastest counts.
Seconds are the child's own ``perf_counter`` from its first line plus the interpreter's start, which the parent
measures as the wall time to the child's report less what the child counted. Writes nothing.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from ltx2_edge.plan.timings import StartupTimings

ENGINE_MODULES = ("ltx2_edge.cli", "ltx2_edge.pipeline")  # what `ltx2-edge generate` imports before its first stage

_CHILD = r"""
import json, sys, time
t0 = time.perf_counter()
args = json.loads(sys.argv[1])
for name in args["modules"]:
    __import__(name)
t1 = time.perf_counter()
if args["cuda"]:
    import torch
    dev = torch.device(args["device"])
    torch.cuda.init()
    torch.empty(1, device=dev)
    torch.cuda.synchronize(dev)
t2 = time.perf_counter()
setup = None
if args["checkpoint"] and args["gemma"]:
    from ltx2_edge.engine.settings import RunSettings
    from ltx2_edge.pipeline import Generator
    Generator(args["checkpoint"], args["gemma"], RunSettings(device=args["device"]))
    setup = time.perf_counter() - t2
counted = time.perf_counter() - t0  # the start-up's parts end here; the text stage's, timed apart, come after
text = None
if args["text"] and args["gemma"]:
    from pathlib import Path
    import torch
    from ltx2_edge.calibrate.load_rates import gemma_load
    from ltx2_edge.quant.policy import QuantPolicy
    from ltx2_edge.run_types import default_dtype
    dev = torch.device(args["device"])
    ckpt = Path(args["checkpoint"]) if args["checkpoint"] else None
    loaded = gemma_load(Path(args["gemma"]), dev, default_dtype(dev), QuantPolicy.from_flags(args["text"]), ckpt)
    text = loaded if isinstance(loaded, str) else [loaded.seconds, loaded.encode_s, loaded.embeddings_s,
                                                    loaded.embeddings_first_s]
print(json.dumps({"import": t1 - t0, "cuda": t2 - t1, "setup": setup, "text": text, "counted": counted}),
      flush=True)
"""


def _child(payload: dict, timeout: float) -> tuple[dict, float, float]:
    """One child: (its report, seconds from start to its report, seconds from its report to its exit)."""
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-c", _CHILD, json.dumps(payload)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        reported = time.perf_counter()
        proc.wait(timeout=timeout)
        ended = time.perf_counter()
        err = proc.stderr.read() if proc.stderr is not None else ""
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    if proc.returncode != 0 or not line:
        tail = (err or "").strip().splitlines()[-1:] or ["no output"]
        raise RuntimeError(f"the start-up probe exited {proc.returncode}: {tail[0][:200]}")
    return json.loads(line), reported - start, ended - reported


@dataclass(frozen=True)
class FreshText:
    """The text stage's parts in a fresh process (``load_rates.gemma_load`` there): Gemma loaded whole, its first
    encode, the embeddings processor's load and first pass (None without the checkpoint); or ``why`` not."""

    seconds: float | None
    encode_s: float | None
    embeddings_s: float | None = None
    embeddings_first_s: float | None = None
    why: str = ""


def measure_startup(device: str, checkpoint: Path | None = None, gemma_root: Path | None = None, reps: int = 1,
                    modules: tuple[str, ...] = ENGINE_MODULES, timeout: float = 120.0, text: str | None = None,
                    ) -> tuple[StartupTimings, FreshText | None]:  # fmt: skip
    """Start ``reps`` fresh interpreters that import ``modules``, start CUDA on ``device`` (a GPU) and, with both
    model paths, build a ``Generator``; the fastest child's figures. ``text`` (a precision, with ``gemma_root``):
    the child then also runs the text stage's parts (Gemma loaded whole and encoding, then with ``checkpoint`` the
    embeddings processor), after its report's start-up parts, as a run does in its fresh process (meeting the caches
    calibrate filled)."""
    payload = {"modules": list(modules), "cuda": device.startswith("cuda"), "device": device,
               "checkpoint": str(checkpoint or ""), "gemma": str(gemma_root or ""), "text": text or ""}  # fmt: skip
    best: tuple[float, StartupTimings] | None = None
    fresh: FreshText | None = None
    for _ in range(reps):
        report, to_report, exit_s = _child(payload, timeout)
        if isinstance(report.get("text"), str):
            fresh = FreshText(None, None, why=report["text"])
        elif report.get("text") is not None:
            fresh = FreshText(*report["text"])
            # The start-up is what came before the text stage (and its gaps: ~0).
            to_report -= sum(v for v in report["text"] if v is not None)
        interpreter = max(0.0, to_report - report["counted"])  # Python's own start, before the child's first line
        timings = StartupTimings(import_s=interpreter + report["import"], cuda_init_s=report["cuda"], exit_s=exit_s,
                                 setup_s=report["setup"])  # fmt: skip
        total = to_report + exit_s
        if best is None or total < best[0]:
            best = (total, timings)
    assert best is not None  # reps >= 1
    t = best[1]
    setup = f", the run's setup {t.setup_s:.2f} s (Generator on the given files)" if t.setup_s is not None else (
        ", the run's setup not measured (give --checkpoint-path and --gemma-root)")  # fmt: skip
    who = "one fresh interpreter" if reps == 1 else f"fastest of {reps} fresh interpreters"
    how = (f"{who}: imports ({', '.join(modules)}) {t.import_s:.2f} s, CUDA start "
           f"{t.cuda_init_s:.2f} s{setup}, exit {t.exit_s:.2f} s")  # fmt: skip
    return StartupTimings(t.import_s, t.cuda_init_s, t.exit_s, t.setup_s, how), fresh
