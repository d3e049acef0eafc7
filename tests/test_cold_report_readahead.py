"""streaming.readahead warms exactly the byte ranges asked for into the page cache, in the background, and stops
when cancelled; its ranges are whole blocks in block order, within the bytes allowed."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from ltx2_edge.calibrate.transfers import drop_page_cache, resident_fraction
from ltx2_edge.checkpoint.header import read_header
from ltx2_edge.checkpoint.names import AUDIO_DECODER, TRANSFORMER_BLOCKS, VIDEO_DECODER
from ltx2_edge.streaming.readahead import ByteRange, Readahead, block_ranges, host_allowance, merged, prefix_ranges

MiB = 1 << 20


def test_ranges_are_whole_blocks_within_the_allowance(tiny_dir: Path) -> None:
    header = read_header(tiny_dir / "ltx2.safetensors")
    block = lambda i: [t for n, t in header.tensors.items() if n.startswith(f"{TRANSFORMER_BLOCKS}{i}.")]  # noqa: E731
    size0 = sum(t.nbytes for t in block(0))
    assert sum(r.nbytes for r in block_ranges(header, TRANSFORMER_BLOCKS, size0)) == size0
    assert block_ranges(header, TRANSFORMER_BLOCKS, size0 - 1) == []  # never half a block
    both = block_ranges(header, TRANSFORMER_BLOCKS, 10**12)
    assert sum(r.nbytes for r in both) == size0 + sum(t.nbytes for t in block(1))
    assert all(r.path == header.path for r in both)
    decoders = prefix_ranges(header, (*VIDEO_DECODER, *AUDIO_DECODER))
    want = sum(t.nbytes for n, t in header.tensors.items() if n.startswith((*VIDEO_DECODER, *AUDIO_DECODER)))
    assert sum(r.nbytes for r in decoders) == want and len(decoders) < 10  # contiguous tensors: few advices
    assert merged([ByteRange(Path("a"), 0, 4), ByteRange(Path("a"), 4, 8), ByteRange(Path("a"), 9, 10)]) == [
        ByteRange(Path("a"), 0, 8), ByteRange(Path("a"), 9, 10)]  # fmt: skip
    assert host_allowance(10 << 30, 4 << 30) == 6 << 30 and host_allowance(1 << 30) == 0


@pytest.mark.parametrize("mode", ["fadvise", "read"])
def test_warms_the_ranges_asked_for(tmp_path: Path, mode: str) -> None:
    path = tmp_path / "weights.bin"
    path.write_bytes(os.urandom(48 * MiB))
    dropped, how = drop_page_cache(path, 0, 48 * MiB)
    if not dropped or resident_fraction(path, 0, 48 * MiB) is None:
        pytest.skip(f"this file system keeps the pages: {how}")
    stats = Readahead([ByteRange(path, 8 * MiB, 24 * MiB)], mode=mode, chunk_bytes=4 * MiB).start().join()
    assert (stats.bytes_done, stats.bytes_asked, stats.cancelled, stats.mode) == (16 * MiB, 16 * MiB, False, mode)
    deadline = time.monotonic() + 5  # WILLNEED queues the reads: they land shortly after
    while resident_fraction(path, 8 * MiB, 24 * MiB) < 0.99 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert resident_fraction(path, 8 * MiB, 24 * MiB) >= 0.99
    assert resident_fraction(path, 32 * MiB, 48 * MiB) < 0.5  # what was not asked for stays on the disk


def test_cancel_stops_it_and_errors_reach_join(tmp_path: Path) -> None:
    path = tmp_path / "w.bin"
    path.write_bytes(b"\0" * (4 * MiB))
    ahead = Readahead([ByteRange(path, 0, 4 * MiB)] * 64, mode="read", chunk_bytes=MiB)
    ahead.cancel()
    stats = ahead.start().join()
    assert stats.cancelled and stats.bytes_done == 0 and stats.bytes_asked == 256 * MiB
    with pytest.raises(FileNotFoundError):
        Readahead([ByteRange(tmp_path / "gone.bin", 0, MiB)]).start().join()
    with pytest.raises(ValueError, match="one of fadvise, read"):
        Readahead([], mode="mmap")


def test_prefetch_warms_what_the_next_stage_reads_within_free_memory(tiny_dir: Path) -> None:
    from ltx2_edge.memory.runtime import gemma_tensors
    from ltx2_edge.models import prefetch
    from ltx2_edge.plan.budget import Budget
    from ltx2_edge.plan.plan_types import PlanRequest
    from ltx2_edge.plan.planner import plan
    from ltx2_edge.plan.profiles import CPU

    header = read_header(tiny_dir / "ltx2.safetensors")
    shards = tuple(sorted((tiny_dir / "gemma").glob("model*.safetensors")))
    memory = plan(header, gemma_tensors(shards), PlanRequest(64, 64, 9, 24.0, 1), Budget(None, None, False), CPU)
    blocks = sum(t.nbytes for n, t in header.tensors.items() if n.startswith(TRANSFORMER_BLOCKS))
    ahead = prefetch.warm_transformer(memory, header, available_bytes=64 << 30)
    stats = prefetch.finish(ahead)
    assert stats is not None and stats["bytes_asked"] == blocks and stats["mode"] == "fadvise"
    assert prefetch.warm_transformer(memory, header, available_bytes=4 << 30) is None  # nothing beside the margin
    assert prefetch.finish(prefetch.warm_decoders(header, available_bytes=64 << 30))["bytes_asked"] > 0
    assert prefetch.warm_decoders(header, available_bytes=1 << 30) is None and prefetch.finish(None) is None
