"""``Fp8Linear`` and ``Int8Linear``: drop-in replacements for ``nn.Linear`` holding 8-bit weights.

Each holds ``weight`` [out, in] as float8_e4m3fn or int8, ``weight_scale`` [out] fp32 (per output channel,
``W ~ weight * weight_scale[:, None]``) and ``bias`` in its original dtype. These are the state-dict names a
pre-quantized file uses, so ``load_state_dict(assign=True)`` fills a shell made by ``empty(...)``. The forward
quantizes activations per token and runs the kernel ``kernels.choose_kernel`` picks for the input's device
(or the one set with ``set_kernel``); leading batch dimensions of any rank are kept.

This module never stores a BF16 copy of a quantized weight and never changes the precision of a module.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Self

import torch
from torch import nn

from ltx2_edge.quant import kernels


class QuantLinear(nn.Module):
    """Common body of ``Fp8Linear`` and ``Int8Linear``; use those."""

    precision: str = ""

    def __init__(
        self, weight: torch.Tensor, weight_scale: torch.Tensor, bias: torch.Tensor | None, kernel: str | None = None
    ) -> None:
        super().__init__()
        self.out_features, self.in_features = weight.shape
        # Parameters (not buffers), as in nn.Linear, so parameters() counts them; they are never trained.
        self.weight = nn.Parameter(weight, requires_grad=False)
        self.weight_scale = nn.Parameter(weight_scale, requires_grad=False)
        self.bias = None if bias is None else nn.Parameter(bias, requires_grad=False)
        self.kernel = kernel
        self._fn: dict[str, Callable[..., torch.Tensor]] = {}  # device type -> kernel function, chosen once
        if kernel is not None:
            kernels.choose_kernel(self.precision, weight.device.type, self.in_features, self.out_features, kernel)

    @classmethod
    def from_float(cls, linear: nn.Linear, device: torch.device | str | None = None, kernel: str | None = None) -> Self:
        """Quantize ``linear``'s weight per output channel on ``device`` (default: where the weight is).

        The weight is copied to ``device`` alone, quantized there in row chunks, and the copy dropped, so the
        extra memory is one layer. The bias keeps its dtype. ``ValueError`` if the weight has inf/NaN.
        """
        target = torch.device(device) if device is not None else linear.weight.device
        if linear.weight.is_meta:
            raise ValueError("linear is on the meta device: load its weight first, or build a shell with empty()")
        q, scale = kernels.quantize_weight(linear.weight.detach().to(target), cls.precision)
        bias = None if linear.bias is None else linear.bias.detach().to(target, copy=True)
        return cls(q, scale, bias, kernel)

    @classmethod
    def from_quantized(
        cls,
        weight: torch.Tensor,
        weight_scale: torch.Tensor,
        bias: torch.Tensor | None = None,
        kernel: str | None = None,
    ) -> Self:
        """Wrap stored tensors: ``weight`` [out, in] in this class's dtype, ``weight_scale`` [out], [1] or [].

        A per-tensor scale (Lightricks' FP8 files) is broadcast to per-channel, in fp32; the weight is used as
        it is, never through BF16. ``ValueError`` names the first problem (dtype, shape, non-finite or
        non-positive scale).
        """
        want = kernels.QDTYPE[cls.precision]
        if weight.dtype != want or weight.dim() != 2:
            raise ValueError(f"weight must be a 2-D {want} tensor, got {weight.dtype}{list(weight.shape)}")
        n = weight.shape[0]
        if tuple(weight_scale.shape) not in ((), (1,), (n,)):
            raise ValueError(f"weight_scale shape {list(weight_scale.shape)} is not [{n}], [1] or [] for {n} rows")
        scale = weight_scale.to(device=weight.device, dtype=torch.float32).reshape(-1).expand(n).contiguous()
        if not scale.is_meta:
            bad = ~(torch.isfinite(scale) & (scale > 0))
            if bool(bad.any()):
                row = int(bad.nonzero()[0, 0])
                raise ValueError(f"weight_scale[{row}] = {scale[row].item()!r}: scales must be finite and > 0")
        if bias is not None and tuple(bias.shape) != (n,):
            raise ValueError(f"bias shape {list(bias.shape)} does not match {n} output features")
        return cls(weight, scale, bias, kernel)

    @classmethod
    def empty(
        cls,
        in_features: int,
        out_features: int,
        bias: bool,
        device: torch.device | str = "meta",
        bias_dtype: torch.dtype = torch.bfloat16,
        kernel: str | None = None,
    ) -> Self:
        """An uninitialised shell (on ``meta`` by default) for ``load_state_dict(assign=True)`` to fill."""
        weight = torch.empty((out_features, in_features), dtype=kernels.QDTYPE[cls.precision], device=device)
        scale = torch.empty(out_features, dtype=torch.float32, device=device)
        b = torch.empty(out_features, dtype=bias_dtype, device=device) if bias else None
        return cls(weight, scale, b, kernel)

    def set_kernel(self, kernel: str | None) -> None:
        """Run ``kernel`` from now on (None: the device's default). ``ValueError`` if it cannot run this layer."""
        if kernel is not None:
            device_type = self.weight.device.type
            kernels.choose_kernel(self.precision, device_type, self.in_features, self.out_features, kernel)
        self.kernel = kernel
        self._fn = {}

    def kernel_for(self, device_type: str) -> tuple[str, str]:
        """``(kernel name, note)`` this layer runs on ``device_type``; the note explains a fallback."""
        return kernels.choose_kernel(self.precision, device_type, self.in_features, self.out_features, self.kernel)

    def compiled_kernel(self, device_type: str) -> str:
        """The kernel this layer runs on ``device_type`` inside a compiled region (pure: nothing is stored)."""
        name = self.kernel_for(device_type)[0]
        return kernels.COMPILED_VARIANT.get(name, name)

    def prepare_compiled(self, device_type: str) -> str:
        """Pick, outside the compiled region, the kernel this layer runs inside one; returns its name.

        Choosing inside would make the compiler trace the registry and mutate ``_fn`` as a side effect.
        """
        name = self.compiled_kernel(device_type)
        self._fn[device_type + "/compiled"] = kernels.KERNELS[name].fn
        return name

    def prepare_gelu_fused(self, device_type: str) -> str:
        """Pick the GEMM ``forward_gelu`` runs on ``device_type``: that of the layer's compiled kernel; returns its
        name. ``ValueError`` when that kernel quantizes no activations (a weight-only kernel has nothing to fuse)."""
        name = self.compiled_kernel(device_type)
        gemm = kernels.KERNELS[name].gemm
        if gemm is None:
            raise ValueError(f"kernel={name!r} quantizes no activations, so no GELU can be fused into it: "
                             f"use a per-token {self.precision} kernel (set_kernel(None): the default)")  # fmt: skip
        self._fn[device_type + "/gelu"] = gemm
        return name

    def forward_gelu(self, h: torch.Tensor) -> torch.Tensor:
        """``self(gelu_tanh(h))`` with the tanh-GELU done inside the per-token activation quantization.

        ``h`` is the pre-activation (ltx-core's ``GELUApprox.proj`` output). One op, ``ltx2_edge::gelu_quant_rows``
        (a Triton kernel on CUDA: ``h`` read once, 8-bit activations and scales written), then the GEMM chosen by
        ``prepare_gelu_fused``. Numerics: ``kernels.gelu_quantize_rows``, then the same GEMM and epilogue as the
        layer's compiled kernel; ``RuntimeError`` if ``prepare_gelu_fused`` was not called for this device.
        """
        if h.shape[-1] != self.in_features:
            raise ValueError(f"input has {h.shape[-1]} features, this layer takes {self.in_features}")
        gemm = self._fn.get(h.device.type + "/gelu")
        if gemm is None:
            raise RuntimeError(f"call prepare_gelu_fused({h.device.type!r}) before forward_gelu")
        lead = h.shape[:-1]
        xq, xs = torch.ops.ltx2_edge.gelu_quant_rows(h.reshape(-1, self.in_features), self.precision)
        y = gemm(xq, xs, self.weight, self.weight_scale, self.bias, h.dtype)
        return y.reshape(*lead, self.out_features)

    def dequantize(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """The weight as ``weight * weight_scale`` in ``dtype`` (for tests and reports; forward never does this)."""
        return kernels.dequantize_weight(self.weight, self.weight_scale, dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != self.in_features:
            raise ValueError(f"input has {x.shape[-1]} features, this layer takes {self.in_features}")
        compiling = torch.compiler.is_compiling()
        fn = self._fn.get(x.device.type + ("/compiled" if compiling else ""))
        if fn is None:
            if compiling:
                raise RuntimeError("call prepare_compiled() on every QuantLinear before compiling the model")
            # Chosen once per device type: a step calls ~1,000 of these layers, and the choice is pure Python
            # work that would otherwise run on every call, on a step that is already waiting on the CPU.
            fn = self._fn[x.device.type] = kernels.KERNELS[self.kernel_for(x.device.type)[0]].fn
        lead = x.shape[:-1]
        y = fn(x.reshape(-1, self.in_features), self.weight, self.weight_scale, self.bias)
        return y.reshape(*lead, self.out_features)

    def extra_repr(self) -> str:
        shape = f"in_features={self.in_features}, out_features={self.out_features}"
        return f"{shape}, bias={self.bias is not None}, kernel={self.kernel or 'device default'}"


class Fp8Linear(QuantLinear):
    """``nn.Linear`` with a float8_e4m3fn weight and per-output-channel fp32 scales (FP8 tensor cores on sm_89+)."""

    precision = "fp8"


class Int8Linear(QuantLinear):
    """``nn.Linear`` with an int8 weight and per-output-channel fp32 scales (INT8 tensor cores on sm_75+)."""

    precision = "int8"


QUANT_LINEAR_CLASSES: dict[str, type[QuantLinear]] = {"fp8": Fp8Linear, "int8": Int8Linear}
