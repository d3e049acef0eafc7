"""8-bit numerics and the matmul kernels behind ``Fp8Linear``/``Int8Linear``, with a registry to pick one per device.

Numerics, shared by on-the-fly quantization, checkpoint conversion and every kernel (so they agree bit for bit):
symmetric and per row. ``scale = amax(|row|) / QMAX`` (448 for FP8 e4m3, 127 for INT8); an all-zero row gets
scale 1. ``q = row / scale`` in fp32, clamped to +-QMAX, then cast (FP8: round-to-nearest-even) or rounded half
to even (INT8). Weights ``[N, K]`` are quantized per output channel, activations ``[M, K]`` per token, at
every call (dynamic), so no calibration is needed.

Every kernel maps ``(x [M, K], weight [N, K] int8/float8, weight_scale [N] fp32, bias [N] | None)`` to
``[M, N]`` in x's dtype. ``*_simulated`` kernels are the CPU reference: they compute exactly the arithmetic of
the GPU kernel of the same precision (same quantized activations, products exact, fp32/exact accumulation,
same fp32 epilogue), so CPU tests check what the GPU runs. ``DEFAULT_KERNELS`` is the per-device choice; it is
set from measurements (bench/quant_kernels.py), not guessed at run time. A kernel that quantizes activations
per token also names its ``gemm``, the part after the quantization, so a caller holding activations quantized
another way (``gelu_quant_rows``: the feed-forward's GELU fused into it) runs the same GEMM and epilogue.

This module imports nothing but torch (the benchmark runs it on a bare GPU box) and never changes the
precision it was asked for: a kernel that cannot run a shape is replaced only by the simulated kernel of the
same precision, and ``choose_kernel`` says why.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ltx2_edge.quant import triton_quant

QMAX: dict[str, float] = {"fp8": 448.0, "int8": 127.0}
QDTYPE: dict[str, torch.dtype] = {"fp8": torch.float8_e4m3fn, "int8": torch.int8}
_WEIGHT_CHUNK_ELEMS = 1 << 24  # fp32 temporaries while quantizing a weight stay <= 64 MiB
_INT_MM_MIN_ROWS = 17  # cuBLASLt's int8 path (torch._int_mm) needs M > 16


def quantize_rows(x: torch.Tensor, precision: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Quantize each row of 2-D ``x``: returns ``(q [M, K] int8/float8, scale [M, 1] fp32)`` with x ~ q * scale."""
    qmax = QMAX[precision]
    amax = x.abs().amax(dim=-1, keepdim=True).float()
    # A zero row would give scale 0 and 0/0 = NaN; scale 1 quantizes it to exact zeros instead.
    scale = torch.where(amax > 0, amax / qmax, 1.0).clamp_min(torch.finfo(torch.float32).tiny)
    scaled = (x.float() / scale).clamp_(-qmax, qmax)
    if precision == "int8":
        scaled = scaled.round_()
    return scaled.to(QDTYPE[precision]), scale


def gelu_tanh(h: torch.Tensor) -> torch.Tensor:
    """tanh-GELU as ``triton_quant._gelu_rowwise_quant`` computes it: fp32, x / (1 + exp(-2u)), rounded to h's dtype.

    The same function as ``F.gelu(h, approximate="tanh")`` (0.5 x (1 + tanh(u))); for bf16 ``h`` the two differ
    only where x < -2.9, on values below 0.004 in magnitude (eager's 1 + tanh(u) cancels there; this does not),
    too small to move an INT8 code; fp32 results differ by < 1e-6.
    """
    x = h.float()
    return (x / (1.0 + torch.exp(-(x * (triton_quant.GELU_2C + triton_quant.GELU_2CK * x * x))))).to(h.dtype)


def gelu_quantize_rows(h: torch.Tensor, precision: str) -> tuple[torch.Tensor, torch.Tensor]:
    """``quantize_rows(gelu_tanh(h), precision)``: the torch reference of the fused GELU + quantization kernel."""
    return quantize_rows(gelu_tanh(h), precision)


@torch.library.custom_op("ltx2_edge::gelu_quant_rows", mutates_args=())
def gelu_quant_rows(h: torch.Tensor, precision: str) -> tuple[torch.Tensor, torch.Tensor]:
    """``gelu_quantize_rows`` as one op: ``(q [M, K] int8/float8, scale [M, 1] fp32)`` for a 2-D pre-activation.

    CUDA runs the Triton kernel (``triton_quant.gelu_quantize_rows_fused``), CPU the torch reference. An op, not
    a function, so Dynamo/Inductor keep it whole (an extern kernel in the compiled graph, captured by CUDA graphs)
    instead of tracing into Triton or re-fusing the GELU their own way.
    """
    return triton_quant.gelu_quantize_rows_fused(h, precision)


