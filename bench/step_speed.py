"""Compute-floor benchmark (issue 5): W1 denoising steps eager bf16, eager fp8, compiled fp8, compiled fp8 + graph.

Loads the transformer resident (bf16, then fp8 on the fly), builds W1's inputs (512x288, 97 frames, CFG batched
x2, 1024-token random contexts at the caption width), runs the real denoising loop (``stages.denoise.denoise``)
for ``--steps`` steps per variant with ``AccelSettings`` and records per variant: steady s/step (median of the
steps after the accelerated ones start), compile and capture seconds, and from a torch.profiler trace of two
steady steps: GPU kernels per step, GPU-busy fraction (kernel time / wall), and kernel time by class (GEMM,
attention, elementwise/other). Each variant's final latents are compared with its precision's eager run.
The compute floor comes from the planner (FLOPs per kernel class / the H100 profile's rate per class). The SDPA
backend is measured at the step's shapes first (``accel.attention.choose_backend``) and used by the
accelerated variants. A variant that fails is recorded with its error; the run goes on.

GPU:  PYTHONPATH=src python bench/step_speed.py --checkpoint-path F --gemma-root D --out result.json
CPU self-check on the tiny checkpoint:  ... --device cpu --width 128 --height 64 --frames 17 --steps 4
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import statistics
import time
import traceback
from dataclasses import replace
from pathlib import Path

import torch
import torch._dynamo
import torch._inductor.config as inductor_config

import ltx2_edge  # noqa: F401  (torchaudio placeholder before ltx_core)
from ltx2_edge.accel import attention
from ltx2_edge.accel.compile import compile_support
from ltx2_edge.accel.engine import AccelSettings
from ltx2_edge.checkpoint.header import read_config, read_header
from ltx2_edge.checkpoint.validate import inspect_gemma_folder
from ltx2_edge.guidance import Guidance
from ltx2_edge.memory import runtime
from ltx2_edge.models.loaders import load_transformer
from ltx2_edge.plan.budget import Budget
from ltx2_edge.plan.plan_types import PlanRequest
from ltx2_edge.plan.profiles import profile_for
from ltx2_edge.quant.policy import QuantPolicy
from ltx2_edge.stages.denoise import Contexts, denoise, official_sigmas
from ltx2_edge.stages.latents import noised_latents, pixel_shape, video_token_count

VARIANTS: dict[str, tuple[str, AccelSettings | None]] = {  # name -> (precision, settings, backend added later)
    "eager_bf16": ("bf16", None),  # ltx-core's forward as it is: no engine
    "eager_fp8": ("fp8", None),
    "eager_fp8_invariants": ("fp8", AccelSettings(freeze_text_kv=True)),
    "graph_fp8": ("fp8", AccelSettings(cuda_graph=True, freeze_text_kv=True)),
    "compiled_fp8": ("fp8", AccelSettings(compile=True, freeze_text_kv=True)),
    "compiled_graph_fp8": ("fp8", AccelSettings(compile=True, cuda_graph=True, freeze_text_kv=True)),
    "compiled_graph_bf16": ("bf16", AccelSettings(compile=True, cuda_graph=True, freeze_text_kv=True)),
    # Issue 4's int8 whole forward (torch._int_mm with fused activation quantization), same levers.
    "eager_int8": ("int8", None),
    "graph_int8": ("int8", AccelSettings(cuda_graph=True, freeze_text_kv=True)),
    "compiled_graph_int8": ("int8", AccelSettings(compile=True, cuda_graph=True, freeze_text_kv=True)),
    # Inductor's coordinate-descent tuning of its own Triton kernels (the fused elementwise work), same levers.
    "compiled_graph_fp8_tuned": ("fp8", AccelSettings(compile=True, cuda_graph=True, freeze_text_kv=True)),
    # The FeedForward's GELU left to Inductor's own fusion with the quantization (before accel.fused_ff).
    "compiled_graph_fp8_unfused": (
        "fp8",
        AccelSettings(compile=True, cuda_graph=True, freeze_text_kv=True, fused_ff=False),
    ),
}
INDUCTOR_OPTIONS: dict[str, dict] = {"compiled_graph_fp8_tuned": {"coordinate_descent_tuning": True}}


def kernel_class(name: str) -> str:
    n = name.lower()
    # Attention first: cuDNN's SDPA kernels carry "sm90" in their names like the GEMMs do.
    if any(k in n for k in ("flash", "fmha", "attention", "sdpa", "cudnn")):
        return "attention"
    if any(k in n for k in ("gemm", "cutlass", "sm90", "matmul", "cublas", "xmma", "_mm", "nvjet")):
        return "gemm"
    if "triton" in n:
        return "triton (fused elementwise)"
    return "other elementwise"


def profile_steps(run_step, device: torch.device, steps: int = 2) -> dict:  # noqa: ANN001
    """Kernels per step, GPU-busy fraction and kernel seconds by class over ``steps`` steady steps."""
    from torch.profiler import ProfilerActivity, profile  # noqa: PLC0415

    torch.cuda.synchronize(device)
    with profile(activities=[ProfilerActivity.CUDA, ProfilerActivity.CPU]) as prof:
        start = time.perf_counter()
        for _ in range(steps):
            run_step()
        torch.cuda.synchronize(device)
        wall = time.perf_counter() - start
    kernels = [e for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA and "Memcpy" not in e.name
               and "Memset" not in e.name]  # fmt: skip
    by_class: dict[str, float] = {}
    by_name: dict[str, list[float]] = {}
    for e in kernels:
        by_class[kernel_class(e.name)] = by_class.get(kernel_class(e.name), 0.0) + e.device_time / 1e6
        row = by_name.setdefault(e.name, [0.0, 0.0])
        row[0] += 1
        row[1] += e.device_time / 1e6
    busy = sum(by_class.values())
    # The classes are read from kernel names, and Inductor names a fused kernel after the ops it serves (a RoPE
    # kernel feeding SDPA is "..._scaled_dot_product_cudnn_attention_..."): the top names show what a class holds.
    top = sorted(by_name.items(), key=lambda kv: -kv[1][1])[:40]
    return {
        "top_kernels": [
            {"name": n[:160], "class": kernel_class(n), "per_step": c / steps, "seconds_per_step": round(t / steps, 6)}
            for n, (c, t) in top
        ],  # fmt: skip
        "kernels_per_step": len(kernels) / steps,
        "gpu_busy_fraction": round(busy / wall, 4),
        "kernel_seconds_per_step": {k: round(v / steps, 5) for k, v in by_class.items()},
        "profiled_wall_per_step": round(wall / steps, 5),
    }


def compute_floor(checkpoint: Path, precision: str, args: argparse.Namespace) -> dict:
    """The planner's compute floor of the denoising (resident, no budget) and its FLOPs by class."""
    preq = PlanRequest(args.width, args.height, args.frames, 24.0, args.steps, guidance_batch=2, precision=precision)
    policy = QuantPolicy.from_flags(precision)
    shards = inspect_gemma_folder(args.gemma_root).shards
    plan = runtime.build_plan(read_header(checkpoint), shards, preq, Budget(None, None, False), profile_for("h100"),
                              policy)  # fmt: skip
    den = plan.stage("denoise")
    return {"seconds": den.predicted_seconds, "per_step": den.predicted_seconds / args.steps, "profile": "h100"}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--checkpoint-path", type=Path, required=True)
    ap.add_argument("--gemma-root", type=Path, required=True, help="for the planner's floor (headers only)")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--width", type=int, default=512)
    ap.add_argument("--height", type=int, default=288)
    ap.add_argument("--frames", type=int, default=97)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--context-tokens", type=int, default=1024)
    ap.add_argument("--variants", default=",".join(VARIANTS))
    args = ap.parse_args()
    dev = torch.device(args.device)
    dtype = torch.bfloat16 if dev.type == "cuda" else torch.float32
    config = read_config(args.checkpoint_path)
    width = config["transformer"]["caption_channels"]
    gen = torch.Generator(device=dev).manual_seed(0)
    ctx = Contexts(*(torch.randn(1, args.context_tokens, width, device=dev, dtype=dtype, generator=gen)
                     for _ in range(4)))  # fmt: skip
    sigmas = official_sigmas(args.steps, dev)
    guidance = Guidance.preset_named("cfg")
    shape = pixel_shape(args.width, args.height, args.frames, 24.0)
    vt = video_token_count(args.width, args.height, args.frames)
    setup0 = noised_latents(shape, torch.Generator(device=dev).manual_seed(10), dev, dtype)
    shapes = attention.step_shapes(config, 2, vt, setup0.audio_state.latent.shape[1], args.context_tokens)
    backend, timings = attention.choose_backend(shapes, dev, dtype)
    rec: dict = {"device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu",
                 "torch": torch.__version__, "workload": vars(args) | {"checkpoint_path": str(args.checkpoint_path),
                 "out": str(args.out)}, "video_tokens": vt, "attention_backend": backend,
                 "attention_timings": timings, "compile_support": compile_support(dev), "variants": {}}  # fmt: skip
    print(json.dumps({k: rec[k] for k in ("device", "attention_backend", "attention_timings")}), flush=True)
    loaded: dict[str, torch.nn.Module] = {}
    reference: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    for name in args.variants.split(","):
        precision, settings = VARIANTS[name]
        if precision not in loaded:
            loaded.clear()
            gc.collect()
            torch.cuda.empty_cache() if dev.type == "cuda" else None
            t = time.perf_counter()
            policy = None if precision == "bf16" else QuantPolicy.from_flags(precision)
            loaded[precision] = load_transformer(args.checkpoint_path, dev, dtype, policy)
            rec.setdefault("load_seconds", {})[precision] = round(time.perf_counter() - t, 2)
            rec.setdefault("floor", {})[precision] = compute_floor(args.checkpoint_path, precision, args)
        model = loaded[precision]
        if settings is not None:
            settings = replace(settings, cuda_graph=settings.cuda_graph and dev.type == "cuda", attention=backend)
        out: dict = {"precision": precision, "settings": settings.describe() if settings else "ltx-core forward as is"}
        options = INDUCTOR_OPTIONS.get(name, {})
        if options:
            torch._dynamo.reset()  # otherwise the block compiled for an earlier variant is reused as it is
            out["inductor_options"] = options
        patch = inductor_config.patch(**options) if options else contextlib.nullcontext()
        try:
            patch.__enter__()
            step_s: list[float] = []
            stats: dict = {}
            setup = noised_latents(shape, torch.Generator(device=dev).manual_seed(10), dev, dtype)
            if dev.type == "cuda":
                torch.cuda.reset_peak_memory_stats(dev)
            t = time.perf_counter()
            v, a = denoise(model, setup.video_state, setup.audio_state, sigmas, ctx, guidance,
                           on_step=lambda i, n, s, acc=step_s: acc.append(s),
                           synchronize=torch.cuda.synchronize if dev.type == "cuda" else None,
                           accel=settings, accel_stats=stats)  # fmt: skip
            out["total_seconds"] = round(time.perf_counter() - t, 3)
            steady = step_s[2:] if len(step_s) > 3 else step_s
            out.update(step_seconds=[round(s, 4) for s in step_s], seconds_per_step=round(statistics.median(steady), 5),
                       accel=stats)  # fmt: skip
            if dev.type == "cuda":
                out["peak_allocated_gib"] = round(torch.cuda.max_memory_allocated(dev) / 2**30, 2)
            ref = reference.setdefault(precision, (v.latent, a.latent))
            out["max_abs_diff_vs_eager"] = [float((x.float() - y.float()).abs().max()) for x, y in
                                            zip((v.latent, a.latent), ref, strict=True)]  # fmt: skip
            out["rel_err_vs_eager"] = [float((x.float() - y.float()).norm() / y.float().norm()) for x, y in
                                       zip((v.latent, a.latent), ref, strict=True)]  # fmt: skip
            floor = rec["floor"][precision]["per_step"]
            out["x_floor"] = round(out["seconds_per_step"] / floor, 3)
            if dev.type == "cuda":
                out["profile"] = profile_one(model, setup, sigmas, ctx, guidance, settings or AccelSettings(), dev,
                                             engine=settings is not None)  # fmt: skip
        except Exception as exc:  # the benchmark records failures and goes on
            out["error"] = f"{type(exc).__name__}: {str(exc)[:400]}"
            out["traceback"] = traceback.format_exc()[-1500:]
        finally:
            patch.__exit__(None, None, None)
        rec["variants"][name] = out
        print(name, json.dumps({k: v for k, v in out.items() if k not in ("step_seconds", "traceback")}), flush=True)
        args.out.write_text(json.dumps(rec, indent=1, default=str))


