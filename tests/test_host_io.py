"""streaming/host_io.py: runs split over threads read exactly what one thread reads."""

import os
from concurrent.futures import ThreadPoolExecutor

import pytest

from ltx2_edge.errors import CheckpointError
from ltx2_edge.streaming.host_io import FileRun, read_runs, read_runs_parallel, split_runs


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
