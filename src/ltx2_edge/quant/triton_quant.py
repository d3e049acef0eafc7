"""Per-token activation quantization as one Triton kernel per call (CUDA only).

The eager version (``kernels.quantize_rows``) runs ~6 kernels and reads the activations several times; at W1's
shapes on the H100 that costs 0.25 ms per 3744x4096 Linear input, half of what the FP8 GEMM itself takes, and
turned FP8 into a slowdown. This kernel reads each row twice from L2/HBM (amax, then scale and cast) and
writes the 8-bit row and its fp32 scale, with the same numerics as ``quantize_rows``: scale = amax / QMAX
(1 for an all-zero row), q = clamp(x / scale, +-QMAX) cast to e4m3 (round to nearest even) or, for INT8,
rounded half away from zero (``quantize_rows`` rounds half to even; the two differ only on exact .5 ties).
Importing this module never fails: ``available()`` says whether Triton and a CUDA device are there.
"""

# ruff: noqa: ANN001  (Triton kernel arguments are typed by its JIT, not by annotations)
from __future__ import annotations

import functools

import torch

try:  # Triton ships with CUDA builds of torch; CPU machines (and CI) have none.
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - exercised on machines without Triton
    triton = None
    tl = None

_TINY = float(torch.finfo(torch.float32).tiny)


@functools.cache
def available() -> bool:
    """True when the fused kernel can run: Triton imports and CUDA is present."""
    return triton is not None and torch.cuda.is_available()


if triton is not None:

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
        m = tl.max(amax, axis=0)
        scale = tl.where(m > 0, m / QMAX, 1.0)
        scale = tl.maximum(scale, 1.1754943508222875e-38)
        tl.store(s_ptr + row, scale)
        for start in range(0, K, BLOCK):
            offs = start + tl.arange(0, BLOCK)
            x = tl.load(x_row + offs, mask=offs < K, other=0.0).to(tl.float32)
            y = tl.minimum(tl.maximum(x / scale, -QMAX), QMAX)
            if ROUND:
                y = tl.where(y >= 0, tl.floor(y + 0.5), tl.ceil(y - 0.5))
            tl.store(q_row + offs, y.to(q_ptr.dtype.element_ty), mask=offs < K)


def quantize_rows_fused(x: torch.Tensor, precision: str) -> tuple[torch.Tensor, torch.Tensor]:
    """``(q [M, K], scale [M, 1] fp32)`` for a 2-D CUDA ``x``, as ``kernels.quantize_rows`` computes them."""
    if not available():
        raise RuntimeError("the fused quantization kernel needs Triton and a CUDA device")
    x = x.contiguous()
    m, k = x.shape
    qdtype = torch.float8_e4m3fn if precision == "fp8" else torch.int8
    q = torch.empty((m, k), dtype=qdtype, device=x.device)
    scale = torch.empty((m, 1), dtype=torch.float32, device=x.device)
    if m:
        block = min(4096, triton.next_power_of_2(k))
        _rowwise_quant[(m,)](x, q, scale, k, x.stride(0), q.stride(0), QMAX=448.0 if precision == "fp8" else 127.0,
                             ROUND=precision == "int8", BLOCK=block, num_warps=8 if block >= 2048 else 4)  # fmt: skip
    return q, scale
