"""Pre-quantized checkpoints: write them (streaming), check them, and build 8-bit layers straight from them.

File format (a plain safetensors file, same tensor names as the original): each quantized Linear's
``<name>.weight`` is F8_E4M3 or I8 [out, in], followed by ``<name>.weight_scale`` F32 [out] (per output
channel, ``W ~ weight * scale``); every other tensor is byte-for-byte the original. Metadata is the original's
plus ``ltx2_edge_quantization`` (``QuantPolicy.to_json``) and, when LoRAs were fused in first (``--lora``; the
weights they touch are then the fused ones, quantized or kept), ``ltx2_edge_loras`` (``models.lora``).
Lightricks' own FP8 files (F8_E4M3 weights with a per-tensor ``weight_scale`` and an ``input_scale``) are read
too: the scalar is broadcast per channel and ``input_scale`` is not used, since activations are scaled per
token at run time.

Conversion streams: tensors are read one at a time by header offsets, quantized, and appended, with the
header written first (sizes are known from the source header), so a 38 GB file converts in a few hundred MB
of memory. Output goes to a temporary name beside the target and is renamed only when complete.

This module never writes a BF16 copy of a quantized weight, never loads a scale it has not checked (present,
F32, [out]/[1]/[], finite, > 0), and never accepts a file recorded with another policy than the one asked for.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import torch
from torch import nn

from ltx2_edge.checkpoint.header import TORCH_DTYPES, Header, TensorInfo, read_config, read_header
from ltx2_edge.errors import CheckpointError, RequestError
from ltx2_edge.models.lora import (
    BAKED_METADATA_KEY,
    CHECKPOINT_PREFIX,
    LoraFuser,
    LoraSpec,
    check_fusable,
    inspect_transformer_loras,
)
from ltx2_edge.quant import kernels
from ltx2_edge.quant.apply import QuantReport, replace_module, summarize
from ltx2_edge.quant.linear import QUANT_LINEAR_CLASSES
from ltx2_edge.quant.policy import QuantPolicy

METADATA_KEY = "ltx2_edge_quantization"
Progress = Callable[[int, int], None]  # (bytes written, bytes in total)

_TORCH_DTYPES = TORCH_DTYPES
_QUANT_DTYPE = {"fp8": "F8_E4M3", "int8": "I8"}
_PRECISION_OF = {"F8_E4M3": "fp8", "I8": "int8"}
_FLOAT_SOURCES = ("F32", "F16", "BF16")
_COPY_CHUNK = 64 << 20


def read_tensor(f: BinaryIO, info: TensorInfo) -> torch.Tensor:
    """Read one tensor by its header offsets into fresh CPU memory (exactly its own bytes, nothing else)."""
    buf = torch.empty(info.nbytes, dtype=torch.uint8)
    f.seek(info.begin)
    if f.readinto(memoryview(buf.numpy())) != info.nbytes:
        raise CheckpointError(f"{f.name}: {info.name} is cut short (truncated file?)")
    return buf.view(_TORCH_DTYPES[info.dtype]).reshape(info.shape)


def _write_tensor(out: BinaryIO, t: torch.Tensor) -> int:
    data = t.detach().contiguous().cpu().reshape(-1).view(torch.uint8).numpy()
    out.write(memoryview(data))
    return data.nbytes


def recorded_policy(header: Header) -> QuantPolicy | None:
    """The policy a converted file records, or None (a BF16 original or a Lightricks FP8 file)."""
    text = header.metadata.get(METADATA_KEY)
    if text is None:
        return None
    try:
        return QuantPolicy.from_json(text)
    except (ValueError, KeyError, TypeError, RequestError) as exc:
        raise CheckpointError(f"{header.path}: metadata {METADATA_KEY} is not readable ({exc})") from exc


def check_recorded_policy(header: Header, policy: QuantPolicy) -> None:
    """``CheckpointError`` saying both policies if ``header``'s file was converted with another policy."""
    recorded = recorded_policy(header)
    if recorded is not None and recorded != policy:
        raise CheckpointError(
            f"{header.path} was quantized as [{recorded.summary()}] but this run asks for [{policy.summary()}]: "
            "run with the flags the file was made with, or convert the BF16 original again with these"
        )


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
) -> int:
    """Stream ``plan`` into ``dst`` (header first, then tensor after tensor); returns the weights quantized.
    ``fuser``'s LoRAs are fused into the weights it names (checkpoint names) before they are quantized or copied."""
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
    if fuser is not None:
        entries["__metadata__"][BAKED_METADATA_KEY] = json.dumps([lora.describe() for lora in fuser.files])
    raw = json.dumps(entries, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)  # safetensors pads the header to 8 bytes so the data starts aligned
    tmp = dst.with_name(f".{dst.name}.partial-{os.getpid()}")
    done = 0
    try:
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
        os.replace(tmp, dst)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return sum(1 for _, target in plan if target)


