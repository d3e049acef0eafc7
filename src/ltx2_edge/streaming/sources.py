"""Where streamed blocks wait between uses, and how one block's bytes reach a slot.

``WeightSource`` is the one interface: ``read_block(i, dst)`` fills ``dst`` (a 1-D uint8 tensor on the host or
the device) with block ``i``'s tensors in its ``layout(i)`` order. Two tiers implement it:

- ``PinnedHostSource``: every streamed block packed once into one page-locked host buffer, so a block reaches
  the device as one asynchronous DMA. For discrete GPUs whose host budget allows it.
- ``FileSource``: reads each block straight from the safetensors file(s) by offset (``os.preadv``), through a
  small pinned staging ring when ``dst`` is on a device. For unified memory (Jetson), where "offloading to the
  CPU" frees nothing: the page cache, which the kernel reclaims, is where the weights wait.

Host buffers and the ``preadv`` reads come from ``streaming.host_io`` (why they are not PyTorch's pinned allocator:
there).

Sources must never materialise a state dict, unpickle anything or convert a dtype (bytes move as they are).
``read_block`` enqueues device copies on the caller's current CUDA stream; it is called by one thread at a time.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor

import torch
from torch import nn

from ltx2_edge.checkpoint.header import TensorInfo, read_header
from ltx2_edge.checkpoint.names import LTX2_BLOCK_TENSOR
from ltx2_edge.errors import CheckpointError
from ltx2_edge.streaming.host_io import PAGE, FileRun, HostBuffer, plan_runs, read_runs, read_runs_parallel
from ltx2_edge.streaming.layout import BlockLayout, module_tensors

PathLike = str | os.PathLike[str]
PACK_READERS = 4  # threads filling a pinned pack from the file: one copies page cache at a few GB/s


def file_readers(cpus: int | None = None) -> int:
    """Threads a ``FileSource`` reads each staging chunk with: half the cores, at least 4, at most 8. Page-cache
    copies scale with threads, and they take the cores the denoising loop launches its kernels from. On a lent
    H200 box (16 cores, calls 18-19, ``bench/file_rates.py``) the pre-quantized file read at 12.7 / 21.3 / 28.5
    GB/s with 4 / 8 / 12 threads while a Python loop beside them launched 78k / 48k / 31k kernels a second; a one-pool
    W1 step at 16 GiB took 0.59 s with 4, 0.49 s with 8 and 0.49 s with 12. ``cpus``: the cores this process may
    run on (None: ``os.sched_getaffinity``)."""
    if cpus is None:
        cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 4)
    return max(4, min(8, cpus // 2))


class WeightSource(ABC):
    """The bytes of streamed blocks: where they wait, and one call that moves a block into a slot."""

    #: True when ``read_block`` blocks the calling thread on file I/O: the streamer then calls it on a reader
    #: thread so the main thread keeps launching compute.
    blocks_host: bool = False

    @property
    @abstractmethod
    def blocks(self) -> tuple[int, ...]:
        """The block indices this source can provide."""

    @abstractmethod
    def layout(self, i: int) -> BlockLayout:
        """Block ``i``'s byte layout (the order ``read_block`` writes in)."""

    @abstractmethod
    def read_block(self, i: int, dst: torch.Tensor | bytearray | memoryview) -> None:
        """Fill ``dst[:layout(i).nbytes]`` with block ``i``; device copies go on the current CUDA stream."""

    @property
    def pinned_bytes(self) -> int:
        """Page-locked host bytes this source holds (count them against the budget)."""
        return 0

    @property
    def host_bytes(self) -> int:
        """Anonymous host bytes this source holds, pinned or not (count them against the host budget)."""
        return 0

    def close(self) -> None:  # noqa: B027 (sources without resources need nothing)
        """Release host memory and files. The source is unusable afterwards."""

    def _check_read(self, i: int, dst: torch.Tensor | bytearray | memoryview) -> torch.Tensor:
        if i not in self.blocks:
            raise ValueError(f"block {i} is not in this {type(self).__name__}: it holds blocks {list(self.blocks)}")
        t = dst if isinstance(dst, torch.Tensor) else torch.frombuffer(dst, dtype=torch.uint8)
        need = self.layout(i).nbytes
        if t.dtype != torch.uint8 or t.dim() != 1 or not t.is_contiguous() or t.numel() < need:
            raise ValueError(
                f"dst for block {i} must be a 1-D contiguous uint8 tensor of >= {need} bytes, "
                f"got {t.dtype}{list(t.shape)}"
            )
        return t[:need]


