"""Host-side I/O shared by the block sources and the bulk tensor reader: page-locked host buffers that go back to
the OS when dropped, and scattered ``preadv`` reads of safetensors bytes.

Host memory is allocated with ``mmap`` and page-locked with ``cudaHostRegister`` (when CUDA is available)
rather than ``torch.empty(pin_memory=True)``: the caching host allocator rounds every allocation up to a power
of two (a 0.77 GB block would pin 1 GB) and keeps freed blocks pinned, which a budget cannot afford. Reading
with ``preadv`` into such a buffer touches no fresh page on either side: a mapped file's page faults (4 KiB
each, costly inside a VM) and a fresh destination's are what make ``mmap``-then-copy loaders slow.

A large buffer's own fresh pages are the other cost: faulted one by one from one thread (``cudaHostRegister`` does
it that way) they came at 2.6 GB/s on a lent H200 and 0.6-1 GB/s on a 2-core CI VM. Such a buffer is populated first
by several threads at once (``MADV_POPULATE_WRITE`` on Linux >= 5.14, transparent huge pages asked for), then
registered: 4.2-5.2 GB/s on the H200 (``bench/pin_rates.py``).
"""

from __future__ import annotations

import ctypes
import mmap
import os
import sys
import threading
import weakref
from collections.abc import Iterable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass

import torch

from ltx2_edge.errors import CheckpointError

IOV_MAX = 512  # below Linux's 1024 iovecs per preadv call
PAGE = mmap.PAGESIZE
POPULATE_MIN_BYTES = 256 * 1024**2  # below this one thread's faults cost less than starting threads
POPULATE_THREADS = 8  # fresh-page faults scale with threads until the memory's zeroing rate
_MADV_POPULATE_WRITE = 23  # Linux 5.14+: fault a range in, writable, without touching it from user space


def _libc_madvise() -> ctypes._CFuncPtr | None:
    if not sys.platform.startswith("linux"):
        return None  # the advice numbers above are Linux's
    try:
        fn = ctypes.CDLL(None, use_errno=True).madvise
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    fn.restype = ctypes.c_int
    return fn


_MADVISE = _libc_madvise()


