"""The ``quantize`` command: writes a pre-quantized checkpoint (or Gemma folder), streaming, from a BF16 original.

File format (``quantized_file`` reads it; a plain safetensors file, same tensor names as the original): each
quantized Linear's ``<name>.weight`` is F8_E4M3 or I8 [out, in], followed by ``<name>.weight_scale`` F32 [out] (per
output channel, ``W ~ weight * scale``); every other tensor is byte-for-byte the original. Metadata is the
original's plus ``ltx2_edge_quantization`` (``QuantPolicy.to_json``), ``ltx2_edge_source`` (the source file's
identity, which a run checks before reading this file in its place: ``checkpoint.prequantized``) and, when LoRAs
were fused in first (``--lora``; the weights they touch are then the fused ones, quantized or kept),
``ltx2_edge_loras`` (``models.lora``).
Lightricks' own FP8 files (F8_E4M3 weights with a per-tensor ``weight_scale`` and an ``input_scale``) are read
too: the scalar is broadcast per channel and ``input_scale`` is not used, since activations are scaled per
token at run time.

Conversion streams: tensors are read one at a time by header offsets, quantized, and appended, with the
header written first (sizes are known from the source header), so a 38 GB file converts in a few hundred MB
of memory. Output goes to a temporary name beside the target and is renamed only when complete.

This module never writes a BF16 copy of a quantized weight and never converts a file that is already quantized;
it never loads a model (layers are built from files by ``quantized_file``).
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import BinaryIO

import torch

from ltx2_edge.atomic import atomic_output, check_output_path, clean_stale, output_failure, temp_path
from ltx2_edge.checkpoint.header import Header, TensorInfo, read_config, read_header
from ltx2_edge.checkpoint.names import TRANSFORMER_PREFIX
from ltx2_edge.checkpoint.prequantized import SOURCE_KEY, source_identity
from ltx2_edge.checkpoint.validate import check_not_lfs_pointer
from ltx2_edge.errors import CheckpointError, RequestError
from ltx2_edge.inputs import LoraSpec
from ltx2_edge.models.lora import BAKED_METADATA_KEY, LoraFuser, check_fusable, inspect_transformer_loras
from ltx2_edge.quant import kernels
from ltx2_edge.quant.policy import QuantPolicy
from ltx2_edge.quant.quantized_file import METADATA_KEY, read_tensor, recorded_policy

Progress = Callable[[int, int], None]  # (bytes written, bytes in total)

_QUANT_DTYPE = {"fp8": "F8_E4M3", "int8": "I8"}
_FLOAT_SOURCES = ("F32", "F16", "BF16")
_COPY_CHUNK = 64 << 20
_OUT = "--out"  # the quantize command's output flag, which every output error names


def _write_tensor(out: BinaryIO, t: torch.Tensor) -> int:
    data = t.detach().contiguous().cpu().reshape(-1).view(torch.uint8).numpy()
    out.write(memoryview(data))
    return data.nbytes


def _plan(header: Header, policy: QuantPolicy) -> list[tuple[TensorInfo, str | None]]:
    """Each source tensor with the dtype it is quantized to, or None when it is copied unchanged."""
    plan: list[tuple[TensorInfo, str | None]] = []
    for info in header.tensors.values():
        stem = info.name.removesuffix(".weight")
        target = None
        if stem != info.name and len(info.shape) == 2 and policy.precision_for(stem) != "bf16":
            if info.dtype not in _FLOAT_SOURCES:
                raise CheckpointError(
                    f"{header.path}: {info.name} is already {info.dtype}; convert the BF16 original instead"
                )
            target = _QUANT_DTYPE[policy.precision]
        plan.append((info, target))
    return plan


def _source(src: Path, pol: QuantPolicy) -> tuple[Header, list[tuple[TensorInfo, str | None]]]:
    header = read_header(src)
    recorded = recorded_policy(header)
    if recorded is not None:
        raise CheckpointError(f"{src} is already quantized ({recorded.summary()}); convert the BF16 original")
    return header, _plan(header, pol)


def _write(
    header: Header,
    plan: list,
    dst: Path,
    pol: QuantPolicy,
    progress: Progress | None,
    device: str,
    fuser: LoraFuser | None = None,
    overwrite: bool = False,
    inputs: Sequence[Path] = (),
) -> int:
    """Stream ``plan`` into ``dst`` (header first, then tensor after tensor; ``atomic_output``: all or nothing);
    returns the weights quantized. ``fuser``'s LoRAs are fused into the weights it names (checkpoint names) before
    they are quantized or copied."""
    fused = fuser.targets if fuser is not None else frozenset()
    entries: dict[str, dict] = {}
    offset = 0
    for info, target in plan:
        parts = [(info.name, target or info.dtype, list(info.shape), info.numel if target else info.nbytes)]
        if target:
            parts.append((info.name + "_scale", "F32", [info.shape[0]], 4 * info.shape[0]))
        for name, dtype, shape, nbytes in parts:
            entries[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + nbytes]}
            offset += nbytes
    entries["__metadata__"] = {**header.metadata, METADATA_KEY: pol.to_json()}
    baked = [lora.describe() for lora in fuser.files] if fuser is not None else []
    if fuser is not None:
        entries["__metadata__"][BAKED_METADATA_KEY] = json.dumps(baked)
    # What a run checks before it reads this file in place of its source (checkpoint.prequantized).
    loras = [f"{lora['path']} x{lora['strength']:g}" for lora in baked]
    entries["__metadata__"][SOURCE_KEY] = json.dumps(source_identity(header.path, loras), separators=(",", ":"))
    raw = json.dumps(entries, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)  # safetensors pads the header to 8 bytes so the data starts aligned
    done = 0
    with atomic_output(dst, overwrite, inputs=(header.path, *inputs), field=_OUT) as tmp:
        with header.path.open("rb") as f, tmp.open("wb") as out:
            out.write(len(raw).to_bytes(8, "little") + raw)
            for info, target in plan:
                if target is None and info.name in fused:  # a kept-BF16 Linear a LoRA changes: fused, same dtype
                    done += _write_tensor(out, fuser(info.name, read_tensor(f, info).to(device)))  # type: ignore[misc]
                elif target is None:  # raw bytes in chunks: a 2 GB embedding table never sits in memory
                    f.seek(info.begin)
                    for start in range(0, info.nbytes, _COPY_CHUNK):
                        out.write(f.read(min(_COPY_CHUNK, info.nbytes - start)))
                    done += info.nbytes
                else:
                    try:
                        weight = read_tensor(f, info).to(device)
                        if info.name in fused:
                            weight = fuser(info.name, weight)  # type: ignore[misc]
                        q, scale = kernels.quantize_weight(weight, pol.precision)
                    except ValueError as exc:
                        raise CheckpointError(f"{header.path}: {info.name}: {exc}") from exc
                    done += _write_tensor(out, q) + _write_tensor(out, scale)
                if progress is not None:
                    progress(done, offset)
            out.flush()
            os.fsync(out.fileno())
    return sum(1 for _, target in plan if target)


def _checked_policy(precision: str, policy: QuantPolicy | None) -> QuantPolicy:
    if precision not in _QUANT_DTYPE:
        raise RequestError("--to", precision, "fp8 or int8 (a bf16 checkpoint needs no conversion)")
    return (policy or QuantPolicy(precision)).with_precision(precision)


def quantize_checkpoint(
    src: Path,
    dst: Path,
    precision: str,
    policy: QuantPolicy | None = None,
    progress: Progress | None = None,
    device: torch.device | str = "cpu",
    overwrite: bool = False,
    loras: Sequence[LoraSpec] = (),
) -> int:
    """Write ``dst``: ``src`` with the Linear weights ``policy`` picks in ``precision`` ("fp8"/"int8").

    ``loras`` are fused into the transformer's weights first (``models.lora``, checked from headers before
    anything is written) and recorded in the metadata: runs of ``dst`` then need no ``--lora``, and can stream
    blocks from the file.

    ``policy`` gives the patterns (default: ``QuantPolicy``'s defaults); its precision is replaced by
    ``precision``. ``device`` does the arithmetic (a GPU is faster; results are identical). Streams tensor by
    tensor; ``progress(done_bytes, total_bytes)`` after each. Returns how many weights were quantized.
    Raises ``CheckpointError`` for an already-quantized source or one with no candidate weight, and
    ``RequestError`` (``--out``) for a bad precision, an existing ``dst`` without ``overwrite``, a ``dst`` that
    cannot be written (``atomic.check_output_path``) or that is ``src`` or one of the LoRA files, whatever
    ``overwrite`` says; all checked before anything is read or written.
    """
    pol = _checked_policy(precision, policy)
    src, dst = Path(src), Path(dst)
    inputs = (src, *(Path(spec.path) for spec in loras))
    check_output_path(dst, overwrite, inputs=inputs, field=_OUT)
    header, plan = _source(src, pol)
    if not any(target for _, target in plan):
        raise CheckpointError(
            f"no weight in {src} matches the 8-bit candidates ({', '.join(pol.quantize)}): is it an LTX-2 checkpoint?"
        )
    if not loras:
        return _write(header, plan, dst, pol, progress, str(device), None, overwrite, inputs)
    with LoraFuser(inspect_transformer_loras(loras, read_config(src)), TRANSFORMER_PREFIX) as fuser:
        check_fusable(header, fuser, TRANSFORMER_PREFIX)
        return _write(header, plan, dst, pol, progress, str(device), fuser, overwrite, inputs)


def quantize_gemma_folder(
    src_dir: Path,
    dst_dir: Path,
    precision: str,
    policy: QuantPolicy | None = None,
    progress: Progress | None = None,
    device: torch.device | str = "cpu",
) -> int:
    """Write ``dst_dir``: the Gemma folder ``src_dir`` with its language-model Linear weights quantized.

    Every ``*.safetensors`` shard is converted as ``quantize_checkpoint`` does; the index's ``weight_map``
    gains the ``*.weight_scale`` entries and its ``total_size`` is recomputed; tokenizer and config files are
    copied. Built under a temporary name and renamed when complete. Returns the number of quantized weights.
    ``RequestError`` (``--out``) for a ``dst_dir`` that exists, whose parent does not, or that lies inside
    ``src_dir`` (its shards would become the source's: ltx-core loads every ``*.safetensors`` there).
    """
    pol = _checked_policy(precision, policy)
    src_dir, dst_dir = Path(src_dir), Path(dst_dir)
    if not src_dir.is_dir():
        raise CheckpointError(f"Gemma folder {src_dir} does not exist: pass the folder holding config.json")
    for item in src_dir.rglob("*"):  # copied as they are: a git-lfs pointer would make a broken folder
        if item.is_file() and item.suffix != ".safetensors":
            check_not_lfs_pointer(item)
    if dst_dir.exists():
        raise RequestError(_OUT, str(dst_dir), "a new folder: the folder exists; remove it or choose another path")
    if not dst_dir.parent.is_dir():
        raise RequestError(_OUT, str(dst_dir), f"a new folder in an existing one ({dst_dir.parent} does not exist)")
    if dst_dir.resolve().is_relative_to(src_dir.resolve()):
        raise RequestError(_OUT, str(dst_dir), f"a folder outside the Gemma folder {src_dir} (ltx-core would load "
                           "the quantized shards as part of it)")  # fmt: skip
    shards = [(path, *_source(path, pol)) for path in sorted(src_dir.glob("*.safetensors"))]
    if not any(target for _, _, plan in shards for _, target in plan):
        raise CheckpointError(f"no weight in {src_dir} matches the 8-bit candidates: is it a Gemma 3 folder?")
    sizes = [header.nbytes() for _, header, _ in shards]
    clean_stale(dst_dir)
    tmp = temp_path(dst_dir)
    try:
        tmp.mkdir()
        count = 0
        for i, (path, header, plan) in enumerate(shards):

            def shard_progress(done: int, total: int, base: int = sum(sizes[:i]), size: int = sizes[i]) -> None:
                if progress is not None:  # in source bytes across all shards, so it only ever grows
                    progress(base + done * size // max(total, 1), sum(sizes))

            count += _write(header, plan, tmp / path.name, pol, shard_progress, str(device))
        for item in src_dir.iterdir():
            if item.suffix == ".safetensors" or item.name.endswith(".index.json"):
                continue
            (shutil.copytree if item.is_dir() else shutil.copy2)(item, tmp / item.name)
        for index in src_dir.glob("*.index.json"):
            _rewrite_index(index, tmp)
        os.replace(tmp, dst_dir)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise output_failure(exc, dst_dir, _OUT) from exc
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return count


def _rewrite_index(index: Path, out_dir: Path) -> None:
    doc = json.loads(index.read_text())
    weight_map: dict[str, str] = {}
    total = 0
    for shard in sorted(set(doc.get("weight_map", {}).values())):
        header = read_header(out_dir / shard)
        weight_map.update({name: shard for name in header.tensors})
        total += header.nbytes()
    doc["weight_map"] = dict(sorted(weight_map.items()))
    doc.setdefault("metadata", {})["total_size"] = total
    (out_dir / index.name).write_text(json.dumps(doc, indent=2) + "\n")