class _FileIndex:
    """Open safetensors files and, per block, its layout and the file pieces that fill it."""

    def __init__(self, paths: PathLike | Sequence[PathLike], blocks: Iterable[int], template: str) -> None:
        paths = [paths] if isinstance(paths, str | os.PathLike) else list(paths)
        if not paths:
            raise ValueError("FileSource needs at least one .safetensors path")
        if not template.endswith("{name}") or "{i}" not in template:
            raise ValueError(f"template={template!r} is not allowed: it must contain '{{i}}' and end with '{{name}}'")
        self.names = [str(p) for p in paths]
        where: dict[str, tuple[int, TensorInfo]] = {}
        for k, path in enumerate(paths):
            for name, info in read_header(path).tensors.items():
                if name in where:
                    raise CheckpointError(f"tensor {name!r} is in both {self.names[where[name][0]]} and {path}")
                where[name] = (k, info)
        self.layouts: dict[int, BlockLayout] = {}
        self.pieces: dict[int, list[tuple[int, int, int, int]]] = {}
        self.runs: dict[int, list[FileRun]] = {}
        shared: dict[frozenset, BlockLayout] = {}
        for i in sorted(set(blocks)):
            prefix = template.format(i=i, name="")
            found = {n: v for n, v in where.items() if n.startswith(prefix)}  # file by file, each in file order
            if not found:
                raise CheckpointError(f"no tensors named {prefix}* in {', '.join(self.names)}: is block {i} stored?")
            layout = BlockLayout.from_tensor_infos([v[1] for v in found.values()], {n: n[len(prefix) :] for n in found})
            # Blocks with the same tensors share the first one's layout even when their file order differs (shards
            # cut mid-block), so they share slots; reads then just coalesce into fewer runs.
            layout = shared.setdefault(layout.signature, layout)
            by_name = {n[len(prefix) :]: v for n, v in found.items()}
            self.layouts[i] = layout
            self.pieces[i] = [
                (by_name[e.name][0], by_name[e.name][1].begin, e.offset, e.nbytes) for e in layout.entries
            ]
            self.runs[i] = plan_runs(self.pieces[i], 0, layout.nbytes)
        self.fds = [os.open(p, os.O_RDONLY) for p in paths]

    def read_into(self, i: int, target: torch.Tensor) -> None:
        """Read block ``i`` straight into host tensor ``target`` (its layout's bytes)."""
        read_runs(self.fds, self.runs[i], memoryview(target.numpy()), self.names)

    def close(self) -> None:
        for fd in self.fds:
            os.close(fd)
        self.fds = []


class PinnedHostSource(WeightSource):
    """All streamed blocks packed once into one (pinned when CUDA is available) host buffer."""

    def __init__(self, layouts: Mapping[int, BlockLayout]) -> None:
        """Allocate room for ``layouts`` (block index -> layout); fill it with ``from_file``/``from_modules``."""
        if not layouts:
            raise ValueError("PinnedHostSource needs at least one block")
        self._layouts = dict(sorted(layouts.items()))
        self._offsets: dict[int, int] = {}
        total = 0
        for i, layout in self._layouts.items():
            self._offsets[i] = total
            total += layout.nbytes  # a multiple of ALIGN: every block starts aligned
        self._host = HostBuffer(total, pin=torch.cuda.is_available())

    @classmethod
    def from_file(
        cls, paths: PathLike | Sequence[PathLike], blocks: Iterable[int], template: str = LTX2_BLOCK_TENSOR
    ) -> PinnedHostSource:
        """Pack ``blocks`` read by offset from safetensors ``paths`` (tensor names from ``template``)."""
        index = _FileIndex(paths, blocks, template)
        try:
            source = cls(index.layouts)
            with ThreadPoolExecutor(PACK_READERS, thread_name_prefix="ltx2-edge-pack") as pool:
                for i in source.blocks:
                    read_runs_parallel(pool, index.fds, index.runs[i], memoryview(source._block(i).numpy()),
                                       index.names, PACK_READERS)  # fmt: skip
        finally:
            index.close()
        return source

    @classmethod
    def from_modules(cls, modules: Mapping[int, nn.Module]) -> PinnedHostSource:
        """Pack blocks from modules already in memory (e.g. quantized at load); layouts follow the modules."""
        source = cls({i: BlockLayout.from_module(m) for i, m in modules.items()})
        for i, m in modules.items():
            source.pack(i, m)
        return source

    def pack(self, i: int, module: nn.Module) -> None:
        """Copy block ``i``'s tensors from ``module`` (any device) into its place; the layout must match.

        Lets a loader materialise one block at a time (quantized on the GPU, say), pack it and drop it, so the
        host buffer is the only full copy of the streamed blocks.
        """
        self._layouts[i].pack_tensors(module_tensors(module), self._block(i))

    @property
    def blocks(self) -> tuple[int, ...]:
        return tuple(self._layouts)

    def layout(self, i: int) -> BlockLayout:
        return self._layouts[i]

    def read_block(self, i: int, dst: torch.Tensor | bytearray | memoryview) -> None:
        # From pinned memory a non_blocking copy is a true async DMA on the current stream.
        self._check_read(i, dst).copy_(self._block(i), non_blocking=True)

    @property
    def pinned_bytes(self) -> int:
        return self._host.nbytes if self._host.pinned else 0

    @property
    def host_bytes(self) -> int:
        return self._host.nbytes

    def close(self) -> None:
        self._host.close()

    def _block(self, i: int) -> torch.Tensor:
        start = self._offsets[i]
        return self._host.tensor[start : start + self._layouts[i].nbytes]


