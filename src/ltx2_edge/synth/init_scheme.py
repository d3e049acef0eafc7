"""How a generated checkpoint's random weights are drawn: per-role rules and a counter-based random stream.

Rules (role -> distribution) follow how torch initialises each layer type; see ``layout.ROLES`` and
docs/checkpoint-generator.md for why the activations stay finite and inside FP8 e4m3 range.

Values are a pure function of (seed, tensor name, element index): each element's bits come from a 32-bit
integer hash (two rounds of Wellons' ``lowbias32``, keyed from SHA-256 of seed and name) evaluated with exact
int64 tensor ops. So a tensor does not depend on generation order, chunking or thread count, and uniform
tensors are bit-identical on CPU and CUDA (the float maths is a single IEEE multiply). Normal tensors go
through float64 ``log``/``cos`` (Box-Muller); after rounding to bf16 they match across devices unless a
libm differs by one ulp exactly at a bf16 rounding boundary.
This module never writes files and never holds more than one chunk of a tensor unless asked to.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterator
from dataclasses import dataclass

import torch

Shape = tuple[int, ...]
CHUNK_ELEMENTS = 1 << 22  # elements generated at once: 2 x 32 MiB of int64 scratch
_MASK32 = 0xFFFFFFFF
_MAX_ELEMENTS = 1 << 32  # the element index is hashed as a 32-bit integer


@dataclass(frozen=True)
class InitRule:
    """One tensor's distribution: ``uniform`` on [a, b), ``normal`` with mean a and std b, or ``constant`` a."""

    kind: str
    a: float
    b: float = 0.0


def _fan_in(shape: Shape) -> int:
    # torch.nn.init._calculate_fan_in_and_fan_out: dim 1 times the receptive field (ConvTranspose included).
    return shape[1] * math.prod(shape[2:])


def _kaiming(fan_in: int) -> InitRule:
    # kaiming_uniform_(a=sqrt(5)) as nn.Linear/nn.ConvNd.reset_parameters does: bound = 1/sqrt(fan_in).
    bound = 1.0 / math.sqrt(fan_in) if fan_in > 0 else 0.0
    return InitRule("uniform", -bound, bound)


def init_rule(name: str, layout: dict[str, tuple[Shape, str]]) -> InitRule:
    """The rule for tensor ``name`` of ``layout`` (``layout.expected_tensors`` or ``layout.gemma_layout``)."""
    shape, role = layout[name]
    if role == "weight":
        return _kaiming(_fan_in(shape))
    if role == "bias":
        weight = name.rpartition(".")[0] + ".weight"
        if weight not in layout:
            raise ValueError(f"bias {name} has no sibling {weight} to take its fan-in from")
        return _kaiming(_fan_in(layout[weight][0]))
    if role == "matmul_weight":
        return _kaiming(shape[0])
    if role in ("norm_weight", "latent_std"):
        return InitRule("constant", 1.0)
    if role in ("norm_bias", "gemma_norm_weight", "latent_mean"):
        return InitRule("constant", 0.0)
    if role == "embedding":
        return InitRule("normal", 0.0, 0.02)
    if role == "scale_shift_table":
        return InitRule("normal", 0.0, 1.0 / math.sqrt(shape[-1]))
    if role == "learnable_registers":
        return InitRule("uniform", -1.0, 1.0)
    raise ValueError(f"{name}: role {role!r} has no init rule; known roles are listed in layout.ROLES")


def _stream_keys(seed: int, name: str, stream: int) -> tuple[int, int]:
    digest = hashlib.sha256(f"ltx2-edge/{seed}/{name}/{stream}".encode()).digest()
    return int.from_bytes(digest[:4], "little"), int.from_bytes(digest[4:8], "little")


def _mul32_(x: torch.Tensor, c: int, tmp: torch.Tensor) -> None:
    # x * c mod 2**32 with x < 2**32, split in 16-bit halves so no int64 product can overflow.
    torch.mul(x, c >> 16, out=tmp)
    tmp.bitwise_and_(0xFFFF).bitwise_left_shift_(16)
    x.mul_(c & 0xFFFF).add_(tmp).bitwise_and_(_MASK32)


