"""Where pinning streamed blocks spends its time, on the GPU machine.

1. Host buffers of 1 / 4 / 8 GB made the ways ``streaming.host_io`` can make them: registered untouched (each page
   faulted by ``cudaHostRegister``, one thread), populated by 1 or N threads first, and torch's own pinned
   allocator; each timed (populate, register) with a device-to-host copy into it.
2. The transformer loaded with ``--budget``'s streamed blocks from pinned memory
   (``models.streamed_transformer.load_streamed_transformer``) on the full checkpoint, with the loader's parts timed:
   the pinned buffer (made in the background), the resident load, each streamed block's load and pack; once as
   ``streaming`` loads today and once without its three mends (threaded populate, one shared reader, the header
   cache).

    python3 bench/pin_rates.py --checkpoint-path CKPT --resident 30 [--sizes 1,4,8] [--rounds 1] --json out.json
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path

import torch

from ltx2_edge.checkpoint import header as header_mod
from ltx2_edge.models import quantized_loading, streamed_blocks, weights
from ltx2_edge.models.streamed_transformer import load_streamed_transformer
from ltx2_edge.quant.policy import QuantPolicy
from ltx2_edge.streaming import host_io
from ltx2_edge.streaming.host_io import HostBuffer
from ltx2_edge.streaming.sources import PinnedHostSource

GB = 1e9
CUDA = torch.cuda.is_available()  # without one (a CPU dry run on the tiny checkpoint) only the load part runs


def _sync() -> None:
    if CUDA:
        torch.cuda.synchronize()


def _buffer_row(way: str, nbytes: int, make: Callable[[], object], out: torch.Tensor) -> dict:
    _sync()
    start = time.perf_counter()
    buf = make()
    made = time.perf_counter() - start
    host = buf.tensor if isinstance(buf, HostBuffer) else buf
    start = time.perf_counter()
    host[: out.numel()].copy_(out, non_blocking=True)
    _sync()
    copied = time.perf_counter() - start
    start = time.perf_counter()
    if isinstance(buf, HostBuffer):
        buf.close()
    del buf, host
    gc.collect()
    released = time.perf_counter() - start
    return {"way": way, "GB": nbytes / GB, "make_s": made, "make_gbps": nbytes / made / GB,
            "d2h_gbps": out.numel() / copied / GB, "release_s": released}  # fmt: skip


def host_buffers(sizes: list[float], threads: int, rounds: int) -> list[dict]:
    out = torch.empty(int(GB), dtype=torch.uint8, device="cuda")
    ways: dict[str, Callable[[int], object]] = {
        "register untouched": lambda n: HostBuffer(n, pin=True, populate_threads=0),
        "populate 1 + register": lambda n: HostBuffer(n, pin=True, populate_threads=1),
        f"populate {threads} + register": lambda n: HostBuffer(n, pin=True, populate_threads=threads),
        "torch pin_memory": lambda n: torch.empty(n, dtype=torch.uint8, pin_memory=True),
    }
    rows = []
    for size in sizes:
        nbytes = int(size * GB)
        for rep in range(rounds):  # a later round sees memory the guest has faulted in once already
            for way, make in ways.items():
                row = _buffer_row(way, nbytes, lambda make=make, n=nbytes: make(n), out)
                row["round"] = rep
                rows.append(row)
                print(f"  {size:4.0f} GB  round {rep}  {way:24s} {row['make_s']:6.2f} s ({row['make_gbps']:5.2f} GB/s)"
                      f"  d2h {row['d2h_gbps']:5.1f} GB/s  release {row['release_s']:.2f} s", flush=True)  # fmt: skip
    return rows


@contextlib.contextmanager
def timed_parts() -> Iterator[dict[str, list[float]]]:
    """Wrap the loader's parts with timers (synchronising the device around each)."""
    parts: dict[str, list[float]] = defaultdict(list)
    saved: list[tuple[object, str, object]] = []

    def wrap(owner: object, name: str, label: str) -> None:
        real = getattr(owner, name)

        def timed(*args, **kwargs):
            _sync()
            start = time.perf_counter()
            try:
                return real(*args, **kwargs)
            finally:
                _sync()
                parts[label].append(time.perf_counter() - start)

        saved.append((owner, name, real))
        setattr(owner, name, timed)

    wrap(PinnedHostSource, "pack", "pack (device to pinned)")
    wrap(streamed_blocks, "PinnedHostSource", "pinned buffer (background)")
    wrap(streamed_blocks, "_pack_blocks", "streamed blocks: load + pack")
    wrap(streamed_blocks, "load_quantized", "load_quantized calls")
    wrap(host_io.HostBuffer, "__init__", "host buffers made")
    wrap(header_mod, "_parse", "headers parsed")
    try:
        yield parts
    finally:
        for owner, name, real in reversed(saved):
            setattr(owner, name, real)