class FileSource(WeightSource):
    """Reads each block from the safetensors file(s) by offset on every use; never holds a block in memory."""

    blocks_host = True

    def __init__(
        self,
        paths: PathLike | Sequence[PathLike],
        blocks: Iterable[int],
        template: str = LTX2_BLOCK_TENSOR,
        staging_bytes: int = 64 << 20,
        readers: int | None = None,
    ) -> None:
        """Index ``blocks`` in ``paths``; ``staging_bytes`` sizes each of the two pinned staging buffers, which
        ``readers`` threads fill together (None: ``file_readers()``)."""
        readers = file_readers() if readers is None else readers
        if staging_bytes < PAGE:
            raise ValueError(f"staging_bytes={staging_bytes} is not allowed: at least {PAGE} (one page)")
        if readers < 1:
            raise ValueError(f"readers={readers} is not allowed: at least 1 thread")
        self._index = _FileIndex(paths, blocks, template)
        self._readers = readers
        self._pool = ThreadPoolExecutor(readers, thread_name_prefix="ltx2-edge-stream") if readers > 1 else None
        self._staging: list[HostBuffer] = []
        self._staged: list[torch.cuda.Event] = []
        self._chunks: dict[int, list[tuple[int, int, list[FileRun]]]] = {}
        self._next = 0
        if torch.cuda.is_available():
            chunk = min(staging_bytes, max(lay.nbytes for lay in self._index.layouts.values()))
            self._staging = [HostBuffer(chunk, pin=True) for _ in range(2)]
            self._staged = [torch.cuda.Event() for _ in range(2)]
            for i, layout in self._index.layouts.items():
                bounds = [(a, min(a + chunk, layout.nbytes)) for a in range(0, layout.nbytes, chunk)]
                self._chunks[i] = [(a, b, plan_runs(self._index.pieces[i], a, b)) for a, b in bounds]

    @property
    def blocks(self) -> tuple[int, ...]:
        return tuple(self._index.layouts)

    def layout(self, i: int) -> BlockLayout:
        return self._index.layouts[i]

    def read_block(self, i: int, dst: torch.Tensor | bytearray | memoryview) -> None:
        dst = self._check_read(i, dst)
        if dst.device.type == "cpu":
            self._index.read_into(i, dst)
            return
        if not self._staging:
            raise RuntimeError(f"FileSource has no staging buffers for a {dst.device} destination: CUDA was absent")
        for base, end, runs in self._chunks[i]:
            k, self._next = self._next, self._next ^ 1
            # staging -> reuse: the DMA that last read staging buffer k may still be running; without this wait
            # the pread below would overwrite bytes it has not copied yet and a slot would get corrupt weights.
            self._staged[k].synchronize()
            stage = self._staging[k].tensor
            read_runs_parallel(self._pool, self._index.fds, runs, memoryview(stage.numpy()), self._index.names,
                               self._readers)  # fmt: skip
            dst[base:end].copy_(stage[: end - base], non_blocking=True)
            self._staged[k].record()

    @property
    def readers(self) -> int:
        """The threads each staging chunk is read with."""
        return self._readers

    @property
    def pinned_bytes(self) -> int:
        return sum(b.nbytes for b in self._staging if b.pinned)

    @property
    def host_bytes(self) -> int:
        return sum(b.nbytes for b in self._staging)

    def close(self) -> None:
        for event in self._staged:
            # Unpinning memory a DMA still reads would fault the copy: let in-flight copies finish first.
            event.synchronize()
        if self._pool is not None:
            self._pool.shutdown(wait=True)
        for buf in self._staging:
            buf.close()
        self._staging, self._staged = [], []
        self._index.close()
