"""Bench-only: a fresh ``generate`` process with the streaming knobs a device call compares (put this folder first on
PYTHONPATH for that one run). ``LTX2_BENCH_SWITCH_MS``: the interpreter's switch interval; ``LTX2_BENCH_FILE_READERS``:
the threads a ``FileSource`` reads each staging chunk with. Never shipped in the package; nothing reads these names."""

import os
import sys

if os.environ.get("LTX2_BENCH_SWITCH_MS"):
    sys.setswitchinterval(float(os.environ["LTX2_BENCH_SWITCH_MS"]) / 1e3)
if os.environ.get("LTX2_BENCH_FILE_READERS"):
    from ltx2_edge.streaming import sources

    defaults = list(sources.FileSource.__init__.__defaults__ or ())
    defaults[-1] = int(os.environ["LTX2_BENCH_FILE_READERS"])
    sources.FileSource.__init__.__defaults__ = tuple(defaults)