@gelu_quant_rows.register_kernel("cpu")
def _gelu_quant_rows_cpu(h: torch.Tensor, precision: str) -> tuple[torch.Tensor, torch.Tensor]:
    return gelu_quantize_rows(h, precision)


@gelu_quant_rows.register_fake
def _gelu_quant_rows_fake(h: torch.Tensor, precision: str) -> tuple[torch.Tensor, torch.Tensor]:
    if precision not in QDTYPE:
        raise ValueError(f"precision={precision!r} is not allowed: one of {', '.join(QDTYPE)}")
    if h.dim() != 2:
        raise ValueError(f"activations must be 2-D [tokens, features], got shape {list(h.shape)}")
    return h.new_empty(h.shape, dtype=QDTYPE[precision]), h.new_empty((h.shape[0], 1), dtype=torch.float32)


def quantize_weight(weight: torch.Tensor, precision: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Quantize a ``[N, K]`` weight per output channel: ``(q [N, K], scale [N] fp32)``, on the weight's device.

    Works through row chunks so the fp32 temporaries stay small next to one layer. Raises ``ValueError`` if
    the weight holds inf or NaN (its scale would not be finite).
    """
    if weight.dim() != 2:
        raise ValueError(f"weight must be 2-D [out_features, in_features], got shape {tuple(weight.shape)}")
    n, k = weight.shape
    q = torch.empty((n, k), dtype=QDTYPE[precision], device=weight.device)
    scale = torch.empty(n, dtype=torch.float32, device=weight.device)
    rows = max(1, _WEIGHT_CHUNK_ELEMS // max(k, 1))
    for start in range(0, n, rows):
        q_part, s_part = quantize_rows(weight[start : start + rows], precision)
        q[start : start + rows] = q_part
        scale[start : start + rows] = s_part.squeeze(1)
    bad = int((~torch.isfinite(scale)).sum())
    if bad:
        raise ValueError(f"weight has inf or NaN values in {bad} of {n} rows: the checkpoint is damaged")
    return q, scale


def dequantize_weight(q: torch.Tensor, scale: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """``q * scale`` per row, computed in fp32 and returned in ``dtype``."""
    return (q.float() * scale.float().unsqueeze(1)).to(dtype)


def _epilogue(
    acc: torch.Tensor, x_scale: torch.Tensor, w_scale: torch.Tensor, bias: torch.Tensor | None, out_dtype: torch.dtype
) -> torch.Tensor:
    # acc is a fresh fp32 [M, N] owned by the caller: scale in place, in fp32, as the GPU epilogue does.
    y = acc.mul_(x_scale).mul_(w_scale)
    if bias is not None:
        y = y.add_(bias)
    return y.to(out_dtype)


def _fp8_gemm(
    xq: torch.Tensor, xs: torch.Tensor, weight: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor | None,
    out_dtype: torch.dtype, fast_accum: bool = False,
) -> torch.Tensor:  # fmt: skip
    # Row-wise scaling in _scaled_mm produces bf16 only; a bf16 bias is fused into its epilogue.
    fuse_bias = bias is not None and bias.dtype == torch.bfloat16
    y = torch._scaled_mm(
        xq,
        weight.t(),  # [N, K] row-major viewed as [K, N] column-major: the layout cuBLASLt wants for mat2
        scale_a=xs,
        scale_b=scale.view(1, -1),
        bias=bias if fuse_bias else None,
        out_dtype=torch.bfloat16,
        use_fast_accum=fast_accum,
    )
    if bias is not None and not fuse_bias:
        y = y.float().add_(bias)
    return y.to(out_dtype)


_fp8_gemm_fast = functools.partial(_fp8_gemm, fast_accum=True)


def _fp8_gemm_simulated(
    xq: torch.Tensor, xs: torch.Tensor, weight: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor | None,
    out_dtype: torch.dtype,
) -> torch.Tensor:  # fmt: skip
    return _epilogue(xq.float() @ weight.float().t(), xs, scale, bias, out_dtype)


def _int8_gemm(
    xq: torch.Tensor, xs: torch.Tensor, weight: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor | None,
    out_dtype: torch.dtype,
) -> torch.Tensor:  # fmt: skip
    m = xq.shape[0]
    if xq.is_cuda and m < _INT_MM_MIN_ROWS:
        # Zero rows pad M past cuBLASLt's limit; they cost nothing at these sizes and are sliced away.
        xq = torch.cat([xq, xq.new_zeros(32 - m, xq.shape[1])])
    acc = torch._int_mm(xq, weight.t())[:m]
    return _epilogue(acc.float(), xs, scale, bias, out_dtype)


def _int8_gemm_simulated(
    xq: torch.Tensor, xs: torch.Tensor, weight: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor | None,
    out_dtype: torch.dtype,
) -> torch.Tensor:  # fmt: skip
    # fp64 sums of int8 products are exact (|sum| < 2^53), so this equals _int_mm's int32 accumulator.
    acc = (xq.double() @ weight.double().t()).float()
    return _epilogue(acc, xs, scale, bias, out_dtype)


def fp8_rowwise(x: torch.Tensor, weight: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """FP8 tensor cores: per-token FP8 activations x per-channel FP8 weights via ``torch._scaled_mm``."""
    return _fp8_gemm(*quantize_rows(x, "fp8"), weight, scale, bias, x.dtype)


def fp8_rowwise_fused(
    x: torch.Tensor, weight: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor | None
) -> torch.Tensor:
    """``fp8_rowwise`` with the activation quantization fused into one Triton kernel and fast accumulation.

    Fast accumulation keeps the FP8 tensor cores' own accumulator between K blocks (measured on the H100 at W1
    shapes: 1.25x the GEMM rate, same SNR against fp32 to 0.01 dB).
    """
    return _fp8_gemm_fast(*triton_quant.quantize_rows_fused(x, "fp8"), weight, scale, bias, x.dtype)


def fp8_rowwise_fast(
    x: torch.Tensor, weight: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor | None
) -> torch.Tensor:
    """``fp8_rowwise`` with fast accumulation: the form ``torch.compile`` gets (it fuses the eager quantization
    into the op that produced ``x``, which the hand-written Triton kernel cannot)."""
    return _fp8_gemm_fast(*quantize_rows(x, "fp8"), weight, scale, bias, x.dtype)


def fp8_simulated(
    x: torch.Tensor, weight: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor | None
) -> torch.Tensor:
    """CPU reference of ``fp8_rowwise``: the same FP8 activations, products exact in fp32, fp32 accumulation."""
    return _fp8_gemm_simulated(*quantize_rows(x, "fp8"), weight, scale, bias, x.dtype)


def int8_int_mm(x: torch.Tensor, weight: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """INT8 tensor cores: per-token INT8 activations x per-channel INT8 weights via ``torch._int_mm`` (int32 acc)."""
    return _int8_gemm(*quantize_rows(x, "int8"), weight, scale, bias, x.dtype)


def int8_int_mm_fused(
    x: torch.Tensor, weight: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor | None
) -> torch.Tensor:
    """``int8_int_mm`` with the activation quantization fused into one Triton kernel."""
    return _int8_gemm(*triton_quant.quantize_rows_fused(x, "int8"), weight, scale, bias, x.dtype)


def int8_simulated(
    x: torch.Tensor, weight: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor | None
) -> torch.Tensor:
    """CPU reference of ``int8_int_mm``: fp64 sums of int8 products are exact, so the result is bit-identical."""
    return _int8_gemm_simulated(*quantize_rows(x, "int8"), weight, scale, bias, x.dtype)


def _weight_only(x: torch.Tensor, weight: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    # int8 (|q| <= 127) and e4m3 values are exact in bf16/fp16/fp32, so only the per-channel scale is left,
    # applied to the output in fp32 (a bf16 scale would bias a whole channel by up to 0.2%).
    y = F.linear(x, weight.to(x.dtype)).float().mul_(scale)
    if bias is not None:
        y = y.add_(bias)
    return y.to(x.dtype)


def int8_weight_only(
    x: torch.Tensor, weight: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor | None
) -> torch.Tensor:
    """INT8 weights, activations in their own dtype: weight cast to x's dtype, a dense matmul, scales on the output."""
    return _weight_only(x, weight, scale, bias)


