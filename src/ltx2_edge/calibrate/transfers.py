"""Bytes that move: host->device copies, device memory bandwidth, checkpoint reads (warm, and cold where the page
cache can be dropped), and the device memory the CUDA runtime holds outside PyTorch's allocator.

Reads go through ``streaming.sources.FileSource``, the path blocks streamed from the file take (``preadv`` on four
threads into pinned staging, one DMA per chunk into a device slot; on a CPU straight into host memory), over the
transformer blocks of ``--checkpoint-path`` or of a scratch file written for the purpose and deleted after. Cold
reads drop the page cache first: ``posix_fadvise(DONTNEED)`` on the file, else (as root, where it is writable)
``/proc/sys/vm/drop_caches``, and ``mincore`` must then show the pages gone; otherwise the cold rate is reported
"not measured". Copies use ``streaming.host_io.HostBuffer`` (the pinned memory runs use). Timing follows
``measure``'s rules. This module writes no file but its own scratch file, which it removes.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

from ltx2_edge.calibrate.identity import nvml_used_bytes
from ltx2_edge.calibrate.measure import Measurement, Timing, median_seconds, synchronizer
from ltx2_edge.checkpoint.header import read_header
from ltx2_edge.checkpoint.names import LTX2_BLOCK_TENSOR, TRANSFORMER_BLOCKS
from ltx2_edge.checkpoint.page_cache import resident_fraction
from ltx2_edge.errors import RequestError
from ltx2_edge.streaming.host_io import HostBuffer
from ltx2_edge.streaming.sources import FileSource

COLD_RESIDENT_LIMIT = 0.05  # at most 5 % of the pages may still be cached for a read to count as cold


def copy_rates(device: torch.device, nbytes: int, timing: Timing) -> list[Measurement]:
    """Host->device from pinned and from pageable memory, and device-to-device bandwidth (read + write)."""
    if device.type != "cuda":
        src, dst = torch.ones(nbytes, dtype=torch.uint8), torch.empty(nbytes, dtype=torch.uint8)
        seconds, samples = median_seconds(lambda: dst.copy_(src), device, timing)
        rate, how = nbytes / seconds / 1e9, f"median of {timing.reps}: host memcpy of {nbytes >> 20} MiB (no device)"
        rates = [nbytes / s / 1e9 for s in samples]
        return [
            Measurement("h2d_pinned_gbps", rate, how, rates),
            Measurement("h2d_pageable_gbps", rate, how, rates),
            Measurement("memory_bandwidth_gbps", 2 * rate, how + ", read + write", [2 * r for r in rates]),
        ]
    slot = torch.empty(nbytes, dtype=torch.uint8, device=device)
    pinned = HostBuffer(nbytes, pin=True)
    try:
        pinned.tensor.fill_(1)
        seconds, samples = median_seconds(lambda: slot.copy_(pinned.tensor, non_blocking=True), device, timing)
        out = [Measurement("h2d_pinned_gbps", nbytes / seconds / 1e9,
                           f"median of {timing.reps}: {nbytes >> 20} MiB from cudaHostRegister'd memory, one DMA",
                           [nbytes / s / 1e9 for s in samples])]  # fmt: skip
    finally:
        pinned.close()
    pageable = torch.ones(nbytes, dtype=torch.uint8)  # written once, so every page exists before it is timed
    seconds, samples = median_seconds(lambda: slot.copy_(pageable), device, timing)
    out.append(Measurement("h2d_pageable_gbps", nbytes / seconds / 1e9,
                           f"median of {timing.reps}: {nbytes >> 20} MiB from pageable host memory",
                           [nbytes / s / 1e9 for s in samples]))  # fmt: skip
    other = torch.empty_like(slot)
    seconds, samples = median_seconds(lambda: other.copy_(slot), device, timing)
    out.append(Measurement("memory_bandwidth_gbps", 2 * nbytes / seconds / 1e9,
                           f"median of {timing.reps}: device-to-device copy of {nbytes >> 20} MiB, read + write",
                           [2 * nbytes / s / 1e9 for s in samples]))  # fmt: skip
    return out


@contextmanager
def scratch_checkpoint(folder: Path, blocks: int, block_bytes: int) -> Iterator[Path]:
    """A safetensors file of ``blocks`` transformer-block tensors of ``block_bytes`` random bytes each, in
    ``folder`` (a real disk, not /tmp, which is often RAM); removed on exit."""
    folder.mkdir(parents=True, exist_ok=True)
    header, offset = {}, 0
    for i in range(blocks):
        header[LTX2_BLOCK_TENSOR.format(i=i, name="w")] = {"dtype": "U8", "shape": [block_bytes],
                                                           "data_offsets": [offset, offset + block_bytes]}  # fmt: skip
        offset += block_bytes
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    fd, name = tempfile.mkstemp(prefix=".calibrate-", suffix=".safetensors", dir=folder)
    path = Path(name)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(len(raw).to_bytes(8, "little") + raw)
            rng, left, chunk = np.random.default_rng(0), offset, 64 << 20
            while left:  # random bytes: a disk or VM that compresses or dedups must not read zeros for free
                f.write(rng.bytes(min(chunk, left)))
                left -= min(chunk, left)
            f.flush()
            os.fsync(f.fileno())
        yield path
    finally:
        path.unlink(missing_ok=True)


def checkpoint_blocks(path: Path, max_bytes: int) -> list[int]:
    """The first transformer blocks of ``path`` whose bytes fit ``max_bytes`` (at least one)."""
    sizes: dict[int, int] = {}
    for name, info in read_header(path).tensors.items():
        if name.startswith(TRANSFORMER_BLOCKS):
            index = int(name[len(TRANSFORMER_BLOCKS) :].split(".", 1)[0])
            sizes[index] = sizes.get(index, 0) + info.nbytes
    if not sizes:
        raise RequestError("checkpoint-path", str(path), f"an LTX-2 .safetensors with {TRANSFORMER_BLOCKS}N.* tensors")
    chosen, total = [], 0
    for index in sorted(sizes):
        if chosen and total + sizes[index] > max_bytes:
            break
        chosen.append(index)
        total += sizes[index]
    return chosen


def _byte_range(path: Path, blocks: list[int]) -> tuple[int, int]:
    prefixes = tuple(f"{TRANSFORMER_BLOCKS}{i}." for i in blocks)
    infos = [t for n, t in read_header(path).tensors.items() if n.startswith(prefixes)]
    return min(t.begin for t in infos), max(t.end for t in infos)


def file_system(path: Path) -> str:
    """The type of the file system holding ``path`` (``/proc/self/mounts``' longest matching mount), or ""."""
    target, best, kind = str(Path(path).resolve()), "", ""
    try:
        for line in Path("/proc/self/mounts").read_text().splitlines():
            fields = line.split()
            if len(fields) < 3:
                continue
            mount = fields[1].replace("\\040", " ")
            if (target == mount or target.startswith(mount.rstrip("/") + "/")) and len(mount) >= len(best):
                best, kind = mount, fields[2]
    except OSError:
        return ""
    return kind


def drop_page_cache(path: Path, lo: int, hi: int) -> tuple[bool, str]:
    """Evict ``path``'s pages in ``[lo, hi)`` from the page cache: ``(done, how or why not)``.

    ``posix_fadvise(DONTNEED)`` on that range first (no root needed, and it leaves the rest of the file and other
    files cached: dropping the whole checkpoint made the next run after calibrate a cold one, 34 GB from the disk on a
    lent H200); where that leaves pages cached and this is root, ``/proc/sys/vm/drop_caches`` (every file's cache).
    ``mincore`` decides whether it worked.
    """
    ram = file_system(path)
    if ram in ("tmpfs", "ramfs"):
        return False, f"{path} is on {ram} (memory): its pages are the file and never leave the cache"
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)  # dirty pages cannot be dropped; a scratch file just written has some
        os.posix_fadvise(fd, lo, hi - lo, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)
    tried = ["posix_fadvise(DONTNEED) on the bytes read"]
    left = resident_fraction(path, lo, hi)
    if left is not None and left > COLD_RESIDENT_LIMIT:
        if os.geteuid() != 0:
            tried.append("/proc/sys/vm/drop_caches needs root")
        else:
            try:
                with open("/proc/sys/vm/drop_caches", "w") as f:
                    f.write("1\n")
                tried.append("/proc/sys/vm/drop_caches")
            except OSError as exc:  # a container's /proc/sys is usually read-only
                tried.append(f"/proc/sys/vm/drop_caches refused ({exc.strerror})")
            left = resident_fraction(path, lo, hi)
    if left is None:
        return False, f"{'; '.join(tried)}, but mincore is unavailable to check that the pages left"
    if left > COLD_RESIDENT_LIMIT:
        why = f"left {left:.0%} of the pages cached (tmpfs, or a file system that keeps them)"
        return False, f"{'; '.join(tried)} {why}"
    return True, f"page cache dropped by {tried[-1]} ({left:.0%} still cached, checked with mincore)"


