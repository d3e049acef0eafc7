"""Loads a module whose Linear layers run in 8 bits, one layer at a time, never holding its BF16 model.

Two sources, chosen per layer from the file's header: a BF16 weight is read onto the device and quantized
there (per output channel) before the next is read, so the extra memory is one layer; an 8-bit weight
(``ltx2-edge quantize`` output, or Lightricks' FP8 file with per-tensor scales) goes from the file to the
device in 8 bits with its scale, never through BF16. Everything the policy keeps in BF16 loads through
``weights.load_into``. The policy decides; this module only carries it out.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from ltx2_edge.checkpoint.header import TensorInfo, read_header
from ltx2_edge.errors import CheckpointError
from ltx2_edge.models.weights import KeyMap, WeightTransform, load_into, reading
from ltx2_edge.quant.apply import QuantReport, replace_module, summarize
from ltx2_edge.quant.kernels import quantize_weight
from ltx2_edge.quant.linear import QUANT_LINEAR_CLASSES
from ltx2_edge.quant.policy import QuantPolicy
from ltx2_edge.quant.quantized_file import check_quantized_file
from ltx2_edge.streaming.tensor_reader import TensorReader

_EIGHT_BIT = {"F8_E4M3": "fp8", "I8": "int8"}
_LAYER_TENSORS = (".weight", ".weight_scale", ".bias", ".input_scale")


def _layer_of(name: str) -> str:
    for suffix in _LAYER_TENSORS:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def load_quantized(
    module: torch.nn.Module,
    sources: Sequence[Path],
    key_map: KeyMap,
    device: torch.device,
    dtype: torch.dtype,
    policy: QuantPolicy,
    policy_name: Callable[[str], str] = lambda name: name,
    skip: Callable[[str], bool] = lambda name: False,
    transform: WeightTransform | None = None,
    reader: TensorReader | None = None,
) -> QuantReport:
    """Fill the meta-built ``module`` from ``sources``, with the Linears ``policy`` picks in 8 bits.

    ``policy_name`` turns a module name into the name the policy's patterns are written for (Gemma's layers
    are matched as ``language_model.model.layers.N...``). ``skip(module_name)`` marks entries this call leaves
    alone (streamed blocks, filled by the block streamer). ``transform`` (``weights.load_into``'s) sees every
    weight as read, before it is quantized; 8-bit files refuse it. ``reader``: an open reader to share
    (``weights.load_into``'s). Returns what was quantized and what was kept.
    """
    linears = [n for n, m in module.named_modules() if isinstance(m, torch.nn.Linear) and not skip(n)]
    chosen = {n for n in linears if policy.precision_for(policy_name(n)) != "bf16"}
    # Where each chosen layer's tensors live in the files (module name -> (file, file tensor name)).
    where: dict[str, tuple[Path, TensorInfo]] = {}
    for path in map(Path, sources):
        header = read_header(path)
        eight_bit = False
        for info in header.tensors.values():
            target = key_map(info.name)
            if target is None or _layer_of(target) not in chosen:
                continue
            where[target] = (path, info)
            eight_bit |= info.dtype in _EIGHT_BIT and target.endswith(".weight")
        if eight_bit and transform is not None:
            # Fusing into 8-bit weights would requantize them at every load: that belongs in `quantize --lora`.
            raise CheckpointError(f"{path.name} holds 8-bit weights: a LoRA cannot be fused into them at load; "
                                  "bake it in with `ltx2-edge quantize --lora PATH STRENGTH` from the BF16 "
                                  "original")  # fmt: skip
        if eight_bit:
            check_quantized_file(header)  # every scale present, finite and positive before anything is read
    missing = sorted(n for n in chosen if n + ".weight" not in where)
    if missing:
        raise CheckpointError(f"{len(missing)} Linear weights are missing from the checkpoint (first: {missing[0]!r})")

    load_into(module, sources, lambda n: None if (t := key_map(n)) is None or skip(t) or _layer_of(t) in chosen else t,
              device, dtype, filled_elsewhere=lambda n: skip(n) or _layer_of(n) in chosen,
              transform=transform, reader=reader)  # fmt: skip
    cls = QUANT_LINEAR_CLASSES[policy.precision]
    # Layers in file order, each as its weight (+ bias) (+ scale), so the reader streams each file front to back.
    layers = sorted(chosen, key=lambda n: (str(where[n + ".weight"][0]), where[n + ".weight"][1].begin))
    parts = {n: [s for s in (".weight", ".bias", ".weight_scale") if n + s in where] for n in layers}
    with reading(device, reader) as r:
        tensors = r.read([where[n + s] for n in layers for s in parts[n]])
        for layer in layers:
            got = {s: next(tensors) for s in parts[layer]}
            weight, bias = got[".weight"], got.get(".bias")
            path, info = where[layer + ".weight"]
            if weight.dtype in (torch.float8_e4m3fn, torch.int8):
                file_precision = "fp8" if weight.dtype == torch.float8_e4m3fn else "int8"
                if file_precision != policy.precision:
                    raise CheckpointError(
                        f"{path.name}: {info.name} is {file_precision} but this run asks for {policy.precision}: "
                        f"pass --quantization {file_precision} or use the BF16 checkpoint"
                    )
                new = QUANT_LINEAR_CLASSES[file_precision].from_quantized(weight, got[".weight_scale"].float(),
                                                                          _cast(bias, dtype))  # fmt: skip
            else:
                if transform is not None:
                    weight = transform(layer + ".weight", weight)
                q, scale = quantize_weight(weight, policy.precision)
                del weight, got  # the BF16 copy goes before the next layer is read
                new = cls(q, scale, _cast(bias, dtype))
            replace_module(module, layer, new)
    kept = {n: policy.keep_reason(policy_name(n)) or "bf16" for n in linears if n not in chosen}
    return summarize(module, policy.precision, device, kept)


def _cast(bias: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor | None:
    return None if bias is None else bias.to(dtype)
