"""streaming/host_io.py: runs split over threads read exactly what one thread reads."""

import os
from concurrent.futures import ThreadPoolExecutor

import pytest

from ltx2_edge.errors import CheckpointError
from ltx2_edge.streaming.host_io import FileRun, HostBuffer, read_runs, read_runs_parallel, split_runs


def test_split_runs_cuts_pieces_into_equal_groups():
    runs = [FileRun(0, 100, ((0, 10), (20, 6))), FileRun(1, 0, ((10, 8),))]  # 24 bytes
    groups = split_runs(runs, 3)
    assert [[(r.fd_index, r.file_offset, r.pieces) for r in g] for g in groups] == [
        [(0, 100, ((0, 8),))],
        [(0, 108, ((8, 2), (20, 6)))],
        [(1, 0, ((10, 8),))],
    ]
    assert split_runs(runs, 1) == [runs]
    assert split_runs([], 4) == [[]]
    # never more groups than asked, and the bytes add up
    for parts in range(1, 30):
        got = split_runs(runs, parts)
        assert len(got) <= parts and sum(n for g in got for r in g for _, n in r.pieces) == 24


@pytest.mark.parametrize("parts", [1, 2, 3, 7])
def test_parallel_read_equals_serial(tmp_path, parts):
    data = os.urandom(5000)
    (tmp_path / "a").write_bytes(data)
    (tmp_path / "b").write_bytes(data[::-1])
    fds = [os.open(tmp_path / n, os.O_RDONLY) for n in ("a", "b")]
    try:
        runs = [
            FileRun(0, 10, ((0, 1000), (1500, 777))),
            FileRun(1, 4000, ((1000, 500),)),
            FileRun(0, 3000, ((2277, 1999),)),
        ]
        one, many = bytearray(4276), bytearray(4276)
        read_runs(fds, runs, memoryview(one), ["a", "b"])
        with ThreadPoolExecutor(3) as pool:
            read_runs_parallel(pool, fds, runs, memoryview(many), ["a", "b"], parts)
        assert many == one
        assert one[:1000] == data[10:1010] and one[1000:1500] == data[::-1][4000:4500]
        with ThreadPoolExecutor(2) as pool, pytest.raises(CheckpointError, match="truncated"):
            read_runs_parallel(pool, fds, [FileRun(0, 4900, ((0, 200),))], memoryview(many), ["a", "b"], parts)
    finally:
        for fd in fds:
            os.close(fd)


def _resident_kib() -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="reads Linux's VmRSS")
def test_a_populated_buffer_is_resident_before_any_touch():
    """Populating faults the pages in from several threads before registration (one thread's faults ran at
    0.6-1 GB/s in a VM); unpopulated, an untouched buffer costs no resident memory."""
    size = 64 * 1024**2
    before = _resident_kib()
    lazy = HostBuffer(size, pin=False, populate_threads=0)
    assert not lazy.populated and _resident_kib() - before < size // 1024 // 4
    buf = HostBuffer(size, pin=False, populate_threads=3)
    try:
        if not buf.populated:
            pytest.skip("the kernel has no MADV_POPULATE_WRITE (Linux < 5.14)")
        assert _resident_kib() - before >= size // 1024 * 9 // 10
        assert int(buf.tensor.sum()) == 0 and buf.tensor.numel() == size  # fresh pages read as zeros
    finally:
        buf.close()
        lazy.close()


def test_small_buffers_are_not_populated_by_default():
    assert not HostBuffer(4096, pin=False).populated