def read_rates(device: torch.device, path: Path, blocks: list[int], timing: Timing, cold_reps: int,
               what: str) -> list[Measurement]:  # fmt: skip
    """Warm and cold rates of reading ``blocks`` of ``path`` as streamed blocks are read (``FileSource``)."""
    source = FileSource(path, blocks, template=LTX2_BLOCK_TENSOR)
    try:
        size = max(source.layout(i).nbytes for i in blocks)
        total = sum(source.layout(i).nbytes for i in blocks)
        slot = torch.empty(size, dtype=torch.uint8, device=device)
        sync = synchronizer(device)

        def read_all() -> None:
            for i in blocks:
                source.read_block(i, slot)
            sync()

        read_all()  # into the page cache
        seconds, samples = median_seconds(read_all, device, Timing(timing.reps, 0.0))
        into = "a device slot through pinned staging" if device.type == "cuda" else "host memory"
        warm = Measurement("file_read_warm_gbps", total / seconds / 1e9,
                           f"median of {timing.reps}: {len(blocks)} blocks ({total >> 20} MiB) of {what} from the "
                           f"page cache by FileSource (preadv, {source.readers} threads) into {into}",
                           [total / s / 1e9 for s in samples])  # fmt: skip
        lo, hi = _byte_range(path, blocks)
        cold_samples, how = [], ""
        for _ in range(cold_reps):
            dropped, how = drop_page_cache(path, lo, hi)
            if not dropped:
                break
            start = time.perf_counter()
            read_all()  # ends with a device sync: the timer stops when the last DMA has landed
            cold_samples.append(total / (time.perf_counter() - start) / 1e9)
        if len(cold_samples) < cold_reps:
            cold = Measurement("file_read_cold_gbps", None, f"not measured: {how}")
        else:
            cold = Measurement("file_read_cold_gbps", float(np.median(cold_samples)),
                               f"median of {cold_reps}: the same read after the {how}; a VM host's own cache may "
                               "still serve it", cold_samples)  # fmt: skip
        return [warm, cold]
    finally:
        source.close()