def profile_one(model, setup, sigmas, ctx, guidance, settings, dev, engine: bool) -> dict:  # noqa: ANN001
    """Profile two steady steps after three unprofiled ones, under the same settings (no engine: plain eager)."""
    from ltx2_edge.accel.compile import block_invariant  # noqa: PLC0415
    from ltx2_edge.accel.engine import StepEngine  # noqa: PLC0415
    from ltx2_edge.stages.denoise import batch_passes, batched_forward  # noqa: PLC0415

    batched = batch_passes(guidance, ctx)
    # As denoise() does: compiled blocks get the perturbations in their block-invariant form.
    run = replace(batched, perturbations=block_invariant(batched.perturbations)) if settings.compile else batched
    forward = lambda v, a, s: batched_forward(model, run, v, a, s)  # noqa: E731
    with torch.inference_mode():
        sigma = sigmas[3]
        eager = [t.float() for t in batched_forward(model, batched, setup.video_state, setup.audio_state, sigma)]
        with StepEngine(model, forward, settings, dev) as eng:

            def step() -> tuple[torch.Tensor, ...]:
                if engine:
                    return eng(setup.video_state, setup.audio_state, sigma)
                return forward(setup.video_state, setup.audio_state, sigma)

            for _ in range(3):  # eager step 0, compile/capture, one steady
                out = step()
            # One forward on identical inputs: the accelerated path's own rounding, before 20 steps amplify it.
            one = [float((o.float() - e).norm() / e.norm()) for o, e in zip(out, eager, strict=True)]
            prof = profile_steps(step, dev)
        return prof | {"one_forward_rel_err_vs_eager": one}


if __name__ == "__main__":
    main()