def fp8_weight_only(
    x: torch.Tensor, weight: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor | None
) -> torch.Tensor:
    """FP8 weights on a GPU without FP8 tensor cores: weight cast to x's dtype, a dense matmul, scales on the output."""
    return _weight_only(x, weight, scale, bias)


def _needs_multiple(multiple: int) -> Callable[[str, int, int], str | None]:
    def check(device_type: str, in_features: int, out_features: int) -> str | None:
        if device_type == "cuda" and (in_features % multiple or out_features % multiple):
            return f"in_features={in_features} and out_features={out_features} must be multiples of {multiple}"
        return None

    return check


def _always(_device_type: str, _in_features: int, _out_features: int) -> str | None:
    return None


def _fused(multiple: int) -> Callable[[str, int, int], str | None]:
    shape_check = _needs_multiple(multiple)

    def check(device_type: str, in_features: int, out_features: int) -> str | None:
        if device_type != "cuda" or not triton_quant.available():
            return "needs Triton and a CUDA device"
        return shape_check(device_type, in_features, out_features)

    return check


QuantizedGemm = Callable[..., torch.Tensor]  # (xq, xs, weight, weight_scale, bias, out_dtype) -> [M, N]


@dataclass(frozen=True)
class Kernel:
    """A registered matmul kernel: ``fn(x2d, weight, weight_scale, bias)``; ``unsupported`` gives a reason or None.

    ``gemm`` is what ``fn`` runs after quantizing the activations per token (None for weight-only kernels).
    """

    name: str
    precision: str
    fn: Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None], torch.Tensor]
    activations: str  # what the activations become: "fp8 per token", "int8 per token", "unchanged"
    unsupported: Callable[[str, int, int], str | None]
    gemm: QuantizedGemm | None = None


