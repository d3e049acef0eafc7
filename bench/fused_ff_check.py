"""GPU self-check of the fused GELU + per-token quantization kernel (triton_quant.gelu_quantize_rows_fused).

At W1's feed-forward shapes (video: 2 x 1872 tokens x 16384, audio: 2 x 101 x 8192, bf16) and both precisions:
compares the Triton kernel with its torch reference ``kernels.gelu_quantize_rows`` (INT8: q equal but for rare
flips; FP8: q within 1 ulp; scales equal; a row whose scale differs is counted, not compared), reports how far
eager GELU + ``quantize_rows`` is from both, and times (CUDA-graph replays, median of --iters): Inductor-compiled
``quantize_rows(gelu(h))`` (what the compiled block ran before), our kernel, and eager GELU + the plain Triton
quantization. One line per case; JSON to --out; exit status 1 if a check fails.

    PYTHONPATH=src python bench/fused_ff_check.py --out bench/results/fused_ff_check.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
from ltx2_edge.quant import kernels, triton_quant  # noqa: E402

CASES = [("video ff", 2 * 1872, 16384), ("audio ff", 2 * 101, 8192)]  # W1, CFG batch 2: [tokens, 4 x dim]


def _codes(q: torch.Tensor) -> torch.Tensor:
    if q.dtype == torch.int8:
        return q.int()
    bits = q.view(torch.uint8).int()  # e4m3 codes are ordered by magnitude within a sign
    return torch.where(bits >= 128, -(bits - 128), bits)


def _compare(a: tuple[torch.Tensor, torch.Tensor], b: tuple[torch.Tensor, torch.Tensor]) -> dict:
    same_rows = (a[1] == b[1]).squeeze(1)
    diff = (_codes(a[0][same_rows]) - _codes(b[0][same_rows])).abs()
    differs, worst = diff > 0, int(diff.max()) if diff.numel() else 0
    return {"rows_scale_differs": int((~same_rows).sum()), "q_differs": int(differs.sum()),
            "q_differs_frac": float(differs.float().mean()), "max_code_diff": worst}  # fmt: skip


def _median_ms(fn, h: torch.Tensor, iters: int, calls: int = 10) -> float:
    # Timed as CUDA-graph replays of `calls` back-to-back calls, as the graphed denoising step runs them: a
    # single call between two events would also time the CPU's launch (~10-20 us, the audio case's whole size).
    for _ in range(3):
        fn(h)
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for _ in range(calls):
            fn(h)
    times = []
    for _ in range(iters):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        graph.replay()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end) / calls)
    return statistics.median(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--iters", type=int, default=50)
    args = parser.parse_args()
    if not triton_quant.available():
        print("needs a CUDA device and Triton", file=sys.stderr)
        return 2
    results, ok = [], True
    for name, rows, cols in CASES:
        h = (torch.randn(rows, cols, device="cuda", generator=torch.Generator("cuda").manual_seed(0)) * 2).bfloat16()
        for precision in ("fp8", "int8"):
            ours = triton_quant.gelu_quantize_rows_fused(h, precision)
            vs_ref = _compare(ours, kernels.gelu_quantize_rows(h, precision))
            eager = kernels.quantize_rows(F.gelu(h, approximate="tanh"), precision)
            # The kernel's exp and division are approximate (ex2.approx, div.full: a few fp32 ulps), so a bf16
            # rounding of GELU flips now and then; a wrong kernel differs by more than a code or everywhere.
            passed = (vs_ref["max_code_diff"] <= 1 and vs_ref["q_differs_frac"] <= 2e-4
                      and vs_ref["rows_scale_differs"] <= max(1, rows // 1000))  # fmt: skip
            inductor = torch.compile(lambda x, p=precision: kernels.quantize_rows(F.gelu(x, approximate="tanh"), p),
                                     dynamic=False)  # fmt: skip
            ms = {"inductor": _median_ms(inductor, h, args.iters),
                  "ours": _median_ms(lambda x, p=precision: triton_quant.gelu_quantize_rows_fused(x, p), h, args.iters),
                  "eager_gelu_then_triton_quant": _median_ms(
                      lambda x, p=precision: triton_quant.quantize_rows_fused(F.gelu(x, approximate="tanh"), p),
                      h, args.iters)}  # fmt: skip
            moved = h.numel() * 3 + rows * 4  # bf16 read, 8-bit write, fp32 scales
            row = {"case": name, "shape": [rows, cols], "precision": precision, "passed": passed, "ms": ms,
                   "ours_gb_s": moved / ms["ours"] / 1e6, "vs_reference": vs_ref,
                   "vs_eager_gelu": _compare(ours, eager), "reference_vs_eager_gelu": _compare(
                       kernels.gelu_quantize_rows(h, precision), eager)}  # fmt: skip
            results.append(row)
            ok &= passed
            print(f"{name} {rows}x{cols} {precision}: {'PASS' if passed else 'FAIL'} vs reference {vs_ref}; "
                  f"inductor {ms['inductor']:.4f} ms, ours {ms['ours']:.4f} ms ({row['ours_gb_s']:.0f} GB/s), "
                  f"eager gelu + triton quant {ms['eager_gelu_then_triton_quant']:.4f} ms")  # fmt: skip
    device = torch.cuda.get_device_name()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"device": device, "torch": torch.__version__, "cases": results}, indent=1))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
