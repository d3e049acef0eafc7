"""Block byte layouts: where each tensor of one repeated block lives inside a single contiguous byte buffer.

A streamed block (an LTX-2 transformer block, a Gemma decoder layer) moves as one copy because all of its
tensors sit in one uint8 buffer, each at an offset aligned to ``ALIGN`` bytes and carved into typed views. The
layout is pure description: entries carry their own dtype, so int8/fp8 weights beside fp32 scales are just
more entries. It never allocates device memory, never reads files and never converts a dtype: bytes move as
they are, so a streamed block is bit-for-bit the block that was stored.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from ltx2_edge.checkpoint.dtypes import TORCH_DTYPES
from ltx2_edge.checkpoint.header import TensorInfo
from ltx2_edge.errors import CheckpointError

ALIGN = 256  # every entry starts on this boundary: aligned for any dtype and for vectorised kernels

SAFETENSORS_DTYPES = TORCH_DTYPES


def _align(n: int) -> int:
    return (n + ALIGN - 1) // ALIGN * ALIGN


@dataclass(frozen=True)
class LayoutEntry:
    """One tensor of a block: its name inside the block, dtype, shape and byte range in the block buffer."""

    name: str
    dtype: torch.dtype
    shape: tuple[int, ...]
    offset: int
    nbytes: int


def module_tensors(module: nn.Module) -> dict[str, torch.Tensor]:
    """A block's streamable tensors by name: its parameters and persistent buffers (what its file stores)."""
    out: dict[str, torch.Tensor] = {}
    for mod_name, mod in module.named_modules():
        prefix = f"{mod_name}." if mod_name else ""
        for key, p in mod._parameters.items():
            if p is not None:
                out[prefix + key] = p
        for key, b in mod._buffers.items():
            if b is not None and key not in mod._non_persistent_buffers_set:
                out[prefix + key] = b
    return out


@dataclass(frozen=True)
class BlockLayout:
    """The byte layout of one block: ``entries`` in buffer order and the buffer's total ``nbytes``.

    ``nbytes`` is rounded up to ``ALIGN`` so that blocks packed back to back stay aligned. Two blocks can share
    slots carved by one layout exactly when their layouts compare equal.
    """

    entries: tuple[LayoutEntry, ...]
    nbytes: int

    @classmethod
    def pack(cls, specs: Iterable[tuple[str, torch.dtype, Sequence[int]]]) -> BlockLayout:
        """Lay out ``(name, dtype, shape)`` specs in the given order, each at the next aligned offset."""
        entries: list[LayoutEntry] = []
        seen: set[str] = set()
        offset = 0
        for name, dtype, shape in specs:
            if name in seen:
                raise ValueError(f"tensor {name!r} appears twice in one block layout: names must be unique")
            seen.add(name)
            nbytes = math.prod(shape) * dtype.itemsize
            entries.append(LayoutEntry(name, dtype, tuple(int(d) for d in shape), offset, nbytes))
            offset = _align(offset + nbytes)
        return cls(entries=tuple(entries), nbytes=_align(offset))

    @classmethod
    def from_module(cls, module: nn.Module) -> BlockLayout:
        """The layout of ``module``'s parameters and persistent buffers, in registration order."""
        return cls.pack((name, t.dtype, tuple(t.shape)) for name, t in module_tensors(module).items())

    @classmethod
    def from_tensor_infos(cls, infos: Iterable[TensorInfo], name_map: Mapping[str, str]) -> BlockLayout:
        """The layout of header entries, in the order given: pass them in file order (``Header.tensors`` is) so
        one block reads as few contiguous runs as possible.

        ``name_map`` maps each file tensor name to its name inside the block, e.g.
        ``"model.diffusion_model.transformer_blocks.3.attn1.to_q.weight" -> "attn1.to_q.weight"``.
        """
        specs = []
        for info in infos:
            if info.dtype not in SAFETENSORS_DTYPES:
                allowed = ", ".join(SAFETENSORS_DTYPES)
                raise CheckpointError(f"tensor {info.name!r} has dtype {info.dtype!r}: streamable dtypes are {allowed}")
            if info.name not in name_map:
                raise ValueError(f"tensor {info.name!r} has no entry in name_map: map every file name to a block name")
            specs.append((name_map[info.name], SAFETENSORS_DTYPES[info.dtype], info.shape))
        return cls.pack(specs)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(e.name for e in self.entries)

    @property
    def signature(self) -> frozenset[tuple[str, torch.dtype, tuple[int, ...]]]:
        """The tensors regardless of order: blocks with equal signatures can share one layout."""
        return frozenset((e.name, e.dtype, e.shape) for e in self.entries)

    @property
    def tensor_bytes(self) -> int:
        """Bytes of tensor data, without alignment padding."""
        return sum(e.nbytes for e in self.entries)

    def views(self, buffer: torch.Tensor) -> dict[str, torch.Tensor]:
        """Typed views of every entry into ``buffer`` (a 1-D contiguous uint8 tensor of at least ``nbytes``)."""
        self._check_buffer(buffer)
        return {e.name: buffer[e.offset : e.offset + e.nbytes].view(e.dtype).view(e.shape) for e in self.entries}

    def pack_tensors(self, tensors: Mapping[str, torch.Tensor], buffer: torch.Tensor) -> None:
        """Copy ``tensors`` (exactly this layout's names, dtypes and shapes) into their places in ``buffer``."""
        self.check_tensors(tensors, "tensors to pack")
        for name, view in self.views(buffer).items():
            view.copy_(tensors[name])

    def check_tensors(self, tensors: Mapping[str, torch.Tensor], what: str) -> None:
        """Raise unless ``tensors`` has exactly this layout's names, each with the entry's dtype and shape."""
        missing = [n for n in self.names if n not in tensors]
        extra = [n for n in tensors if n not in set(self.names)]
        if missing or extra:
            raise ValueError(
                f"{what} do not match the block layout: {len(missing)} missing (first: {missing[:3]}), "
                f"{len(extra)} unexpected (first: {extra[:3]}); the module and the stored block must have the "
                "same tensors"
            )
        for e in self.entries:
            t = tensors[e.name]
            if t.dtype != e.dtype or tuple(t.shape) != e.shape:
                raise ValueError(
                    f"{what}: {e.name!r} is {t.dtype}{list(t.shape)} but the stored block has "
                    f"{e.dtype}{list(e.shape)}; build the module in the stored dtypes (quantize it the same way)"
                )

    def _check_buffer(self, buffer: torch.Tensor) -> None:
        if buffer.dtype != torch.uint8 or buffer.dim() != 1 or not buffer.is_contiguous():
            raise ValueError(
                f"a block buffer must be a 1-D contiguous uint8 tensor, got {buffer.dtype}{list(buffer.shape)}"
            )
        if buffer.numel() < self.nbytes:
            raise ValueError(f"block buffer holds {buffer.numel()} bytes < the layout's {self.nbytes} bytes")