KERNELS: dict[str, Kernel] = {
    k.name: k
    for k in (
        Kernel("fp8_rowwise_fused", "fp8", fp8_rowwise_fused, "fp8 per token", _fused(16), _fp8_gemm_fast),
        Kernel("fp8_rowwise", "fp8", fp8_rowwise, "fp8 per token", _needs_multiple(16), _fp8_gemm),
        Kernel("fp8_rowwise_fast", "fp8", fp8_rowwise_fast, "fp8 per token", _needs_multiple(16), _fp8_gemm_fast),
        Kernel("fp8_simulated", "fp8", fp8_simulated, "fp8 per token", _always, _fp8_gemm_simulated),
        Kernel("fp8_weight_only", "fp8", fp8_weight_only, "unchanged", _always),
        Kernel("int8_int_mm_fused", "int8", int8_int_mm_fused, "int8 per token", _fused(8), _int8_gemm),
        Kernel("int8_int_mm", "int8", int8_int_mm, "int8 per token", _needs_multiple(8), _int8_gemm),
        Kernel("int8_simulated", "int8", int8_simulated, "int8 per token", _always, _int8_gemm_simulated),
        Kernel("int8_weight_only", "int8", int8_weight_only, "unchanged", _always),
    )
}

# (device type, precision) -> kernels in order of preference; the first that can run a layer is used. Measured on
# the H100 at W1 shapes (bench/results/2026-11-23-quant): eager per-token quantization (6 kernels) cost 0.25 ms
# per 3744x4096 input against 0.47 ms for the FP8 GEMM, so the fused Triton quantization comes first and the
# eager one only where Triton is missing. Other device types run the simulated reference.
DEFAULT_KERNELS: dict[tuple[str, str], tuple[str, ...]] = {
    ("cuda", "fp8"): ("fp8_rowwise_fused", "fp8_rowwise"),
    ("cuda", "int8"): ("int8_int_mm_fused", "int8_int_mm"),
    ("cpu", "fp8"): ("fp8_simulated",),
    ("cpu", "int8"): ("int8_simulated",),
}
_SIMULATED = {"fp8": "fp8_simulated", "int8": "int8_simulated"}
# What a kernel becomes inside a torch.compile'd region: the same numerics with the activation quantization
# written in torch ops, so Inductor fuses it with the producer of x (a Triton kernel of our own is opaque to it).
COMPILED_VARIANT: dict[str, str] = {"fp8_rowwise_fused": "fp8_rowwise_fast", "int8_int_mm_fused": "int8_int_mm"}


def choose_kernel(
    precision: str, device_type: str, in_features: int, out_features: int, requested: str | None = None
) -> tuple[str, str]:
    """The kernel a ``precision`` layer of this shape runs on ``device_type``: ``(name, note)``.

    ``note`` is empty unless the device's default kernel cannot run the shape and the simulated kernel of the
    same precision (same numerics, slower) stands in; it then says why. A ``requested`` kernel is checked, never
    replaced: ``ValueError`` if it is unknown, of another precision, or cannot run the shape.
    """
    if requested is not None:
        kernel = KERNELS.get(requested)
        if kernel is None or kernel.precision != precision:
            allowed = ", ".join(k for k, v in KERNELS.items() if v.precision == precision)
            raise ValueError(f"kernel={requested!r} is not allowed for {precision} layers: one of {allowed}")
        reason = kernel.unsupported(device_type, in_features, out_features)
        if reason:
            raise ValueError(f"kernel={requested!r} cannot run this layer on {device_type}: {reason}")
        return requested, ""
    reasons = []
    for name in DEFAULT_KERNELS.get((device_type, precision), (_SIMULATED[precision],)):
        reason = KERNELS[name].unsupported(device_type, in_features, out_features)
        if reason is None:
            note = "; ".join(reasons)
            return name, (f"{note}: {name} runs instead" if note else "")
        reasons.append(f"{name} cannot run [{out_features}x{in_features}] on {device_type} ({reason})")
    fallback = _SIMULATED[precision]
    return fallback, "; ".join(reasons) + f": {fallback} runs instead"