def populate(buffer: mmap.mmap, threads: int) -> bool:
    """Fault every page of the anonymous ``buffer`` in from ``threads`` threads (ctypes calls drop the GIL).

    Returns False, having done nothing, where the kernel cannot (not Linux, or older than 5.14): the pages then fault
    in as before, when first touched or registered.
    """
    if _MADVISE is None or len(buffer) == 0:
        return False
    if hasattr(mmap, "MADV_HUGEPAGE"):
        buffer.madvise(mmap.MADV_HUGEPAGE)  # fewer faults where THP is in madvise mode; advice only
    holder = ctypes.c_char.from_buffer(buffer)
    try:
        base, size = ctypes.addressof(holder), len(buffer)
        share = -(-size // max(1, threads) // PAGE) * PAGE
        errors: list[int] = []

        def fault(start: int) -> None:
            if _MADVISE(base + start, min(share, size - start), _MADV_POPULATE_WRITE) != 0:
                errors.append(ctypes.get_errno())

        workers = [threading.Thread(target=fault, args=(s,)) for s in range(0, size, share)]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        return not errors
    finally:
        del holder  # the mmap cannot close while a ctypes view of it is alive


class HostBuffer:
    """Page-aligned anonymous host memory, page-locked when ``pin``; returned to the OS when dropped.

    ``populate_threads`` (default ``POPULATE_THREADS`` for buffers of ``POPULATE_MIN_BYTES`` or more, 0 for none)
    fault the pages in before they are registered; ``populated`` says whether that ran.
    """

    def __init__(self, nbytes: int, pin: bool, populate_threads: int | None = None) -> None:
        size = max(PAGE, (nbytes + PAGE - 1) // PAGE * PAGE)
        self._map = mmap.mmap(-1, size)
        if populate_threads is None:
            populate_threads = min(POPULATE_THREADS, os.cpu_count() or 1) if size >= POPULATE_MIN_BYTES else 0
        self.populated = populate_threads > 0 and populate(self._map, populate_threads)
        self.tensor = torch.frombuffer(self._map, dtype=torch.uint8)[:nbytes]
        self.nbytes = size
        self.pinned = False
        if pin:
            err = int(torch.cuda.cudart().cudaHostRegister(self.tensor.data_ptr(), size, 0))
            if err != 0:
                raise RuntimeError(
                    f"cudaHostRegister of {size} bytes failed with cudaError {err}: lower the number of blocks "
                    "held in pinned memory, or stream from the file (FileSource)"
                )
            self.pinned = True
            # A buffer dropped without close() must not stay registered: its pages go back to the OS, and the next
            # mapping at the same address would fail to register (cudaErrorHostMemoryAlreadyRegistered).
            self._unpin = weakref.finalize(self, _unregister, self.tensor.data_ptr())

    def close(self) -> None:
        if self.pinned:
            self._unpin()
            self.pinned = False
        # Dropping the tensor lets the mmap unmap itself once no view of it is left.
        self.tensor = torch.empty(0, dtype=torch.uint8)
        self._map = None


def _unregister(ptr: int) -> None:
    torch.cuda.cudart().cudaHostUnregister(ptr)


@dataclass(frozen=True)
class FileRun:
    """One ``preadv``: ``sum(n)`` contiguous file bytes at ``file_offset`` scattered to (dst offset, n) pieces."""

    fd_index: int
    file_offset: int
    pieces: tuple[tuple[int, int], ...]


def plan_runs(pieces: Sequence[tuple[int, int, int, int]], base: int, end: int) -> list[FileRun]:
    """Coalesce ``(fd_index, file_offset, dst_offset, n)`` pieces clipped to dst ``[base, end)`` into runs."""
    runs: list[FileRun] = []
    cur: list[tuple[int, int]] = []
    fd = file_start = file_next = -1
    for fd_i, file_off, dst_off, n in pieces:
        lo, hi = max(dst_off, base), min(dst_off + n, end)
        if lo >= hi:
            continue
        f_lo = file_off + (lo - dst_off)
        if cur and (fd_i != fd or f_lo != file_next or len(cur) >= IOV_MAX):
            runs.append(FileRun(fd, file_start, tuple(cur)))
            cur = []
        if not cur:
            fd, file_start = fd_i, f_lo
        cur.append((lo - base, hi - lo))
        file_next = f_lo + (hi - lo)
    if cur:
        runs.append(FileRun(fd, file_start, tuple(cur)))
    return runs


def read_runs(fds: Sequence[int], runs: Iterable[FileRun], target: memoryview, names: Sequence[str]) -> None:
    """Execute runs into ``target``, looping over short reads; a file that ends early is a CheckpointError."""
    for run in runs:
        views = [target[off : off + n] for off, n in run.pieces]
        offset = run.file_offset
        while views:
            got = os.preadv(fds[run.fd_index], views, offset)
            if got == 0:
                raise CheckpointError(f"{names[run.fd_index]} ended at byte {offset} while reading a block: truncated?")
            offset += got
            while views and got >= len(views[0]):
                got -= len(views[0])
                views.pop(0)
            if views and got:
                views[0] = views[0][got:]


def split_runs(runs: Sequence[FileRun], parts: int) -> list[list[FileRun]]:
    """Cut ``runs`` into at most ``parts`` groups of about equal bytes (a piece may be cut in two), for
    ``read_runs_parallel``. Pure; the groups together read exactly what ``runs`` read."""
    total = sum(n for run in runs for _, n in run.pieces)
    if parts <= 1 or total == 0:
        return [list(runs)]
    share = -(-total // parts)  # ceil: at most `parts` groups
    groups: list[list[FileRun]] = [[]]
    room = share
    for run in runs:
        offset, cur = run.file_offset, []
        for dst, n in run.pieces:
            while n:
                take = min(n, room)
                cur.append((dst, take))
                dst, n, room = dst + take, n - take, room - take
                if room == 0:
                    groups[-1].append(FileRun(run.fd_index, offset, tuple(cur)))
                    offset += sum(k for _, k in cur)
                    cur, room = [], share
                    groups.append([])
        if cur:
            groups[-1].append(FileRun(run.fd_index, offset, tuple(cur)))
    return [g for g in groups if g]


def read_runs_parallel(
    pool: Executor | None, fds: Sequence[int], runs: Sequence[FileRun], target: memoryview, names: Sequence[str],
    parts: int,
) -> None:  # fmt: skip
    """``read_runs`` split over ``parts`` threads of ``pool``: one thread copies page-cache bytes at a few GB/s,
    several together at the memory's speed (3.4 vs ~10 GB/s on a lent H100 box). Runs inline without a pool."""
    groups = split_runs(runs, parts if pool is not None else 1)
    if pool is None or len(groups) == 1:
        read_runs(fds, runs, target, names)
        return
    for future in [pool.submit(read_runs, fds, g, target, names) for g in groups]:
        future.result()
