"""Reading a pre-quantized file: its recorded policy, its checked scales, and 8-bit layers built straight from it.

The format is ``convert.py``'s (each quantized Linear's ``<name>.weight`` F8_E4M3 or I8 [out, in] beside
``<name>.weight_scale`` F32 [out]; the policy under metadata ``ltx2_edge_quantization``); Lightricks' own FP8
files (a per-tensor ``weight_scale``) are read too. Loaders and the block streamer use this module; the
``quantize`` command (``convert.py``) is never imported by them.

This module never writes a file, never makes a BF16 copy of an 8-bit weight, never loads a scale it has not
checked (present, F32, [out]/[1]/[], finite, > 0), and never accepts a file recorded with another policy than the
one asked for.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import BinaryIO

import torch
from torch import nn

from ltx2_edge.checkpoint.dtypes import TORCH_DTYPES
from ltx2_edge.checkpoint.header import Header, TensorInfo
from ltx2_edge.errors import CheckpointError, RequestError
from ltx2_edge.quant.apply import QuantReport, replace_module, summarize
from ltx2_edge.quant.linear import QUANT_LINEAR_CLASSES
from ltx2_edge.quant.policy import QuantPolicy

METADATA_KEY = "ltx2_edge_quantization"
_PRECISION_OF = {"F8_E4M3": "fp8", "I8": "int8"}


def read_tensor(f: BinaryIO, info: TensorInfo) -> torch.Tensor:
    """Read one tensor by its header offsets into fresh CPU memory (exactly its own bytes, nothing else)."""
    buf = torch.empty(info.nbytes, dtype=torch.uint8)
    f.seek(info.begin)
    if f.readinto(memoryview(buf.numpy())) != info.nbytes:
        raise CheckpointError(f"{f.name}: {info.name} is cut short (truncated file?)")
    return buf.view(TORCH_DTYPES[info.dtype]).reshape(info.shape)


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
