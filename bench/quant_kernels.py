"""Times the 8-bit GEMM candidates at W1's shapes so DEFAULT_KERNELS in ltx2_edge/quant/kernels.py is measured.

Per shape (video: M = 2 x 1872 tokens, 4096->4096, 4096->16384, 16384->4096; audio: M = 2 x 100, 2048->2048,
2048->8192, 8192->2048) it times: bf16 ``F.linear``; the registry's kernels as the model runs them
(``fp8_rowwise`` and ``int8_int_mm`` include per-token activation quantization and the epilogue;
``*_weight_only``); and the bare GEMMs (rowwise FP8 with and without fast accumulation, tensorwise FP8,
``_int_mm``) plus activation quantization alone, so the cost of each part is visible. Each kernel's output is
compared with an fp32 reference (SNR in dB), and the Fp8Linear/Int8Linear modules are run once with bias
through the registry to check the fused-bias path on this GPU. A kernel that raises is recorded with its
error and the run goes on. TFLOP/s = 2*M*K*N / time. About 10 s of GPU time; ``--compile`` adds
torch.compile'd variants of the two W8A8 kernels (compilation takes minutes of CPU time, not GPU time).

Needs only torch and this repository:  PYTHONPATH=src python bench/quant_kernels.py bench/results/quant.json
CPU self-check (small shapes, no GPU):  PYTHONPATH=src python bench/quant_kernels.py /tmp/q.json --device cpu --small
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
from ltx2_edge.quant import kernels, triton_quant  # noqa: E402
from ltx2_edge.quant.linear import Fp8Linear, Int8Linear  # noqa: E402

SHAPES = [  # name, M, K, N
    ("video 4096->4096 (attn q/k/v/out)", 2 * 1872, 4096, 4096),
    ("video 4096->16384 (ff up)", 2 * 1872, 4096, 16384),
    ("video 16384->4096 (ff down)", 2 * 1872, 16384, 4096),
    ("audio 2048->2048 (attn q/k/v/out)", 2 * 100, 2048, 2048),
    ("audio 2048->8192 (ff up)", 2 * 100, 2048, 8192),
    ("audio 8192->2048 (ff down)", 2 * 100, 8192, 2048),
]


def _timer(device: torch.device, warmup: int, iters: int, repeats: int) -> Callable[[Callable[[], object]], float]:
    def measure(fn: Callable[[], object]) -> float:
        for _ in range(warmup):
            fn()
        samples = []
        for _ in range(repeats):
            if device.type == "cuda":
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                for _ in range(iters):
                    fn()
                end.record()
                end.synchronize()  # the events bracket GPU work only; reading before this would be a lie
                samples.append(start.elapsed_time(end) / 1e3 / iters)
            else:
                t = time.perf_counter()
                for _ in range(iters):
                    fn()
                samples.append((time.perf_counter() - t) / iters)
        return statistics.median(samples)

    return measure


def _snr_db(ref: torch.Tensor, y: torch.Tensor) -> float:
    ref, y = ref.double(), y.double()
    noise = (y - ref).pow(2).sum().item()
    return math.inf if noise == 0 else 10 * math.log10(ref.pow(2).sum().item() / noise)


def _same_quant(x: torch.Tensor, precision: str) -> torch.Tensor:
    """Fraction of elements where the fused and eager quantizations differ (0 expected, ties aside); scales too."""
    qf, sf = triton_quant.quantize_rows_fused(x, precision)
    qe, se = kernels.quantize_rows(x, precision)
    if not torch.equal(sf, se):
        raise AssertionError(f"{precision} scales differ: max |d| {float((sf - se).abs().max())}")
    return (qf.view(torch.uint8) != qe.view(torch.uint8)).float().mean()


def _candidates(x: torch.Tensor, w: torch.Tensor) -> dict[str, tuple[Callable[[], torch.Tensor], bool]]:
    """name -> (call, whether its output is comparable with x @ w.T)."""
    w_bf16 = w.to(torch.bfloat16)
    f8, s8 = kernels.quantize_weight(w, "fp8")
    i8, si = kernels.quantize_weight(w, "int8")
    xq8, xs8 = kernels.quantize_rows(x, "fp8")
    xqi, _ = kernels.quantize_rows(x, "int8")
    # Tensorwise: one scale for all of x and one for all of w (the fastest cuBLASLt path).
    w_t_scale = (w.abs().amax().float() / 448).reshape(())
    wt8 = (w.float() / w_t_scale).to(torch.float8_e4m3fn)
    x_t_scale = (x.abs().amax().float() / 448).reshape(())
    xt8 = (x.float() / x_t_scale).to(torch.float8_e4m3fn)

    def tensorwise_with_quant() -> torch.Tensor:
        s = (x.abs().amax().float() / 448).reshape(())
        q = (x.float() / s).to(torch.float8_e4m3fn)
        return torch._scaled_mm(q, wt8.t(), scale_a=s, scale_b=w_t_scale, out_dtype=torch.bfloat16)

    fused: dict[str, tuple[Callable[[], torch.Tensor], bool]] = {}
    if x.is_cuda and triton_quant.available():
        fused = {
            "fp8_rowwise_fused": (lambda: kernels.fp8_rowwise_fused(x, f8, s8, None), True),
            "fp8 act quant fused only": (lambda: triton_quant.quantize_rows_fused(x, "fp8")[0], False),
            "fp8 act quant fused == eager": (lambda: _same_quant(x, "fp8"), False),
            "int8_int_mm_fused": (lambda: kernels.int8_int_mm_fused(x, i8, si, None), True),
            "int8 act quant fused == eager": (lambda: _same_quant(x, "int8"), False),
        }
    return {
        **fused,
        "bf16": (lambda: F.linear(x, w_bf16), True),
        "fp8_rowwise": (lambda: kernels.fp8_rowwise(x, f8, s8, None), True),
        "fp8_rowwise gemm only": (
            lambda: torch._scaled_mm(xq8, f8.t(), scale_a=xs8, scale_b=s8.view(1, -1), out_dtype=torch.bfloat16),
            True,
        ),
        "fp8_rowwise gemm fast-accum": (
            lambda: torch._scaled_mm(
                xq8, f8.t(), scale_a=xs8, scale_b=s8.view(1, -1), out_dtype=torch.bfloat16, use_fast_accum=True
            ),
            True,
        ),
        "fp8 act quant only": (lambda: kernels.quantize_rows(x, "fp8")[0], False),
        "fp8_tensorwise": (tensorwise_with_quant, True),
        "fp8_tensorwise gemm only": (
            lambda: torch._scaled_mm(xt8, wt8.t(), scale_a=x_t_scale, scale_b=w_t_scale, out_dtype=torch.bfloat16),
            True,
        ),
        "fp8_weight_only": (lambda: kernels.fp8_weight_only(x, f8, s8, None), True),
        "int8_int_mm": (lambda: kernels.int8_int_mm(x, i8, si, None), True),
        "int8_int_mm gemm only": (lambda: torch._int_mm(xqi, i8.t()), False),
        "int8 act quant only": (lambda: kernels.quantize_rows(x, "int8")[0], False),
        "int8_weight_only": (lambda: kernels.int8_weight_only(x, i8, si, None), True),
    }


def _module_check(x: torch.Tensor, w: torch.Tensor, ref: torch.Tensor) -> dict[str, object]:
    """Run Fp8Linear/Int8Linear with a bf16 bias through the registry's default kernel for this device."""
    bias = torch.randn(w.shape[0], device=w.device) * 0.1
    lin = torch.nn.Linear(w.shape[1], w.shape[0], device=w.device, dtype=torch.bfloat16)
    with torch.no_grad():
        lin.weight.copy_(w)
        lin.bias.copy_(bias)
    out: dict[str, object] = {}
    for cls in (Fp8Linear, Int8Linear):
        try:
            layer = cls.from_float(lin)
            kernel, note = layer.kernel_for(x.device.type)
            y = layer(x.unsqueeze(0)).squeeze(0)
            out[cls.__name__] = {"kernel": kernel, "note": note, "snr_db": _snr_db(ref + lin.bias.float(), y)}
        except Exception as exc:  # a benchmark reports what failed and goes on
            out[cls.__name__] = {"error": f"{type(exc).__name__}: {exc}"}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path, help="where to write the JSON results")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--small", action="store_true", help="shapes / 16 (a CPU self-check of this script)")
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--compile", action="store_true", help="also time torch.compile'd fp8_rowwise and int8_int_mm")
    args = ap.parse_args()

    device = torch.device(args.device)
    torch.backends.cuda.matmul.allow_tf32 = False  # the fp32 reference must be fp32
    measure = _timer(device, args.warmup, args.iters, args.repeats)
    info = {"torch": torch.__version__, "device": str(device), "small": args.small}
    if device.type == "cuda":
        info |= {"gpu": torch.cuda.get_device_name(device), "capability": list(torch.cuda.get_device_capability())}
        info["cuda"] = torch.version.cuda
    print(json.dumps(info))
    results = []
    wall = time.perf_counter()
    for name, m, k, n in SHAPES:
        if args.small:
            m, k, n = max(m // 16, 32), k // 16, n // 16
        g = torch.Generator(device=device).manual_seed(0)
        x = torch.randn(m, k, device=device, generator=g).to(torch.bfloat16)
        w = torch.randn(n, k, device=device, generator=g) / math.sqrt(k)
        ref = x.float() @ w.t()
        candidates = _candidates(x, w)
        if args.compile:
            for kname in ("fp8_rowwise", "int8_int_mm"):
                fn = torch.compile(kernels.KERNELS[kname].fn)
                q, s = kernels.quantize_weight(w, kernels.KERNELS[kname].precision)
                candidates[kname + " compiled"] = ((lambda fn=fn, x=x, q=q, s=s: fn(x, q, s, None)), True)
        row: dict[str, object] = {"shape": name, "M": m, "K": k, "N": n, "kernels": {}}
        flop = 2 * m * k * n
        print(f"\n{name}: M={m} K={k} N={n}")
        for kname, (call, comparable) in candidates.items():
            entry: dict[str, object] = {}
            try:
                if kname.endswith("== eager"):  # a correctness check, not a timing
                    entry["mismatch_fraction"] = float(call())
                    row["kernels"][kname] = entry
                    print(f"  {kname:30s} mismatching elements {entry['mismatch_fraction']:.2e}")
                    continue
                seconds = measure(call)
                entry |= {"ms": seconds * 1e3, "tflops": flop / seconds / 1e12}
                if comparable:
                    entry["snr_db"] = _snr_db(ref, call())
            except Exception as exc:  # e.g. a kernel this GPU or torch build lacks: record it, keep going
                entry["error"] = f"{type(exc).__name__}: {exc}".splitlines()[0][:300]
            row["kernels"][kname] = entry
            shown = entry.get("error") or (
                f"{entry['ms']:8.3f} ms {entry['tflops']:8.1f} TFLOP/s"
                + (f"  SNR {entry['snr_db']:5.1f} dB" if "snr_db" in entry else "")
            )
            print(f"  {kname:30s} {shown}")
        row["modules"] = _module_check(x, w, ref)
        print(f"  modules: {json.dumps(row['modules'])}")
        results.append(row)
        del x, w, ref, candidates
        if device.type == "cuda":
            torch.cuda.empty_cache()
    info["wall_s"] = time.perf_counter() - wall
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"info": info, "results": results}, indent=2) + "\n")
    print(f"\nwrote {args.out} ({info['wall_s']:.1f} s)")


if __name__ == "__main__":
    main()
