"""Reads a safetensors file's header (names, dtypes, shapes, byte offsets, metadata) without reading weights.

Never unpickles anything: a file that is not safetensors (a PyTorch pickle or zip archive, say) is refused
with a message saying what it is. Everything downstream (validation, the planner, the block streamer) works
from the ``Header`` this returns, so the planner can run without loading a single weight.
"""

from __future__ import annotations

import json
import math
import os
import struct
from dataclasses import dataclass, field
from pathlib import Path

from ltx2_edge.errors import CheckpointError

# Bytes per element for every dtype string safetensors writes.
DTYPE_BYTES: dict[str, int] = {
    "F64": 8,
    "F32": 4,
    "F16": 2,
    "BF16": 2,
    "F8_E4M3": 1,
    "F8_E5M2": 1,
    "I64": 8,
    "I32": 4,
    "I16": 2,
    "I8": 1,
    "U8": 1,
    "BOOL": 1,
}
_MAX_HEADER_BYTES = 100 * 1024 * 1024  # safetensors' own limit


@dataclass(frozen=True)
class TensorInfo:
    """One tensor as the header describes it. ``begin``/``end`` are absolute file offsets."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    begin: int
    end: int

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    @property
    def nbytes(self) -> int:
        return self.end - self.begin


@dataclass(frozen=True)
class Header:
    """A parsed safetensors header: ``tensors`` keyed by name, in file order, and the ``metadata`` strings."""

    path: Path
    metadata: dict[str, str]
    tensors: dict[str, TensorInfo] = field(repr=False)

    def with_prefix(self, prefix: str) -> dict[str, TensorInfo]:
        """Tensors whose name starts with ``prefix``."""
        return {k: v for k, v in self.tensors.items() if k.startswith(prefix)}

    def nbytes(self, prefix: str = "") -> int:
        """Total bytes of the tensors under ``prefix``."""
        return sum(t.nbytes for t in self.tensors.values() if t.name.startswith(prefix))


def _describe_non_safetensors(head: bytes) -> str | None:
    if head[:2] == b"PK":
        return "a zip archive (a PyTorch .pt/.ckpt file?)"
    if head[:1] == b"\x80" and len(head) > 1 and head[1] in range(2, 6):
        return "a Python pickle (a PyTorch .pt/.bin file?)"
    return None


def read_header(path: str | os.PathLike[str]) -> Header:
    """Parse ``path``'s safetensors header. Raises ``CheckpointError`` naming the problem."""
    p = Path(path)
    if not p.exists():
        raise CheckpointError(f"checkpoint {p} does not exist: pass the path of the .safetensors file")
    if not p.is_file():
        raise CheckpointError(f"checkpoint {p} is not a file: pass the path of the .safetensors file")
    try:
        size = p.stat().st_size
        with p.open("rb") as f:
            head = f.read(8)
            kind = _describe_non_safetensors(head)
            if kind is not None:
                raise CheckpointError(f"{p} is {kind}, not safetensors; ltx2-edge never unpickles files")
            if len(head) < 8:
                raise CheckpointError(f"{p} is {size} bytes long: too short to be safetensors")
            (n,) = struct.unpack("<Q", head)
            if n == 0 or n > _MAX_HEADER_BYTES or 8 + n > size:
                raise CheckpointError(f"{p} is not a safetensors file (header length {n} for a {size}-byte file)")
            raw = f.read(n)
    except PermissionError as exc:
        raise CheckpointError(f"checkpoint {p} is not readable: {exc.strerror}") from exc
    try:
        doc = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{p} is not a safetensors file: its header is not JSON ({exc})") from exc
    if not isinstance(doc, dict):
        raise CheckpointError(f"{p} is not a safetensors file: its header is not a JSON object")
    metadata = doc.pop("__metadata__", None) or {}
    data_start = 8 + n
    tensors: dict[str, TensorInfo] = {}
    for name, info in sorted(doc.items(), key=lambda kv: kv[1].get("data_offsets", [0])[0]):
        try:
            dtype = info["dtype"]
            shape = tuple(int(d) for d in info["shape"])
            b, e = (int(x) for x in info["data_offsets"])
        except (KeyError, TypeError, ValueError) as exc:
            raise CheckpointError(f"{p}: tensor {name!r} has a malformed header entry ({exc})") from exc
        if dtype not in DTYPE_BYTES:
            raise CheckpointError(f"{p}: tensor {name!r} has unknown dtype {dtype!r}")
        if e - b != math.prod(shape) * DTYPE_BYTES[dtype] or data_start + e > size:
            raise CheckpointError(
                f"{p}: tensor {name!r} has offsets [{b}, {e}) that do not match {dtype}{list(shape)}"
                f" or lie past the end of the {size}-byte file (truncated download?)"
            )
        tensors[name] = TensorInfo(name, dtype, shape, data_start + b, data_start + e)
    return Header(path=p, metadata={str(k): str(v) for k, v in metadata.items()}, tensors=tensors)


def read_config(path: str | os.PathLike[str]) -> dict:
    """The checkpoint's ``config`` metadata (JSON) as a dict; ``CheckpointError`` if absent or not JSON."""
    raw = read_header(path).metadata.get("config")
    if raw is None:
        raise CheckpointError(f"{path} has no 'config' metadata: is this an official LTX-2 checkpoint?")
    try:
        config = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{path}: its 'config' metadata is not JSON ({exc})") from exc
    if not isinstance(config, dict):
        raise CheckpointError(f"{path}: its 'config' metadata is not a JSON object")
    return config
