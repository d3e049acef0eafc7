"""Reads whole tensors from safetensors files onto a device, fast: reader threads ``preadv`` the bytes into a
small ring of page-locked staging buffers while the device copies the previous ones out.

This is how resident weights load (``models.weights.load_into``, the 8-bit layers of
``models.quantized_loading``). ``safetensors``' ``get_tensor`` maps the file and copies each tensor through
fresh pageable memory: every 4 KiB page faults twice (source and destination), which inside a VM costs more
than the copy; the same 24 GB Gemma folder loaded at 1.3 GB/s on one lent H100 box and 2.6 GB/s on another.
Here no page is touched twice: the kernel copies page-cache bytes into already pinned memory, several reads
in flight, and each chunk reaches the device as one DMA.

Tensors come back in the order asked for, each in its file dtype and shape, and only one tensor at a time is
materialised on the device by the reader (the caller decides how long it lives). The staging ring is
``depth x chunk_bytes`` of host memory (128 MiB by default), held only while a load runs.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import torch

from ltx2_edge.checkpoint.dtypes import TORCH_DTYPES
from ltx2_edge.checkpoint.header import TensorInfo
from ltx2_edge.streaming.host_io import FileRun, HostBuffer, plan_runs, read_runs

CHUNK_BYTES = 32 * 1024**2  # one staging buffer: big enough for long reads, small beside any stage's activations
DEPTH = 4  # staging buffers (and reads in flight)


@dataclass(frozen=True)
class _Piece:
    """Bytes ``[tensor_offset, tensor_offset + n)`` of entry ``entry``, staged at ``staging_offset``."""

    entry: int
    tensor_offset: int
    staging_offset: int
    n: int


@dataclass(frozen=True)
class _Batch:
    """What fills one staging buffer: its pieces and the ``preadv`` runs that read them."""

    pieces: tuple[_Piece, ...]
    runs: tuple[FileRun, ...]


def plan_batches(entries: Sequence[tuple[int, TensorInfo]], chunk_bytes: int) -> list[_Batch]:
    """Cut ``(file index, tensor)`` entries, in order, into staging-buffer batches; a tensor larger than a buffer
    spans several. Pieces adjacent in one file share a ``preadv``. Pure: tested without files."""
    if chunk_bytes <= 0:
        raise ValueError(f"chunk_bytes={chunk_bytes} is not allowed: a positive number of bytes")
    batches: list[_Batch] = []
    pieces: list[_Piece] = []
    used = 0

    def close() -> None:
        nonlocal pieces, used
        if pieces:
            located = [(entries[p.entry][0], entries[p.entry][1].begin + p.tensor_offset, p.staging_offset, p.n)
                       for p in pieces]  # fmt: skip
            batches.append(_Batch(tuple(pieces), tuple(plan_runs(located, 0, chunk_bytes))))
        pieces, used = [], 0

    for k, (_, info) in enumerate(entries):
        if info.nbytes == 0:  # a piece of its own all the same, so the tensor is yielded in its place
            pieces.append(_Piece(k, 0, used, 0))
            continue
        done = 0
        while done < info.nbytes:
            if used == chunk_bytes:
                close()
            n = min(info.nbytes - done, chunk_bytes - used)
            pieces.append(_Piece(k, done, used, n))
            used += n
            done += n
    close()
    return batches


class TensorReader:
    """Reads tensors from safetensors files onto ``device`` through pinned staging (plain host memory on a CPU).

    Use as a context manager; ``read`` may be called any number of times while it is open.
    """

    def __init__(self, device: torch.device | str, chunk_bytes: int = CHUNK_BYTES, depth: int = DEPTH) -> None:
        if depth < 2:
            raise ValueError(f"depth={depth} is not allowed: at least 2 staging buffers (one read, one copy)")
        self.device = torch.device(device)
        self.chunk_bytes = chunk_bytes
        self.depth = depth
        self._cuda = self.device.type == "cuda"
        self._staging = [HostBuffer(chunk_bytes, pin=self._cuda) for _ in range(depth)]
        # A buffer may be refilled only once the device has copied it out: one event per buffer.
        self._copied: list[torch.cuda.Event | None] = [None] * depth
        self._pool = ThreadPoolExecutor(max_workers=depth, thread_name_prefix="ltx2-edge-read")
        self._fds: dict[Path, int] = {}
        self._lock = threading.Lock()
        self.bytes_read = 0

    def __enter__(self) -> TensorReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Wait for reads and copies in flight, then give back the staging memory and the file handles."""
        self._pool.shutdown(wait=True, cancel_futures=True)
        if self._cuda:
            torch.cuda.synchronize(self.device)  # no DMA may still read a buffer about to be unpinned
        for buf in self._staging:
            buf.close()
        self._staging = []
        for fd in self._fds.values():
            os.close(fd)
        self._fds = {}

    def _fd(self, path: Path) -> int:
        with self._lock:
            if path not in self._fds:
                self._fds[path] = os.open(path, os.O_RDONLY)
            return self._fds[path]

    def read(self, entries: Sequence[tuple[Path, TensorInfo]]) -> Iterator[torch.Tensor]:
        """Yield each ``(file, tensor info)`` entry's tensor on the device, in order, in its file dtype and shape.

        The device copies run on the current CUDA stream, so work the caller queues on it after a yield sees the
        bytes. Reads run ahead of the caller by up to ``depth`` buffers.
        """
        paths = list(dict.fromkeys(Path(p) for p, _ in entries))
        index = {p: i for i, p in enumerate(paths)}
        fds = [self._fd(p) for p in paths]
        names = [str(p) for p in paths]
        numbered = [(index[Path(p)], info) for p, info in entries]
        batches = plan_batches(numbered, self.chunk_bytes)
        futures: dict[int, Future[None]] = {}

        def submit(b: int) -> None:
            slot = b % self.depth
            event = self._copied[slot]

            def fill() -> None:
                if event is not None:
                    event.synchronize()  # the copies out of this buffer, queued for batch b - depth, are done
                read_runs(fds, batches[b].runs, memoryview(self._staging[slot].tensor.numpy()), names)

            futures[b] = self._pool.submit(fill)

        for b in range(min(self.depth, len(batches))):
            submit(b)
        current: torch.Tensor | None = None
        try:
            for b, batch in enumerate(batches):
                futures.pop(b).result()
                staging = self._staging[b % self.depth].tensor
                for p in batch.pieces:
                    info = entries[p.entry][1]
                    if p.tensor_offset == 0:
                        current = torch.empty(info.nbytes, dtype=torch.uint8, device=self.device)
                    assert current is not None
                    current[p.tensor_offset : p.tensor_offset + p.n].copy_(
                        staging[p.staging_offset : p.staging_offset + p.n], non_blocking=self._cuda
                    )
                    if p.tensor_offset + p.n == info.nbytes:
                        tensor, current = _as_tensor(current, info), None
                        self.bytes_read += info.nbytes
                        yield tensor
                self._record(b)  # after the batch's last copy: its buffer may be refilled once this completes
                if b + self.depth < len(batches):
                    submit(b + self.depth)
        finally:
            for f in futures.values():
                f.cancel()
            for f in futures.values():
                if not f.cancelled():
                    f.exception()  # wait: a read still writing into a buffer must end before the buffer's next use

    def _record(self, b: int) -> None:
        if self._cuda:
            event = torch.cuda.Event()
            event.record()
            self._copied[b % self.depth] = event


def _as_tensor(raw: torch.Tensor, info: TensorInfo) -> torch.Tensor:
    """The uint8 bytes of one tensor viewed as its dtype and shape."""
    dtype = TORCH_DTYPES[info.dtype]
    return raw.view(dtype).reshape(info.shape)
