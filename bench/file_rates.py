"""How fast streamed blocks come out of a safetensors file on the GPU machine (the one-pool tier, ``FileSource``).

A one-pool run at 16 GiB streams 18 of W1's 48 blocks from the file every step, and its steps ran at ~14 GB/s of
blocks where calibrate's read of the checkpoint gave 15-21 GB/s. This separates what could explain it:

- ``readers`` x ``staging``: the threads that ``preadv`` one staging chunk together, and the chunk's size;
- ``alone`` (the main thread reads, as calibrate does) against ``busy`` (a reader thread reads, as the streamer's
  does, while the main thread launches small kernels from Python without pause, as an eager denoising step does)
  and ``busy`` with the interpreter's switch interval at 0.5 ms instead of 5 ms (a thread back from ``preadv`` waits
  for the GIL up to one interval while the main thread holds it);
- the file: the checkpoint on disk (page cache) against the pre-quantized copy (``/dev/shm``: tmpfs).

Every row reads the same blocks into one device slot, three times after a warm-up read; GB/s is the median.

    python3 bench/file_rates.py --files CKPT [FP8] --blocks 8 --readers 2,4,8,12 --staging 64 --json out.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import threading
import time
from pathlib import Path

import torch

from ltx2_edge.checkpoint.header import read_header
from ltx2_edge.checkpoint.names import LTX2_BLOCK_TENSOR
from ltx2_edge.streaming.sources import FileSource

GB = 1e9
MiB = 1 << 20


def _block_count(path: Path) -> int:
    prefix = LTX2_BLOCK_TENSOR.split("{i}")[0]
    ids = {int(n[len(prefix) :].split(".")[0]) for n in read_header(path).tensors if n.startswith(prefix)}
    return max(ids) + 1


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _busy_until(done: threading.Event, device: torch.device) -> int:
    """Small kernels launched back to back from Python until ``done``; returns how many (a sync every 64)."""
    x = torch.ones(1024, device=device)
    launched = 0
    while not done.is_set():
        for _ in range(64):
            x.mul_(1.0)
        launched += 64
        _sync(device)
    return launched


def read_rate(path: Path, blocks: list[int], readers: int, staging: int, mode: str, switch: float,
              device: torch.device, reps: int = 3) -> dict:  # fmt: skip
    """GB/s of ``blocks`` read from ``path`` into a device slot by a ``FileSource`` (median of ``reps``)."""
    source = FileSource(path, blocks, template=LTX2_BLOCK_TENSOR, staging_bytes=staging, readers=readers)
    old = sys.getswitchinterval()
    try:
        total = sum(source.layout(i).nbytes for i in blocks)
        slot = torch.empty(max(source.layout(i).nbytes for i in blocks), dtype=torch.uint8, device=device)

        def read_all() -> None:
            for i in blocks:
                source.read_block(i, slot)
            _sync(device)

        read_all()  # warm: into the page cache, staging touched
        sys.setswitchinterval(switch)
        samples, launches = [], []
        for _ in range(reps):
            if mode == "alone":
                start = time.perf_counter()
                read_all()
                samples.append(time.perf_counter() - start)
                continue
            done, took = threading.Event(), []

            def reader(done: threading.Event = done, took: list[float] = took) -> None:
                start = time.perf_counter()
                read_all()
                took.append(time.perf_counter() - start)
                done.set()

            thread = threading.Thread(target=reader)
            start = time.perf_counter()
            thread.start()
            launched = _busy_until(done, device)
            thread.join()
            samples.append(took[0])
            launches.append(launched / (time.perf_counter() - start))
        seconds = statistics.median(samples)
        row = {"file": str(path), "readers": readers, "staging_mib": staging // MiB, "mode": mode,
               "switch_ms": switch * 1e3, "blocks": len(blocks), "bytes": total, "gbps": total / seconds / GB,
               "samples_gbps": [total / s / GB for s in samples]}  # fmt: skip
        if launches:
            row["main_launches_per_s"] = statistics.median(launches)
        return row
    finally:
        sys.setswitchinterval(old)
        source.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--files", type=Path, nargs="+", required=True)
    ap.add_argument("--blocks", type=int, default=8, help="blocks read per sample (from the file's last ones)")
    ap.add_argument("--readers", default="2,4,8,12")
    ap.add_argument("--staging", default="64", help="MiB per staging buffer, comma-separated")
    ap.add_argument("--modes", default="alone,busy,busy-0.5ms")
    ap.add_argument("--json", type=Path, required=True)
    a = ap.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")  # a CPU dry run reads into host memory
    rows = []
    for path in a.files:
        n = _block_count(path)
        blocks = list(range(max(0, n - a.blocks), n))
        for mode in a.modes.split(","):
            switch = 5e-4 if mode.endswith("0.5ms") else 5e-3
            for staging in (int(s) * MiB for s in a.staging.split(",")):
                for readers in (int(r) for r in a.readers.split(",")):
                    row = read_rate(path, blocks, readers, staging, mode.split("-")[0], switch, device)
                    rows.append(row)
                    rate = row.get("main_launches_per_s")
                    extra = f", main {rate:.0f} launches/s" if rate is not None else ""
                    print(f"{path.name:28s} {mode:11s} staging {row['staging_mib']:4d} MiB readers {readers:2d}: "
                          f"{row['gbps']:6.2f} GB/s{extra}", flush=True)  # fmt: skip
                    a.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
