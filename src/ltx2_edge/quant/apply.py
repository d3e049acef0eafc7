"""Swaps a model's ``nn.Linear`` layers for ``Fp8Linear``/``Int8Linear`` in place, as a ``QuantPolicy`` says.

``quantize_model_`` walks the Linear layers by name and replaces them one at a time: the BF16 weight of a
layer is released as soon as its 8-bit replacement exists, so peak memory is the model plus about one layer.
On a model built on ``meta`` it makes empty 8-bit shells for a loader to fill from a pre-quantized file
(``load_state_dict(assign=True)``). ``QuantReport`` says what was done: counts, bytes, kept layers and why,
and which kernel each quantized layer runs on the target device (with any fallback's reason).

This module never quantizes a layer the policy keeps, never keeps a reference to a replaced BF16 weight, and
never moves the layers it does not quantize.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import torch
from torch import nn

from ltx2_edge.quant.linear import QUANT_LINEAR_CLASSES, QuantLinear
from ltx2_edge.quant.policy import QuantPolicy


@dataclass(frozen=True)
class QuantReport:
    """What ``quantize_model_`` did. Bytes count the Linear layers' weights, scales and biases only."""

    precision: str
    device: str
    quantized: int
    params_quantized: int  # weight elements now held in 8 bits
    params_kept: int  # weight elements of Linear layers left in their float dtype
    bytes_before: int
    bytes_after: int
    kept: dict[str, str] = field(default_factory=dict)  # module name -> reason ("kept: <pattern>", ...)
    kernels: dict[str, int] = field(default_factory=dict)  # kernel name -> layers running it on ``device``
    fallbacks: tuple[str, ...] = ()  # one line per layer whose default kernel cannot run it

    def lines(self) -> list[str]:
        """Human-readable summary for the run report (kept layers grouped by reason)."""
        gib = 1024**3
        out = [
            f"{self.quantized} Linear layers in {self.precision} ({self.params_quantized / 1e9:.2f}B weights), "
            f"{len(self.kept)} kept ({self.params_kept / 1e9:.2f}B weights); Linear bytes "
            f"{self.bytes_before / gib:.2f} GiB -> {self.bytes_after / gib:.2f} GiB",
        ]
        for reason, count in sorted(Counter(self.kept.values()).items()):
            out.append(f"  {count} layers {reason}")
        if self.kernels:
            out.append("kernels on " + self.device + ": " + ", ".join(f"{k} x{n}" for k, n in self.kernels.items()))
        out.extend(f"  fallback: {line}" for line in self.fallbacks)
        return out


def _nbytes(t: torch.Tensor | None) -> int:
    return 0 if t is None else t.numel() * t.element_size()


def replace_module(model: nn.Module, name: str, new: nn.Module) -> None:
    """Put ``new`` at the dotted path ``name`` inside ``model``."""
    parent_name, _, attr = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, attr, new)


def quantize_model_(
    model: nn.Module, policy: QuantPolicy, device: torch.device | str | None = None, kernel: str | None = None
) -> QuantReport:
    """Replace, in place, every ``nn.Linear`` of ``model`` that ``policy`` quantizes; return what was done.

    ``device`` is where the 8-bit layers are made and where the model will run (it picks the kernels in the
    report); None means where each layer's weight already is. Layers the policy keeps stay where they are:
    move the model afterwards. On a ``meta`` model the 8-bit layers are empty shells on ``meta``. ``kernel``
    forces one registered kernel for every quantized layer (``ValueError`` if it cannot run one).
    """
    names = [n for n, m in model.named_modules() if isinstance(m, nn.Linear | QuantLinear)]
    kept: dict[str, str] = {}
    before = 0
    cls = QUANT_LINEAR_CLASSES.get(policy.precision)
    for name in names:  # names, not modules: holding every module here would pin every BF16 weight
        layer = model.get_submodule(name)
        if isinstance(layer, QuantLinear):  # already 8-bit (a second call, or built from a quantized file)
            before += _nbytes(layer.weight) + _nbytes(layer.weight_scale) + _nbytes(layer.bias)
            continue
        before += _nbytes(layer.weight) + _nbytes(layer.bias)
        reason = policy.keep_reason(name)
        if reason is not None or cls is None:
            kept[name] = reason or "bf16 run"
            continue
        if layer.weight.is_meta:
            has_bias = layer.bias is not None
            bias_dtype = layer.bias.dtype if has_bias else torch.bfloat16
            new = cls.empty(layer.in_features, layer.out_features, has_bias, "meta", bias_dtype, kernel)
        else:
            new = cls.from_float(layer, device=device, kernel=kernel)
        replace_module(model, name, new)
        layer = new = None  # the last references: the BF16 weight is freed before the next layer is quantized
    return summarize(model, policy.precision, device, kept, before)


def summarize(
    model: nn.Module,
    precision: str,
    device: torch.device | str | None = None,
    reasons: dict[str, str] | None = None,
    bytes_before: int | None = None,
) -> QuantReport:
    """Report on ``model``'s Linear layers as they are now: 8-bit ones, kept ones (with ``reasons``), kernels.

    ``device`` picks the kernels shown (None: where each layer's weight is; meta shells show none).
    ``bytes_before`` defaults to what the layers would take with BF16 weights.
    """
    reasons = reasons or {}
    kept: dict[str, str] = {}
    kernel_counts: Counter[str] = Counter()
    fallbacks: list[str] = []
    quantized = params_q = params_kept = after = bf16_equiv = 0
    for name, layer in model.named_modules():
        if isinstance(layer, QuantLinear):
            quantized += 1
            params_q += layer.weight.numel()
            after += _nbytes(layer.weight) + _nbytes(layer.weight_scale) + _nbytes(layer.bias)
            run_on = torch.device(device).type if device is not None else layer.weight.device.type
            if run_on != "meta":  # a meta shell without a target device has no kernel yet
                kernel_name, note = layer.kernel_for(run_on)
                kernel_counts[kernel_name] += 1
                if note:
                    fallbacks.append(f"{name}: {note}")
        elif isinstance(layer, nn.Linear):
            kept[name] = reasons.get(name, "bf16")
            params_kept += layer.weight.numel()
            after += _nbytes(layer.weight) + _nbytes(layer.bias)
        else:
            continue
        bf16_equiv += 2 * layer.weight.numel() + _nbytes(layer.bias)
    return QuantReport(
        precision=precision,
        device=str(device) if device is not None else "where the weights are",
        quantized=quantized,
        params_quantized=params_q,
        params_kept=params_kept,
        bytes_before=bf16_equiv if bytes_before is None else bytes_before,
        bytes_after=after,
        kept=kept,
        kernels=dict(kernel_counts),
        fallbacks=tuple(fallbacks),
    )
