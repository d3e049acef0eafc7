"""Warms the next stage's weights into the page cache on a background thread while the current stage runs.

A cold start reads every weight from the disk, stage after stage: while Gemma encodes, the connectors run and the
transformer steps, the disk sits idle. ``Readahead`` keeps it busy: it asks the kernel for the next stage's byte
ranges (``posix_fadvise(WILLNEED)``, which queues the reads and returns) or reads them itself into one small
reused buffer (``mode="read"``, for file systems that ignore the advice), chunk by chunk, so that the stage's own
loader later finds them in the page cache. Typical use: the transformer's first blocks during the text stage, the
decoders during the last denoising steps (``block_ranges``, ``prefix_ranges``).

What it may cost is the caller's decision, made from the plan: the page cache is outside every budget (docs:
"The budget, precisely") but not outside the machine, so warm no more than ``host_allowance`` of what the OS has
free, or the kernel evicts the pages the running stage is reading. A warm page cache makes this a no-op (the
kernel returns at once), so it never slows a warm run by more than the thread's wake-ups.

Rules: the thread only reads (never a pinned or device buffer, never a weight that is kept); ``cancel`` stops it
between chunks (at most one chunk late); ``join`` returns what it did, and an error on the thread (a file gone)
is re-raised there, never lost.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from ltx2_edge.checkpoint.header import Header

CHUNK_BYTES = 64 * 1024**2  # one advice or read: small enough that cancel is prompt, large enough to queue deep
READ_BUFFER_BYTES = 8 * 1024**2
HOST_MARGIN_BYTES = 4 * 1024**3  # what the OS keeps free beside a warm-up (the running stage's own reads, buffers)
MODES = ("fadvise", "read")


@dataclass(frozen=True)
class ByteRange:
    """Bytes ``[begin, end)`` of ``path``."""

    path: Path
    begin: int
    end: int

    @property
    def nbytes(self) -> int:
        return self.end - self.begin


@dataclass(frozen=True)
class ReadaheadStats:
    """What a warm-up did: bytes advised (``fadvise``: the reads queued, landing after) or read (``read``: in the page
    cache when counted), of how many asked, in how many seconds; ``cancelled``: stopped before the end."""

    bytes_done: int
    bytes_asked: int
    seconds: float
    cancelled: bool
    mode: str

    def to_dict(self) -> dict:
        """JSON-ready (the report's details)."""
        return asdict(self)


def merged(ranges: Iterable[ByteRange]) -> list[ByteRange]:
    """``ranges`` sorted per file, touching or overlapping ones joined (one advice per contiguous run)."""
    out: list[ByteRange] = []
    for r in sorted(ranges, key=lambda r: (str(r.path), r.begin)):
        if out and out[-1].path == r.path and r.begin <= out[-1].end:
            out[-1] = ByteRange(r.path, out[-1].begin, max(out[-1].end, r.end))
        else:
            out.append(r)
    return out


def block_ranges(header: Header, block_prefix: str, max_bytes: int, first: int = 0) -> list[ByteRange]:
    """The byte ranges of blocks ``first, first + 1, ...`` (tensors ``{block_prefix}N.*`` of ``header``'s file), as
    many whole blocks as fit ``max_bytes``, in block order (the order the loader reads them)."""
    blocks: dict[int, list[ByteRange]] = {}
    for name, info in header.tensors.items():
        if name.startswith(block_prefix):
            index = int(name[len(block_prefix) :].split(".", 1)[0])
            blocks.setdefault(index, []).append(ByteRange(header.path, info.begin, info.end))
    out: list[ByteRange] = []
    total = 0
    for index in sorted(i for i in blocks if i >= first):
        size = sum(r.nbytes for r in blocks[index])
        if total + size > max_bytes:
            break
        out.extend(merged(blocks[index]))
        total += size
    return out


def prefix_ranges(header: Header, prefixes: str | tuple[str, ...]) -> list[ByteRange]:
    """The byte ranges of every tensor of ``header``'s file under ``prefixes`` (the decoders, say), merged."""
    return merged(ByteRange(header.path, i.begin, i.end) for n, i in header.tensors.items() if n.startswith(prefixes))


def host_allowance(available_bytes: int, margin_bytes: int = HOST_MARGIN_BYTES) -> int:
    """The most a warm-up may bring into the page cache when the OS has ``available_bytes`` free (0 if none)."""
    return max(0, available_bytes - margin_bytes)


class Readahead:
    """Warms ``ranges`` on a daemon thread from ``start()``; ``cancel()`` stops it, ``join()`` says what it did."""

    def __init__(self, ranges: Sequence[ByteRange], mode: str = "fadvise", chunk_bytes: int = CHUNK_BYTES) -> None:
        if mode not in MODES:
            raise ValueError(f"readahead mode {mode!r}: one of {', '.join(MODES)}")
        if chunk_bytes <= 0:
            raise ValueError(f"chunk_bytes={chunk_bytes}: a positive number of bytes")
        self.ranges, self.mode, self.chunk = tuple(ranges), mode, chunk_bytes
        self._cancel = threading.Event()
        self._thread: threading.Thread | None = None
        self._done = 0
        self._error: BaseException | None = None
        self._seconds = 0.0

    def start(self) -> Readahead:
        """Begin warming (returns at once)."""
        if self._thread is not None:
            raise RuntimeError("this Readahead was started already")
        self._thread = threading.Thread(target=self._run, name="readahead", daemon=True)
        self._thread.start()
        return self

    def cancel(self) -> None:
        """Stop after the chunk in hand (the next stage's own loader reads the rest)."""
        self._cancel.set()

    def join(self, timeout: float | None = None) -> ReadaheadStats:
        """Wait for the thread (``timeout`` seconds at most; it keeps going if it is not done) and report; the thread's
        error, if it had one, is raised here."""
        if self._thread is not None:
            self._thread.join(timeout)
        if self._error is not None:
            raise self._error
        running = self._thread is not None and self._thread.is_alive()
        asked = sum(r.nbytes for r in self.ranges)
        return ReadaheadStats(self._done, asked, round(self._seconds, 4), self._cancel.is_set() or running, self.mode)

    def __enter__(self) -> Readahead:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.cancel()
        self.join()

    def _run(self) -> None:
        start = time.perf_counter()
        buffer = bytearray(READ_BUFFER_BYTES) if self.mode == "read" else None
        try:
            for r in self.ranges:
                fd = os.open(r.path, os.O_RDONLY)
                try:
                    for offset in range(r.begin, r.end, self.chunk):
                        if self._cancel.is_set():
                            return
                        n = min(self.chunk, r.end - offset)
                        if buffer is None:
                            os.posix_fadvise(fd, offset, n, os.POSIX_FADV_WILLNEED)
                        else:
                            view = memoryview(buffer)
                            for at in range(offset, offset + n, len(buffer)):
                                os.preadv(fd, [view[: min(len(buffer), offset + n - at)]], at)
                        self._done += n
                finally:
                    os.close(fd)
        except BaseException as exc:  # noqa: BLE001  (reaches the caller through join)
            self._error = exc
        finally:
            self._seconds = time.perf_counter() - start