def runtime_memory(device: torch.device, before_total: int | None) -> Measurement:
    """Device memory the CUDA runtime holds outside PyTorch's allocator (context, cuBLAS/cuDNN workspaces), after
    every kernel above ran: NVML's bytes for this process (else the device's growth since ``before_total``) less
    ``torch.cuda.memory_reserved``."""
    field = "runtime_overhead_bytes"
    if device.type != "cuda":
        return Measurement(field, None, "not measured: a CPU run has no CUDA runtime")
    torch.cuda.synchronize(device)
    torch.cuda.empty_cache()
    reserved = torch.cuda.memory_reserved(device)
    mine, total = nvml_used_bytes(device)
    if mine is not None:
        return Measurement(field, float(max(0, mine - reserved)),
                           f"NVML's used bytes of this process ({mine >> 20} MiB) less torch's reserved "
                           f"({reserved >> 20} MiB), after cuBLAS, cuDNN and SDPA ran",
                           detail={"nvml": mine})  # fmt: skip
    if total is not None and before_total is not None:
        grown = total - before_total
        return Measurement(field, float(max(0, grown - reserved)),
                           f"NVML's device-wide used bytes grew {grown >> 20} MiB since before CUDA started (other "
                           f"processes on this GPU would add to it), less torch's reserved ({reserved >> 20} MiB)",
                           detail={"nvml_before": before_total, "nvml_after": total})  # fmt: skip
    return Measurement(field, None, "not measured: NVML reports no memory for this device here (no pynvml or "
                       "nvidia-smi, or an integrated GPU)")  # fmt: skip
