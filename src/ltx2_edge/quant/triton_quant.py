"""Per-token activation quantization as one Triton kernel per call (CUDA only), plain or behind a tanh-GELU.

The eager version (``kernels.quantize_rows``) runs ~6 kernels and reads the activations several times; at W1's
shapes on the H100 that costs 0.25 ms per 3744x4096 Linear input, half of what the FP8 GEMM itself takes, and
turned FP8 into a slowdown. ``_rowwise_quant`` reads each row twice from L2/HBM (amax, then scale and cast) and
writes the 8-bit row and its fp32 scale, with the same numerics as ``quantize_rows``: scale = amax / QMAX
(1 for an all-zero row), q = clamp(x / scale, +-QMAX) cast to e4m3 (round to nearest even) or, for INT8,
rounded half away from zero (``quantize_rows`` rounds half to even; the two differ only on exact .5 ties).

``_gelu_rowwise_quant`` is the feed-forward's hidden activation: it reads the pre-activation (the output of
ltx-core's ``GELUApprox.proj``), applies tanh-GELU in fp32, rounds it to the input's dtype (bf16) as eager's
GELU output is rounded before the quantization reads it, then quantizes as above; ``kernels.gelu_quantize_rows``
is its torch reference. Rows up to ``ONE_TILE_MAX`` wide (16384: the video FF) are held in registers whole
(32 values a thread at 16 warps), so HBM is read once and GELU computed once; wider rows loop over tiles
twice (amax, then quantize), recomputing GELU on a second read that mostly hits L2.

GELU is computed as x * sigmoid(2u) = x / (1 + exp(-2u)), u = sqrt(2/pi) (x + 0.044715 x^3): the same function
as 0.5 x (1 + tanh(u)), written with ``tl.exp`` because libdevice's tanh moves between Triton versions, and
without the cancellation in 1 + tanh(u) for x < -3 (eager's bf16 result there, below 0.004, may differ).
Importing this module never fails: ``available()`` says whether Triton and a CUDA device are there.
"""

# ruff: noqa: ANN001, ANN202  (Triton kernel arguments are typed by its JIT, not by annotations)
from __future__ import annotations

import functools
import math

import torch

try:  # Triton ships with CUDA builds of torch; CPU machines (and CI) have none.
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - exercised on machines without Triton
    triton = None
    tl = None

_TINY = float(torch.finfo(torch.float32).tiny)
# tanh-GELU's constants as x / (1 + exp(-x (GELU_2C + GELU_2CK x^2))); the torch reference uses these same floats.
GELU_2C = 2.0 * math.sqrt(2.0 / math.pi)
GELU_2CK = GELU_2C * 0.044715
ONE_TILE_MAX = 16384  # widest row held whole in registers (16 warps x 32 fp32 values)
_QMAX = {"fp8": 448.0, "int8": 127.0}
_QDTYPE = {"fp8": torch.float8_e4m3fn, "int8": torch.int8}


@functools.cache
def available() -> bool:
    """True when the fused kernel can run: Triton imports and CUDA is present."""
    return triton is not None and torch.cuda.is_available()