@contextlib.contextmanager
def without_mends() -> Iterator[None]:
    """The loader as it was before: pages faulted by the registration, a reader per call, every header parsed."""
    saved = (host_io.POPULATE_THREADS, weights.reading, quantized_loading.reading, header_mod._cache)

    @contextlib.contextmanager
    def own_reader(device, reader):
        with saved[1](device, None) as r:
            yield r

    class NoCache(dict):
        def __setitem__(self, key, value) -> None:
            pass

    host_io.POPULATE_THREADS = 0
    weights.reading = quantized_loading.reading = own_reader
    header_mod._cache = NoCache()
    try:
        yield
    finally:
        host_io.POPULATE_THREADS, weights.reading, quantized_loading.reading, header_mod._cache = saved


def streamed_load(checkpoint: Path, resident: int, precision: str) -> dict:
    header_mod._cache.clear()
    _sync()
    with timed_parts() as parts:
        start = time.perf_counter()
        device, dtype = torch.device("cuda" if CUDA else "cpu"), torch.bfloat16 if CUDA else torch.float32
        model, streamer = load_streamed_transformer(checkpoint, device, dtype, QuantPolicy.from_flags(precision),
                                                    resident, "pinned", 2)  # fmt: skip
        _sync()
        total = time.perf_counter() - start
    pinned = streamer.stats().source_pinned_bytes  # 0 on a CPU: the host buffer is not page-locked
    start = time.perf_counter()
    streamer.close()
    released = time.perf_counter() - start
    del model, streamer
    gc.collect()
    torch.cuda.empty_cache()
    return {"total_s": total, "pinned_GB": pinned / GB, "pin_gbps_whole": pinned / total / GB, "release_s": released,
            "parts": {k: {"n": len(v), "s": sum(v)} for k, v in parts.items()}}  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint-path", type=Path, required=True)
    p.add_argument("--resident", type=int, default=30, help="resident blocks of 48 (W1 at 16 GiB plans 30)")
    p.add_argument("--precision", default="fp8")
    p.add_argument("--sizes", default="1,4,8", help="host buffer sizes, GB")
    p.add_argument("--threads", type=int, default=min(16, os.cpu_count() or 1))
    p.add_argument("--rounds", type=int, default=1, help="times each buffer is made at each size")
    p.add_argument("--json", type=Path, required=True)
    args = p.parse_args()
    device = torch.cuda.get_device_name() if CUDA else "CPU (dry run)"
    print(f"{device}, {os.cpu_count()} CPUs, THP "
          f"{Path('/sys/kernel/mm/transparent_hugepage/enabled').read_text().strip()}", flush=True)  # fmt: skip
    result: dict = {"device": device, "cpus": os.cpu_count()}
    if CUDA:
        result["buffers"] = host_buffers([float(s) for s in args.sizes.split(",")], args.threads, args.rounds)
    loads = {}
    for label, ctx in (("mended", contextlib.nullcontext), ("without the mends", without_mends),
                       ("mended again", contextlib.nullcontext)):  # fmt: skip
        with ctx():
            loads[label] = row = streamed_load(args.checkpoint_path, args.resident, args.precision)
        print(
            f"  load, {label}: {row['total_s']:.2f} s, {row['pinned_GB']:.2f} GB pinned "
            f"({row['pin_gbps_whole']:.2f} GB/s of the whole load), released in {row['release_s']:.2f} s",
            flush=True,
        )
        for k, v in row["parts"].items():
            print(f"      {k:32s} x{v['n']:<4d} {v['s']:7.2f} s", flush=True)
    result["loads"] = loads
    args.json.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
