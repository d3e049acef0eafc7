"""Where a run finds the pre-quantized copy of a checkpoint or Gemma folder, and whether that copy is of this file.

The place is fixed, so the ``quantize`` command and every run agree on it without a flag: beside the original,
named for the precision (``ltx2.safetensors`` -> ``ltx2.fp8.safetensors``; the folder ``gemma`` -> ``gemma.fp8``).
``quantize`` writes there when ``--out`` is left out; a run with ``--prequantized auto`` (the default) reads the
copy from there when it exists and is a copy of this original.

"A copy of this original" is checked, never assumed: ``quantize`` records the source's identity in the copy's
metadata (``SOURCE_KEY``: size, a hash of the safetensors header and a hash of 16 windows of 64 KiB spread over
the tensor data). Two checkpoints of one architecture share their header (a fine-tune saved by the same tool, or
two random checkpoints of different seeds), so the windows are what tells their weights apart; reading them costs
1 MiB, not the 40 GB a full hash would. A copy whose record is missing, names another file, or lists LoRAs baked in
is refused with one line saying how to make it again.

This module reads headers and those windows only; it never writes a file and never decides the precision or the
policy (``quant.prequantized`` checks the recorded policy against the run's).
"""

from __future__ import annotations

import hashlib
import json
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ltx2_edge.checkpoint.header import Header, read_header
from ltx2_edge.errors import CheckpointError

SOURCE_KEY = "ltx2_edge_source"
"""Metadata key of a pre-quantized file: JSON of its source's identity (``source_identity``) and baked LoRAs."""
PRECISIONS = ("fp8", "int8")
PREQUANTIZED_MODES: tuple[str, ...] = ("auto", "on", "off")
"""``--prequantized``: read the copies when they are there (auto), insist on them (on), or read the originals (off)."""
SAMPLE_WINDOWS = 16
SAMPLE_BYTES = 64 * 1024
_SUFFIX = ".safetensors"


def prequantized_name(original: Path, precision: str) -> Path:
    """Where the ``precision`` copy of ``original`` lives: a file ``<stem>.<precision>.safetensors`` beside a file,
    a folder ``<name>.<precision>`` beside a folder (what ``quantize`` writes without ``--out``)."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision {precision!r}: a pre-quantized copy is fp8 or int8")
    original = Path(original)
    if original.name.endswith(_SUFFIX):
        return original.with_name(original.name[: -len(_SUFFIX)] + f".{precision}{_SUFFIX}")
    return original.with_name(f"{original.name}.{precision}")


def source_identity(path: Path, loras: Sequence[str] = ()) -> dict:
    """What a copy records about its source ``path``: name, absolute path, size, the header's and the sampled windows'
    SHA-256, and ``loras`` (descriptions of LoRAs fused in before quantizing: then the copy is another model)."""
    path = Path(path)
    try:
        size = path.stat().st_size
        with path.open("rb") as f:
            head = f.read(8)
            if len(head) < 8:
                raise CheckpointError(f"{path} is {size} bytes long: too short to be safetensors")
            (n,) = struct.unpack("<Q", head)
            header = f.read(n)
            windows = hashlib.sha256()
            for offset in _window_offsets(8 + n, size):
                f.seek(offset)
                windows.update(f.read(SAMPLE_BYTES))
    except OSError as exc:
        raise CheckpointError(f"{path} is not readable: {exc.strerror or exc}") from exc
    # "path" says where the copy came from (for the plan); a moved original still matches by the rest.
    return {"file": path.name, "path": str(path.resolve()), "size": size,
            "header_sha256": hashlib.sha256(header).hexdigest(), "sample_sha256": windows.hexdigest(),
            "loras": list(loras)}  # fmt: skip


def _window_offsets(start: int, end: int) -> list[int]:
    """``SAMPLE_WINDOWS`` offsets spread evenly over the data ``[start, end)``, the first at its start and the last
    ending at its end (all of it when it is smaller than the windows)."""
    span = end - start
    if span <= SAMPLE_WINDOWS * SAMPLE_BYTES:
        return list(range(start, end, SAMPLE_BYTES))
    step = (span - SAMPLE_BYTES) / (SAMPLE_WINDOWS - 1)
    return [start + round(i * step) for i in range(SAMPLE_WINDOWS)]


def recorded_source(header: Header) -> dict | None:
    """The source identity ``header``'s file records (None: no record, e.g. made before ltx2-edge wrote one)."""
    raw = header.metadata.get(SOURCE_KEY)
    if raw is None:
        return None
    try:
        record = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{header.path}: metadata {SOURCE_KEY} is not JSON ({exc})") from exc
    if not isinstance(record, dict):
        raise CheckpointError(f"{header.path}: metadata {SOURCE_KEY} is not a JSON object")
    return record