if triton is not None:
    _C2: tl.constexpr = tl.constexpr(GELU_2C)
    _C2K: tl.constexpr = tl.constexpr(GELU_2CK)

    @triton.jit
    def _row_scale(amax, QMAX: tl.constexpr):
        scale = tl.where(amax > 0, amax / QMAX, 1.0)
        return tl.maximum(scale, 1.1754943508222875e-38)

    @triton.jit
    def _quantized(x, scale, QMAX: tl.constexpr, ROUND: tl.constexpr):
        y = tl.minimum(tl.maximum(x / scale, -QMAX), QMAX)
        if ROUND:
            y = tl.where(y >= 0, tl.floor(y + 0.5), tl.ceil(y - 0.5))
        return y

    @triton.jit
    def _rowwise_quant(
        x_ptr, q_ptr, s_ptr, K, stride_x, stride_q, QMAX: tl.constexpr, ROUND: tl.constexpr, BLOCK: tl.constexpr
    ):
        row = tl.program_id(0)
        x_row = x_ptr + row.to(tl.int64) * stride_x
        q_row = q_ptr + row.to(tl.int64) * stride_q
        amax = tl.zeros([BLOCK], dtype=tl.float32)
        for start in range(0, K, BLOCK):
            offs = start + tl.arange(0, BLOCK)
            x = tl.load(x_row + offs, mask=offs < K, other=0.0).to(tl.float32)
            amax = tl.maximum(amax, tl.abs(x))
        scale = _row_scale(tl.max(amax, axis=0), QMAX)
        tl.store(s_ptr + row, scale)
        for start in range(0, K, BLOCK):
            offs = start + tl.arange(0, BLOCK)
            x = tl.load(x_row + offs, mask=offs < K, other=0.0).to(tl.float32)
            tl.store(q_row + offs, _quantized(x, scale, QMAX, ROUND).to(q_ptr.dtype.element_ty), mask=offs < K)

    @triton.jit
    def _gelu_tile(h_row, offs, K):
        h = tl.load(h_row + offs, mask=offs < K, other=0.0).to(tl.float32)  # gelu(0) = 0: masked lanes stay 0
        g = h / (1.0 + tl.exp(-(h * (_C2 + _C2K * h * h))))
        # Rounded to the input's dtype, as eager's GELU output is before the quantization reads it.
        return g.to(h_row.dtype.element_ty).to(tl.float32)

    @triton.jit
    def _gelu_rowwise_quant(
        h_ptr, q_ptr, s_ptr, K, stride_h, stride_q,
        QMAX: tl.constexpr, ROUND: tl.constexpr, BLOCK: tl.constexpr, ONE_TILE: tl.constexpr,
    ):  # fmt: skip
        row = tl.program_id(0)
        h_row = h_ptr + row.to(tl.int64) * stride_h
        q_row = q_ptr + row.to(tl.int64) * stride_q
        if ONE_TILE:  # BLOCK >= K: one read of the row, GELU once, values kept in registers
            offs = tl.arange(0, BLOCK)
            g = _gelu_tile(h_row, offs, K)
            scale = _row_scale(tl.max(tl.abs(g), axis=0), QMAX)
            tl.store(s_ptr + row, scale)
            tl.store(q_row + offs, _quantized(g, scale, QMAX, ROUND).to(q_ptr.dtype.element_ty), mask=offs < K)
        else:
            amax = tl.zeros([BLOCK], dtype=tl.float32)
            for start in range(0, K, BLOCK):
                amax = tl.maximum(amax, tl.abs(_gelu_tile(h_row, start + tl.arange(0, BLOCK), K)))
            scale = _row_scale(tl.max(amax, axis=0), QMAX)
            tl.store(s_ptr + row, scale)
            for start in range(0, K, BLOCK):
                offs = start + tl.arange(0, BLOCK)
                g = _gelu_tile(h_row, offs, K)
                tl.store(q_row + offs, _quantized(g, scale, QMAX, ROUND).to(q_ptr.dtype.element_ty), mask=offs < K)


def _outputs(x: torch.Tensor, precision: str) -> tuple[torch.Tensor, torch.Tensor]:
    if not available():
        raise RuntimeError("the fused quantization kernel needs Triton and a CUDA device")
    if precision not in _QMAX:
        raise ValueError(f"precision={precision!r} is not allowed: one of {', '.join(_QMAX)}")
    if x.dim() != 2:
        raise ValueError(f"activations must be 2-D [tokens, features], got shape {list(x.shape)}")
    m, k = x.shape
    q = torch.empty((m, k), dtype=_QDTYPE[precision], device=x.device)
    return q, torch.empty((m, 1), dtype=torch.float32, device=x.device)


def quantize_rows_fused(x: torch.Tensor, precision: str) -> tuple[torch.Tensor, torch.Tensor]:
    """``(q [M, K], scale [M, 1] fp32)`` for a 2-D CUDA ``x``, as ``kernels.quantize_rows`` computes them."""
    q, scale = _outputs(x, precision)
    x = x.contiguous()
    m, k = x.shape
    if m:
        block = min(4096, triton.next_power_of_2(k))
        _rowwise_quant[(m,)](x, q, scale, k, x.stride(0), q.stride(0), QMAX=_QMAX[precision],
                             ROUND=precision == "int8", BLOCK=block, num_warps=8 if block >= 2048 else 4)  # fmt: skip
    return q, scale


def gelu_quantize_rows_fused(h: torch.Tensor, precision: str) -> tuple[torch.Tensor, torch.Tensor]:
    """``quantize_rows(gelu_tanh(h))`` for a 2-D CUDA pre-activation ``h``: ``(q [M, K], scale [M, 1] fp32)``.

    GELU is computed in fp32 and rounded to ``h``'s dtype before the row's amax and scale (as eager rounds its
    bf16 GELU output), so this equals ``kernels.gelu_quantize_rows(h, precision)`` up to the last fp32 bit of
    ``exp`` and the division (a bf16 rounding flips rarely: see bench/fused_ff_check.py).
    """
    q, scale = _outputs(h, precision)
    h = h.contiguous()
    m, k = h.shape
    if m:
        width = triton.next_power_of_2(k)
        one_tile = width <= ONE_TILE_MAX
        block = width if one_tile else 4096
        warps = min(16, max(4, block // 1024))  # 32 values a thread at ONE_TILE_MAX, never fewer than 4 warps
        qmax, rnd = _QMAX[precision], precision == "int8"
        _gelu_rowwise_quant[(m,)](h, q, scale, k, h.stride(0), q.stride(0), QMAX=qmax, ROUND=rnd, BLOCK=block,
                                  ONE_TILE=one_tile, num_warps=warps)  # fmt: skip
    return q, scale
