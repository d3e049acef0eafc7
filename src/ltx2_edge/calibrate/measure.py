"""Timed kernels at the model's shapes: GEMMs (bf16, fp8 rowwise, int8), attention (SDPA), the VAE's conv3d.

Timing rules, for every figure: one untimed call first (it pays for kernel selection, cuBLAS/cuDNN workspaces and
lazy loading), then ``reps`` timed samples of ``inner`` back-to-back calls (``inner`` sized so a sample lasts
``target_s``: launch overhead is not what is measured); the device is synchronised before a timer is read, on
both sides of each sample; the figure is the median sample. A rate over several shapes is FLOP-weighted:
total FLOPs over the total of each shape's median time, as the planner's compute floor adds them up.

The kernels are the ones a run executes: ``quant.kernels``' chosen GEMM for fp8/int8 (``torch._scaled_mm`` with
per-row scales and fast accumulation, ``torch._int_mm`` with its fp32 epilogue; the simulated kernels on a CPU),
``torch.mm`` in the run's dtype (bf16 on GPUs, float32 on CPUs) for bf16 layers, SDPA with the fastest of the
backends ``accel.attention`` offers. This module measures and returns numbers; it never writes a file and never
changes a global setting it does not restore.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch.nn.attention import sdpa_kernel

from ltx2_edge.accel.attention import CANDIDATES, step_shapes
from ltx2_edge.calibrate.shapes import W1_BATCH, Conv, Gemm
from ltx2_edge.plan.activations import TokenCounts
from ltx2_edge.quant.kernels import KERNELS, choose_kernel, quantize_rows


@dataclass
class Measurement:
    """One profile rate as measured: ``value`` in the profile's unit (None: not measured, ``how`` says why; or a
    value standing in for one that could not be measured, with ``kind`` "not measured")."""

    field: str
    value: float | None
    how: str
    samples: list[float] = field(default_factory=list)
    detail: dict[str, Any] = field(default_factory=dict)
    kind: str = "measured"


@dataclass(frozen=True)
class Timing:
    """How long samples last and how many: ``reps`` medians of ``target_s`` each."""

    reps: int
    target_s: float


def synchronizer(device: torch.device) -> Callable[[], None]:
    """What waits for ``device``'s queued work (nothing on a CPU: its calls return when done)."""
    if device.type == "cuda":
        return lambda: torch.cuda.synchronize(device)
    return lambda: None


def median_seconds(fn: Callable[[], object], device: torch.device, timing: Timing) -> tuple[float, list[float]]:
    """Median seconds of one ``fn()`` call and every sample (seconds per call), by the module's timing rules."""
    sync = synchronizer(device)
    fn()  # untimed: kernel selection, workspaces, lazy module loading
    sync()
    start = time.perf_counter()
    fn()
    sync()
    once = max(time.perf_counter() - start, 1e-7)
    inner = max(1, min(10_000, math.ceil(timing.target_s / once)))
    samples = []
    for _ in range(timing.reps):
        sync()  # the previous sample's work must not run inside this one's timer
        start = time.perf_counter()
        for _ in range(inner):
            fn()
        sync()  # the timer stops when the device has finished, not when the launches have
        samples.append((time.perf_counter() - start) / inner)
    return statistics.median(samples), samples


def _weighted(field_name: str, per_shape: list[tuple[str, float, float, list[float]]], unit: float, how: str,
              ) -> Measurement:  # fmt: skip
    """(label, flops, median seconds, samples) per shape -> the FLOP-weighted rate in ``unit`` (1e12: T...)."""
    flops = sum(f for _, f, _, _ in per_shape)
    seconds = sum(s for _, _, s, _ in per_shape)
    detail = {label: {"tflops": round(f / s / 1e12, 3), "seconds": s} for label, f, s, _ in per_shape}
    samples = [flops / sum(x) / unit for x in zip(*(s for *_, s in per_shape), strict=True)]
    return Measurement(field_name, flops / seconds / unit, how, samples, {"shapes": detail})


def _label(g: Gemm) -> str:
    return f"{g.m}x{g.k}x{g.n} x{g.count}"


