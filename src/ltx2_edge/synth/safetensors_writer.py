"""Streams random tensors into a safetensors file, header first, and refuses to replace files it did not write.

The header is computed from shapes alone and written first; each tensor is then generated chunk by chunk (by
``init_scheme``) and appended, so memory holds one chunk, never a whole tensor. The file goes to a temporary
sibling renamed into place only when complete. Every file written here carries a ``_generator`` metadata tag
(``generator_tag``): ``keep_existing`` uses it so that writing never replaces a file this package did not write.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

import torch

from ltx2_edge.atomic import clean_stale, temp_path
from ltx2_edge.checkpoint.header import read_header
from ltx2_edge.checkpoint.layout import Shape
from ltx2_edge.errors import CheckpointError
from ltx2_edge.synth.init_scheme import CHUNK_ELEMENTS, init_rule, tensor_chunks

Progress = Callable[[str, int, int], None]  # (file name, bytes written, bytes in that file)
# The official files' dtype, used for every tensor: safetensors name, torch dtype, bytes per value.
STORAGE_DTYPE, _TORCH_DTYPE, _ITEM_BYTES = "BF16", torch.bfloat16, 2


def generator_tag(seed: int) -> str:
    """The ``_generator`` metadata value: marks files ``synth`` wrote, and with which seed."""
    return f"ltx2-edge random weights, seed {seed}"


def _header_bytes(tensors: dict[str, Shape], metadata: dict[str, str]) -> tuple[bytes, list[str]]:
    """The safetensors header as the reference writer lays it out, and the tensor order it implies."""
    # All tensors share one dtype, so the reference order (by alignment, then name) is by name.
    order = sorted(tensors)
    doc: dict[str, object] = {"__metadata__": metadata}
    offset = 0
    for name in order:
        size = math.prod(tensors[name]) * _ITEM_BYTES
        doc[name] = {"dtype": STORAGE_DTYPE, "shape": list(tensors[name]), "data_offsets": [offset, offset + size]}
        offset += size
    raw = json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode()
    raw += b" " * (-len(raw) % 8)  # the data section starts 8-byte aligned
    return len(raw).to_bytes(8, "little") + raw, order


def write_safetensors(
    path: Path,
    layout: dict[str, tuple[Shape, str]],
    metadata: dict[str, str],
    *,
    seed: int,
    device: str | torch.device = "cpu",
    progress: Progress | None = None,
    chunk_elements: int = CHUNK_ELEMENTS,
    fixed: Mapping[str, torch.Tensor] | None = None,
) -> int:
    """Stream every tensor of ``layout`` (random, by ``init_scheme``) into the safetensors file ``path``.

    ``fixed`` names tensors whose values the model itself defines (a filter kernel): they are written as given,
    cast to the storage dtype, instead of drawn. At most ``chunk_elements`` random values exist in memory at
    once. Writes ``path`` through a temporary sibling and renames it at the end. Returns the file's size in bytes.
    """
    fixed = fixed or {}
    for name, value in fixed.items():
        if name not in layout or tuple(value.shape) != tuple(layout[name][0]):
            raise ValueError(f"fixed tensor {name} {list(value.shape)} is not in the layout with that shape")
    header, order = _header_bytes({name: shape for name, (shape, _) in layout.items()}, metadata)
    total = len(header) + sum(math.prod(layout[name][0]) for name in order) * _ITEM_BYTES
    clean_stale(path)  # what a killed run left beside it
    tmp = temp_path(path)  # short whatever the name: a name at the filesystem's limit still gets one
    try:
        with tmp.open("wb") as f:
            f.write(header)
            for name in order:
                if name in fixed:
                    chunks: Iterable[torch.Tensor] = (fixed[name].to(_TORCH_DTYPE).reshape(-1),)
                else:
                    chunks = tensor_chunks(
                        name,
                        layout[name][0],
                        init_rule(name, layout),
                        seed=seed,
                        dtype=_TORCH_DTYPE,
                        device=device,
                        chunk_elements=chunk_elements,
                    )
                for chunk in chunks:
                    f.write(chunk.cpu().view(torch.uint8).numpy())
                if progress is not None:
                    progress(path.name, f.tell(), total)
            f.flush()
            os.fsync(f.fileno())  # the rename must not publish a file whose bytes are still in flight
        if tmp.stat().st_size != total:
            raise CheckpointError(f"{tmp}: wrote {tmp.stat().st_size} bytes, expected {total} (disk full?)")
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)
    return total


def generated_tag(path: Path) -> str | None:
    """The ``_generator`` tag of a safetensors file this package wrote, else None."""
    try:
        return read_header(path).metadata.get("_generator")
    except CheckpointError:
        return None


def keep_existing(path: Path, metadata: dict[str, str], overwrite: bool) -> bool:
    """Whether the single file ``path`` already holds what ``metadata`` describes, so writing it can be skipped.

    False when ``path`` does not exist, or holds another generated file and ``overwrite`` is set (it will be
    replaced). Raises ``CheckpointError`` for a file this generator did not write, or another generated file
    without ``overwrite``.
    """
    if not path.exists():
        return False
    tag = generated_tag(path)
    if tag is None:
        raise CheckpointError(f"refusing to replace {path}: it was not written by this generator; move it away")
    if overwrite:
        return False
    if read_header(path).metadata == metadata:
        return True  # generated here before with the same size and seed: the bytes would be identical
    raise CheckpointError(f"{path} holds another generated checkpoint ({tag}); pass overwrite=True to replace it")