def _xorshift_(x: torch.Tensor, s: int, tmp: torch.Tensor) -> None:
    torch.bitwise_right_shift(x, s, out=tmp)
    x.bitwise_xor_(tmp)


def _lowbias32_(x: torch.Tensor, tmp: torch.Tensor) -> None:
    _xorshift_(x, 16, tmp)
    _mul32_(x, 0x7FEB352D, tmp)
    _xorshift_(x, 15, tmp)
    _mul32_(x, 0x846CA68B, tmp)
    _xorshift_(x, 16, tmp)


def uniform01(seed: int, name: str, stream: int, start: int, count: int, device: str | torch.device) -> torch.Tensor:
    """Float32 values in (0, 1) (24 random bits each) for elements [start, start + count) of a named stream."""
    if start + count > _MAX_ELEMENTS:
        raise ValueError(f"{name}: {start + count} elements exceed the generator's 2**32 per tensor")
    k1, k2 = _stream_keys(seed, name, stream)
    x = torch.arange(start, start + count, dtype=torch.int64, device=device)
    tmp = torch.empty_like(x)
    x.bitwise_xor_(k1)
    _lowbias32_(x, tmp)
    x.bitwise_xor_(k2)
    _lowbias32_(x, tmp)
    del tmp
    # Top 24 bits, centred in their bin: exact in float32, never 0 or 1 (Box-Muller takes a log).
    return x.bitwise_right_shift_(8).to(torch.float32).add_(0.5).mul_(2.0**-24)


def _values(seed: int, name: str, rule: InitRule, start: int, count: int, device: str | torch.device) -> torch.Tensor:
    if rule.kind == "constant":
        return torch.full((count,), rule.a, dtype=torch.float32, device=device)
    if rule.kind == "uniform":
        u = uniform01(seed, name, 0, start, count, device)
        half, mid = (rule.b - rule.a) / 2, (rule.b + rule.a) / 2
        # 2u - 1 is exact in float32, so the result has a single rounding: the same bits on every device.
        return u.mul_(2.0).sub_(1.0).mul_(half).add_(mid)
    if rule.kind == "normal":
        u1 = uniform01(seed, name, 0, start, count, device).double()
        u2 = uniform01(seed, name, 1, start, count, device).double()
        z = u1.log_().mul_(-2.0).sqrt_().mul_(u2.mul_(2.0 * math.pi).cos_())
        return z.mul_(rule.b).add_(rule.a).float()
    raise ValueError(f"{name}: unknown init kind {rule.kind!r}")


def tensor_chunks(
    name: str,
    shape: Shape,
    rule: InitRule,
    *,
    seed: int,
    dtype: torch.dtype = torch.bfloat16,
    device: str | torch.device = "cpu",
    chunk_elements: int = CHUNK_ELEMENTS,
) -> Iterator[torch.Tensor]:
    """The tensor's values in row-major order, as flat ``dtype`` chunks on ``device`` of ``chunk_elements``."""
    total = math.prod(shape)
    for start in range(0, total, chunk_elements):
        count = min(chunk_elements, total - start)
        yield _values(seed, name, rule, start, count, device).to(dtype)


def make_tensor(
    name: str,
    layout: dict[str, tuple[Shape, str]],
    *,
    seed: int,
    dtype: torch.dtype = torch.bfloat16,
    device: str | torch.device = "cpu",
) -> torch.Tensor:
    """Tensor ``name`` of ``layout`` whole, exactly as the generator writes it (for tests and studies)."""
    shape, _ = layout[name]
    out = torch.empty(math.prod(shape), dtype=dtype, device=device)
    start = 0
    for chunk in tensor_chunks(name, shape, init_rule(name, layout), seed=seed, dtype=dtype, device=device):
        out[start : start + chunk.numel()] = chunk
        start += chunk.numel()
    return out.reshape(shape)