@dataclass(frozen=True)
class Verified:
    """A pre-quantized copy found where it is looked for and checked against its original (``how``: one line)."""

    path: Path
    original: Path
    how: str


def _mismatch(copy: Header, original: Path) -> str | None:
    """Why ``copy`` is not a pre-quantized copy of the safetensors file ``original`` (None when it is)."""
    record = recorded_source(copy)
    if record is None:
        return "records no source file (made before ltx2-edge recorded one, or not by `ltx2-edge quantize`)"
    if record.get("loras"):
        return f"has LoRAs baked in ({', '.join(map(str, record['loras']))}): it is another model"
    want = source_identity(original)
    for key, what in (("size", "size"), ("header_sha256", "header"), ("sample_sha256", "tensor data")):
        if record.get(key) != want[key]:
            return f"was made from another file than {original} (its {what} differs: {record.get('file')!r})"
    return None


def remake_command(original: Path, precision: str, folder: bool) -> str:
    """How to make the copy of ``original`` again, for refusals (a Gemma copy cannot be overwritten in place)."""
    if folder:
        return f"remove it and run `ltx2-edge quantize --gemma-root {original} --to {precision}`"
    return f"run `ltx2-edge quantize --checkpoint-path {original} --to {precision} --overwrite`"


def _refusal(copy: Path, original: Path, why: str, remake: str) -> CheckpointError:
    return CheckpointError(f"{copy} is where the pre-quantized copy of {original} is looked for, but it {why}: "
                           f"{remake}, move it away, or run with --prequantized off")  # fmt: skip


def find_checkpoint_copy(original: Path, precision: str) -> Verified | None:
    """The ``precision`` copy of the checkpoint ``original`` when one exists where it is looked for
    (``prequantized_name``) and was made from it; None when there is none. ``CheckpointError`` for a file there
    that is not a copy of ``original`` (another checkpoint's, an older one's, one with LoRAs baked in)."""
    copy = prequantized_name(original, precision)
    if not copy.exists():
        return None
    why = _mismatch(read_header(copy), original)
    if why is not None:
        raise _refusal(copy, original, why, remake_command(original, precision, folder=False))
    return Verified(copy, Path(original), "its recorded source (size, header and sampled tensor data) matches")


def find_gemma_copy(original: Path, shards: Sequence[Path], precision: str) -> Verified | None:
    """The ``precision`` copy of the Gemma folder ``original`` (whose weight ``shards`` are given) when one exists
    where it is looked for and every shard of it was made from the shard of the same name, with the same
    ``config.json``; None when there is none, ``CheckpointError`` for a folder there that is not such a copy."""
    copy = prequantized_name(original, precision)
    if not copy.exists():
        return None
    regenerate = remake_command(original, precision, folder=True)
    if not copy.is_dir():
        raise _refusal(copy, original, "is not a folder", regenerate)
    for shard in shards:
        mirrored = copy / Path(shard).relative_to(original)
        if not mirrored.is_file():
            raise _refusal(copy, original, f"has no {mirrored.name}", regenerate)
        why = _mismatch(read_header(mirrored), Path(shard))
        if why is not None:
            raise _refusal(copy, original, f"holds {mirrored.name}, which {why}", regenerate)
    extra = sorted({p.name for p in copy.rglob("*.safetensors")} - {Path(s).name for s in shards})
    if extra:
        raise _refusal(copy, original, f"holds {extra[0]}, which the original does not", regenerate)
    config, copied = Path(original) / "config.json", copy / "config.json"
    if not copied.is_file() or copied.read_bytes() != config.read_bytes():
        raise _refusal(copy, original, "has another config.json", regenerate)
    return Verified(copy, Path(original), f"each of its {len(shards)} shards' recorded source matches")
