"""What this process read from files while a stage ran: bytes, bytes the storage device delivered, and when.

Linux keeps both counters per process (``/proc/self/io``, every thread included): ``rchar`` counts the bytes every
``read``/``preadv`` returned, page cache or not, and ``read_bytes`` the bytes fetched from the storage device for
this process (what was cold). Weights load through ``preadv`` (``streaming.tensor_reader``, ``streaming.sources``),
so ``rchar`` is the bytes read from the checkpoint files, plus a few KiB of tokenizer and Python files.

Seconds come from a daemon thread that samples the counters every ``interval_s``: the reading time is the sum of the
intervals in which they grew by more than ``MIN_GROWTH``, so a stage that reads for 4.6 s and computes for 5 s
reports 4.6 s of reading (to within one interval a burst), however the stage is built — also when its reads come in
bursts apart (the decoders loaded at the stage's start, the vocoder on a worker thread later), which a window from
the first read to the last would count with the compute between them. The sampler's own reads of
``/proc/self/io`` are subtracted.

This module only measures: it never reads a checkpoint and holds no lock the stage waits on. Where the counters do
not exist (not Linux, or a kernel without task I/O accounting) ``ReadMeter.stop`` returns None.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import asdict, dataclass

IO_FILE = "/proc/self/io"
MIN_GROWTH = 64 * 1024  # above the sampler's own ~100 B per sample and a stray config read: a load is reading
INTERVAL_S = 0.01


@dataclass(frozen=True)
class ReadSample:
    """One span's reads: ``bytes`` from files (page cache or disk), ``disk_bytes`` of them from the storage device,
    ``seconds`` of reading (the sampled intervals that read, to within ``resolution_s`` a burst), ``span_seconds``
    the whole span."""

    bytes: int
    disk_bytes: int
    seconds: float
    span_seconds: float
    resolution_s: float

    @property
    def gbps(self) -> float | None:
        """Achieved read rate, GB/s (1e9 bytes), over the reading window; None when nothing was read."""
        return self.bytes / self.seconds / 1e9 if self.bytes and self.seconds > 0 else None

    def to_dict(self) -> dict:
        """JSON-ready, with the rate."""
        return {**asdict(self), "gbps": None if self.gbps is None else round(self.gbps, 3)}


def _counters(fd: int) -> tuple[int, int, int]:
    """(rchar, read_bytes, bytes this call itself read) from the open ``/proc/self/io``."""
    raw = os.pread(fd, 4096, 0)
    fields = dict(line.split(": ", 1) for line in raw.decode().splitlines() if ": " in line)
    return int(fields["rchar"]), int(fields["read_bytes"]), len(raw)


class ReadMeter:
    """Measures the reads of the span between its creation and ``stop()`` (a daemon thread samples the counters)."""

    def __init__(self, interval_s: float = INTERVAL_S) -> None:
        self._interval = interval_s
        self._stop = threading.Event()
        self._fd: int | None = None
        self._thread: threading.Thread | None = None
        try:
            self._fd = os.open(IO_FILE, os.O_RDONLY)
            rchar, disk, own = _counters(self._fd)
        except (OSError, KeyError, ValueError):  # no task I/O accounting here: nothing to measure
            if self._fd is not None:
                os.close(self._fd)
            self._fd = None
            return
        self._start = time.perf_counter()
        self._first = (rchar, disk)
        # A sample's value includes the bytes of every earlier sample's own read, not its own.
        self._own, self._pending_own = 0, own
        self._last = (self._start, rchar)
        self._reading_s = 0.0  # the sampled intervals in which files were read
        self._thread = threading.Thread(target=self._run, name="read-meter", daemon=True)
        self._thread.start()

    def _sample(self) -> tuple[int, int]:
        assert self._fd is not None
        rchar, disk, own = _counters(self._fd)
        grown = rchar - self._last[1] - self._pending_own
        self._own += self._pending_own
        self._pending_own = own
        now, then = time.perf_counter(), self._last[0]
        if grown > MIN_GROWTH:
            self._reading_s += now - then
        self._last = (now, rchar)
        return rchar, disk

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self._sample()

    def stop(self) -> ReadSample | None:
        """End the span: its reads, or None where the counters are not available."""
        if self._fd is None or self._thread is None:
            return None
        self._stop.set()
        self._thread.join()
        try:
            rchar, disk = self._sample()
        finally:
            os.close(self._fd)
            self._fd = None
        span = time.perf_counter() - self._start
        read = max(0, rchar - self._first[0] - self._own)
        return ReadSample(read, max(0, disk - self._first[1]), round(self._reading_s, 4), round(span, 4),
                          self._interval)  # fmt: skip