def _checked_policy(precision: str, policy: QuantPolicy | None) -> QuantPolicy:
    if precision not in _QUANT_DTYPE:
        raise RequestError("precision", precision, "fp8 or int8 (a bf16 checkpoint needs no conversion)")
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
    ``RequestError`` for a bad precision or an existing ``dst`` without ``overwrite``.
    """
    pol = _checked_policy(precision, policy)
    src, dst = Path(src), Path(dst)
    if dst.exists() and not overwrite:
        raise RequestError("dst", str(dst), "the file exists; remove it, choose another path, or pass overwrite")
    header, plan = _source(src, pol)
    if not any(target for _, target in plan):
        raise CheckpointError(
            f"no weight in {src} matches the 8-bit candidates ({', '.join(pol.quantize)}): is it an LTX-2 checkpoint?"
        )
    if not loras:
        return _write(header, plan, dst, pol, progress, str(device))
    with LoraFuser(inspect_transformer_loras(loras, read_config(src)), CHECKPOINT_PREFIX) as fuser:
        check_fusable(header, fuser, CHECKPOINT_PREFIX)
        return _write(header, plan, dst, pol, progress, str(device), fuser)


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
    """
    pol = _checked_policy(precision, policy)
    src_dir, dst_dir = Path(src_dir), Path(dst_dir)
    if not src_dir.is_dir():
        raise CheckpointError(f"Gemma folder {src_dir} does not exist: pass the folder holding config.json")
    if dst_dir.exists():
        raise RequestError("dst_dir", str(dst_dir), "the folder exists; remove it or choose another path")
    shards = [(path, *_source(path, pol)) for path in sorted(src_dir.glob("*.safetensors"))]
    if not any(target for _, _, plan in shards for _, target in plan):
        raise CheckpointError(f"no weight in {src_dir} matches the 8-bit candidates: is it a Gemma 3 folder?")
    sizes = [header.nbytes() for _, header, _ in shards]
    tmp = dst_dir.with_name(f".{dst_dir.name}.partial-{os.getpid()}")
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


def check_quantized_file(header: Header, prefix: str = "", policy: QuantPolicy | None = None) -> dict[str, str]:
    """Validate every 8-bit weight under ``prefix``: ``{layer name (prefix removed): "fp8"/"int8"}``.

    Reads only the scale tensors. ``CheckpointError`` for a missing, non-F32, misshapen, non-finite or
    non-positive ``weight_scale``, or (``policy`` given) a file recorded with another policy.
    """
    if policy is not None:
        check_recorded_policy(header, policy)
    layout: dict[str, str] = {}
    with header.path.open("rb") as f:
        for info in header.with_prefix(prefix).values():
            precision = _PRECISION_OF.get(info.dtype)
            if precision is None or not info.name.endswith(".weight"):
                continue
            stem = info.name.removesuffix(".weight")
            _read_scale(f, header, stem, info)
            layout[stem[len(prefix) :]] = precision
    return layout


