"""How much of a file is in the page cache now (``mincore``): what tells a plan whether its loads read memory or the
disk. Calibrate measures both rates (``file_read_warm_gbps``, ``file_read_cold_gbps``); a run right after a reboot, or
after other work pushed the checkpoint out of memory, reads at the cold one: on the H200 box the first W1 run on a
freshly written checkpoint read 33.9 of 37.8 GB from the disk and its transformer load took 21.3 s, not the 4.5 s a
warm plan says.
"""

from __future__ import annotations

import ctypes
import mmap
import os
from collections.abc import Iterable
from pathlib import Path


def resident_fraction(path: Path, lo: int, hi: int) -> float | None:
    """The fraction of ``path``'s pages in ``[lo, hi)`` that are in the page cache (``mincore``), or None."""
    start = lo // mmap.PAGESIZE * mmap.PAGESIZE
    length = hi - start
    pages = -(-length // mmap.PAGESIZE)
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.mmap.restype = ctypes.c_void_p
        libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int,
                              ctypes.c_long]  # fmt: skip
        libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.POINTER(ctypes.c_ubyte)]
        libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
        fd = os.open(path, os.O_RDONLY)
        try:
            addr = libc.mmap(None, length, mmap.PROT_READ, mmap.MAP_SHARED, fd, start)
            if addr in (None, ctypes.c_void_p(-1).value):
                return None
            try:
                vec = (ctypes.c_ubyte * pages)()
                if libc.mincore(addr, length, vec) != 0:
                    return None
                return sum(v & 1 for v in vec) / pages
            finally:
                libc.munmap(addr, length)
        finally:
            os.close(fd)
    except (OSError, AttributeError):  # no libc mincore here: coldness cannot be checked
        return None


def cached_fraction(paths: Iterable[Path]) -> float | None:
    """The byte-weighted fraction of ``paths`` in the page cache, or None when it cannot be told (no ``mincore``,
    a file missing or empty); cheap enough to ask before every plan (one bit per page: ~9 MB of answers for a 37 GB
    checkpoint)."""
    total = cached = 0.0
    for path in paths:
        try:
            size = os.path.getsize(path)
        except OSError:
            return None
        if size == 0:
            continue
        fraction = resident_fraction(Path(path), 0, size)
        if fraction is None:
            return None
        total += size
        cached += fraction * size
    return cached / total if total else None