def gemm_rate(shapes: list[Gemm], precision: str, device: torch.device, dtype: torch.dtype, timing: Timing,
              ) -> Measurement:  # fmt: skip
    """The rate of ``precision`` Linears (bf16, fp8, int8) over ``shapes`` (8-bit: the quantized ones only)."""
    field_name = {"bf16": "bf16_tflops", "fp8": "fp8_rowwise_tflops", "int8": "int8_tops"}[precision]
    todo = shapes if precision == "bf16" else [g for g in shapes if g.quantized]
    gen = torch.Generator(device=device).manual_seed(0)
    per_shape, kernels = [], set()
    for g in todo:
        x = torch.randn(g.m, g.k, device=device, dtype=dtype, generator=gen)
        w = torch.randn(g.n, g.k, device=device, dtype=dtype, generator=gen)
        if precision == "bf16":
            kernels.add(f"torch.mm in {str(dtype).removeprefix('torch.')}")

            def fn(x: torch.Tensor = x, w: torch.Tensor = w) -> torch.Tensor:
                return torch.mm(x, w.t())
        else:
            name, _ = choose_kernel(precision, device.type, g.k, g.n)
            gemm = KERNELS[name].gemm
            if gemm is None:  # the default kernels of both precisions quantize activations per token
                raise RuntimeError(f"kernel {name} has no GEMM after per-token quantization to time")
            kernels.add(name)
            (xq, xs), (wq, ws) = quantize_rows(x, precision), quantize_rows(w, precision)

            def fn(xq: torch.Tensor = xq, xs: torch.Tensor = xs, wq: torch.Tensor = wq, ws: torch.Tensor = ws,
                   gemm: Any = gemm) -> torch.Tensor:  # fmt: skip
                return gemm(xq, xs, wq, ws.view(-1), None, dtype)

        seconds, samples = median_seconds(fn, device, timing)
        per_shape.append((_label(g), g.flops, seconds * g.count, [s * g.count for s in samples]))
        del x, w
    how = (f"median of {timing.reps}, FLOP-weighted over one block's {len(todo)} {precision} GEMM shapes at W1 "
           f"(CFG batch {W1_BATCH}); kernel {', '.join(sorted(kernels))}")  # fmt: skip
    return _weighted(field_name, per_shape, 1e12, how)


def attention_rate(config: dict, tokens: TokenCounts, device: torch.device, dtype: torch.dtype, timing: Timing,
                   ) -> Measurement:  # fmt: skip
    """SDPA over one block's attention calls at W1 (self, text and A/V cross), the fastest backend's rate."""
    shapes = step_shapes(config, W1_BATCH, tokens.video, tokens.audio, tokens.text)
    gen = torch.Generator(device=device).manual_seed(0)
    qkv = [tuple(torch.randn(b, h, n, d, device=device, dtype=dtype, generator=gen) for n in (q, k, k))
           for b, h, q, k, d in shapes]  # fmt: skip
    flops = sum(4.0 * b * h * q * k * d for b, h, q, k, d in shapes)

    def all_calls() -> None:
        for q, k, v in qkv:
            F.scaled_dot_product_attention(q, k, v)

    results: dict[str, Any] = {}
    backends = CANDIDATES if device.type == "cuda" else {"default": None}
    for name, backend in backends.items():
        try:
            with sdpa_kernel([backend]) if backend is not None else nullcontext():
                seconds, samples = median_seconds(all_calls, device, timing)
            results[name] = (seconds, samples)
        except RuntimeError as exc:  # a backend that cannot take these shapes is recorded, not chosen
            results[name] = f"unavailable: {str(exc).splitlines()[0][:120]}"
    timed = {k: v for k, v in results.items() if isinstance(v, tuple)}
    detail = {k: (round(flops / v[0] / 1e12, 2) if isinstance(v, tuple) else v) for k, v in results.items()}
    if not timed:
        return Measurement("attention_tflops", None, "no SDPA backend ran these shapes", detail={"backends": detail})
    best = min(timed, key=lambda k: timed[k][0])
    seconds, samples = timed[best]
    how = (f"median of {timing.reps}: SDPA over one block's {len(shapes)} attention calls at W1 (CFG batch "
           f"{W1_BATCH}), {best} backend (the fastest, as runs pin it)")  # fmt: skip
    return Measurement("attention_tflops", flops / seconds / 1e12, how, [flops / s / 1e12 for s in samples],
                       {"backends": detail})  # fmt: skip


def conv_rate(shapes: list[Conv], device: torch.device, dtype: torch.dtype, timing: Timing, max_frames: int,
              ) -> Measurement:  # fmt: skip
    """The video decoder's 3x3x3 conv3d rate at W1: each level timed on at most ``max_frames`` frames (the time
    scales with frames), FLOP-weighted over the whole decode."""
    gen = torch.Generator(device=device).manual_seed(0)
    per_shape = []
    for c in shapes:
        frames = min(c.frames, max_frames)
        x = torch.randn(1, c.c_in, frames, c.height, c.width, device=device, dtype=dtype, generator=gen)
        w = torch.randn(c.c_out, c.c_in, 3, 3, 3, device=device, dtype=dtype, generator=gen)

        def fn(x: torch.Tensor = x, w: torch.Tensor = w) -> torch.Tensor:
            return F.conv3d(x, w, padding=1)

        seconds, samples = median_seconds(fn, device, timing)
        scale = c.count * c.frames / frames
        label = f"{c.c_in}->{c.c_out} at {c.frames}x{c.height}x{c.width} x{c.count}"
        per_shape.append((label, c.flops, seconds * scale, [s * scale for s in samples]))
        del x, w
    how = (f"median of {timing.reps}: F.conv3d 3x3x3 in {str(dtype).removeprefix('torch.')} at the video decoder's "
           f"{len(shapes)} level shapes for W1 (timed on <= {max_frames} frames), FLOP-weighted")  # fmt: skip
    return _weighted("conv_tflops", per_shape, 1e12, how)