def _read_scale(f: BinaryIO, header: Header, stem: str, weight: TensorInfo) -> torch.Tensor:
    name = stem + ".weight_scale"
    info = header.tensors.get(name)
    where = f"{header.path}: {name}"
    if info is None:
        raise CheckpointError(
            f"{where} is missing for the {weight.dtype} weight (an unscaled FP8 cast, or an incomplete file): "
            "convert the BF16 original with quantize_checkpoint"
        )
    rows = weight.shape[0] if weight.shape else 0
    if info.dtype != "F32" or info.shape not in ((), (1,), (rows,)):
        raise CheckpointError(f"{where} is {info.dtype}{list(info.shape)}; expected F32[{rows}] (or F32[] per tensor)")
    scale = read_tensor(f, info)
    bad = ~(torch.isfinite(scale) & (scale > 0))
    if bool(bad.any()):
        first = scale.reshape(-1)[bad.reshape(-1)][0].item()
        raise CheckpointError(f"{where} has {int(bad.sum())} non-finite or non-positive values (first {first!r})")
    return scale


@dataclass(frozen=True)
class QuantizedWeights:
    """One Linear's tensors as a pre-quantized file stores them (what a loader or block streamer places)."""

    precision: str  # "fp8" or "int8"
    weight: torch.Tensor  # [out, in] float8_e4m3fn / int8
    scale: torch.Tensor  # fp32: [out] per channel, or [] / [1] per tensor (Lightricks' files)
    bias: torch.Tensor | None


def load_quantized_linear_weights(
    header: Header, prefix: str = "", device: torch.device | str = "cpu", policy: QuantPolicy | None = None
) -> dict[str, QuantizedWeights]:
    """Every 8-bit Linear under ``prefix``: ``{layer name (prefix removed): QuantizedWeights}`` on ``device``.

    A prefix such as ``"model.diffusion_model.transformer_blocks.3."`` reads one block. All scales (and the
    recorded policy, if ``policy`` is given) are checked before anything is read; the weights travel from the
    file to ``device`` in their 8-bit dtype, never through BF16.
    """
    layout = check_quantized_file(header, prefix, policy)
    out: dict[str, QuantizedWeights] = {}
    with header.path.open("rb") as f:
        for name, precision in layout.items():
            stem = prefix + name
            weight_info = header.tensors[stem + ".weight"]
            bias_info = header.tensors.get(stem + ".bias")
            out[name] = QuantizedWeights(
                precision,
                read_tensor(f, weight_info).to(device),
                _read_scale(f, header, stem, weight_info).to(device),
                None if bias_info is None else read_tensor(f, bias_info).to(device),
            )
    return out


def load_quantized_linears_(
    model: nn.Module,
    header: Header,
    prefix: str,
    device: torch.device | str = "cpu",
    policy: QuantPolicy | None = None,
    kernel: str | None = None,
) -> QuantReport:
    """Replace each Linear of ``model`` whose weight the file holds in 8 bits by a layer built from the file.

    ``prefix`` maps module names to file names (``"model.diffusion_model."`` for the transformer). Weights go
    from the file to ``device`` in their 8-bit dtype; no BF16 copy is made. Other Linears are left for the
    normal loader. ``CheckpointError`` (before any layer is replaced) if a scale is bad, the recorded policy
    differs from ``policy``, or an 8-bit weight in the file has no Linear in ``model``.
    """
    weights = load_quantized_linear_weights(header, prefix, device, policy)
    linears = {n for n, m in model.named_modules() if isinstance(m, nn.Linear)}
    stray = sorted(set(weights) - linears)
    if stray:
        raise CheckpointError(f"{header.path}: 8-bit weight {prefix}{stray[0]} has no Linear layer in the model")
    for name, w in weights.items():
        layer = QUANT_LINEAR_CLASSES[w.precision].from_quantized(w.weight, w.scale, w.bias, kernel)
        replace_module(model, name, layer)
    kept = {name: "bf16 in file" for name in linears - set(weights)}
    return summarize(model, "+".join(sorted({w.precision for w in weights.values()})) or "bf16", device, kept)
