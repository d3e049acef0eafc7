"""How much of a file is in the page cache now (``mincore``): what tells a plan whether its loads read memory or the
disk. Calibrate measures both rates (``file_read_warm_gbps``, ``file_read_cold_gbps``); a run right after a reboot, or
after other work pushed the checkpoint out of memory, reads at the cold one: on the H200 box the first W1 run on a
freshly written checkpoint read 33.9 of 37.8 GB from the disk and its transformer load took 21.3 s, not the 4.5 s a
warm plan says.
"""

from __future__ import annotations

import ctypes
import functools
import mmap
import os
from collections.abc import Iterable
from pathlib import Path

# mincore's answer is a byte a page whose lowest bit says "resident" (the others are reserved): mapped to 0/1 and
# counted in C, since every plan asks and a 37 GB checkpoint is 9 million pages (a Python loop over them: ~3 s).
_RESIDENT_BIT = bytes(b & 1 for b in range(256))
# The kernel's answer costs ~13 ms a GB of pages asked about (0.8 s for a checkpoint and its Gemma folder whole):
# a large file is sampled in SAMPLES windows of WINDOW bytes spread evenly over it (a few ms; the page cache holds
# files in long runs, so the estimate is close).
SAMPLES = 256
WINDOW = 1 << 20


@functools.cache
def _libc() -> ctypes.CDLL:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mmap.restype = ctypes.c_void_p
    libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
    libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.POINTER(ctypes.c_ubyte)]
    libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
    return libc


def resident_fraction(path: Path, lo: int, hi: int) -> float | None:
    """The fraction of ``path``'s pages in ``[lo, hi)`` that are in the page cache (``mincore``), or None."""
    return _pages_resident(path, [(lo, hi)])


def _pages_resident(path: Path, ranges: list[tuple[int, int]]) -> float | None:
    """The fraction of the pages of ``ranges`` (byte ranges of ``path``) in the page cache, or None: one mapping of
    the span they cover, one ``mincore`` a range."""
    page = mmap.PAGESIZE
    start = min(lo for lo, _ in ranges) // page * page
    length = max(hi for _, hi in ranges) - start
    try:
        libc = _libc()
        fd = os.open(path, os.O_RDONLY)
        try:
            addr = libc.mmap(None, length, mmap.PROT_READ, mmap.MAP_SHARED, fd, start)
            if addr in (None, ctypes.c_void_p(-1).value):
                return None
            try:
                resident = pages = 0
                for lo, hi in ranges:
                    first = lo // page * page
                    n = -(-(hi - first) // page)
                    vec = (ctypes.c_ubyte * n)()
                    if libc.mincore(addr + first - start, hi - first, vec) != 0:
                        return None
                    resident += bytes(vec).translate(_RESIDENT_BIT).count(1)
                    pages += n
                return resident / pages
            finally:
                libc.munmap(addr, length)
        finally:
            os.close(fd)
    except (OSError, AttributeError):  # no libc mincore here: coldness cannot be checked
        return None


def cached_fraction(paths: Iterable[Path]) -> float | None:
    """The byte-weighted fraction of ``paths`` in the page cache, or None when it cannot be told (no ``mincore``,
    a file missing or empty); sampled in large files (``SAMPLES``), cheap enough to ask before every plan."""
    total = cached = 0.0
    for path in paths:
        try:
            size = os.path.getsize(path)
        except OSError:
            return None
        if size == 0:
            continue
        if size <= SAMPLES * WINDOW:
            fraction = resident_fraction(Path(path), 0, size)
        else:
            step = (size - WINDOW) // (SAMPLES - 1) // mmap.PAGESIZE * mmap.PAGESIZE  # windows of equal pages
            fraction = _pages_resident(Path(path), [(i * step, i * step + WINDOW) for i in range(SAMPLES)])
        if fraction is None:
            return None
        total += size
        cached += fraction * size
    return cached / total if total else None
