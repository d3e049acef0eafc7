"""A stage whose reads come in bursts apart (decoders loaded at its start, the vocoder later on a worker thread)
reports the time it spent reading, not the span from its first read to its last."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from ltx2_edge.read_meter import IO_FILE, ReadMeter


@pytest.mark.skipif(not os.path.exists(IO_FILE), reason="no per-process I/O counters on this kernel")
def test_reading_time_leaves_out_the_compute_between_bursts(tmp_path: Path) -> None:
    data = tmp_path / "weights.bin"
    data.write_bytes(os.urandom(2 << 20))
    meter = ReadMeter(interval_s=0.005)
    fd = os.open(data, os.O_RDONLY)
    try:
        os.pread(fd, 1 << 20, 0)
        time.sleep(0.05)  # the first burst lands in its own sample
        time.sleep(0.4)  # "compute": nothing read
        os.pread(fd, 1 << 20, 1 << 20)
        time.sleep(0.05)
    finally:
        os.close(fd)
    sample = meter.stop()
    assert sample is not None and sample.bytes == 2 << 20
    assert sample.span_seconds > 0.45
    assert 0 < sample.seconds < 0.2  # two bursts of at most a couple of intervals each, not the 0.4 s between
