"""CFG parallel on one N-GPU host against one GPU: W1's denoising time, equality, and each rank's memory.

W1 (512x288, 97 frames, 20 steps, CFG, the kite prompt, seed 10, as bench/engine_ab.py and bench/service_bench.py)
runs twice, or three times with --with-sequential:
  1. CFG parallel over --ranks GPUs (``ltx2_edge.parallel``: rank r on cuda:r, NCCL), first, before this process
     touches a GPU;
  2. one GPU (cuda:0), batched guidance, in this process, under the same --budget;
  3. (--with-sequential) one GPU, the passes one by one: each CFG-parallel rank's forward has that run's shapes.
It reports (a) the denoise stage's step time (sum of steps, and the steady step without step 0/1's compile and
graph capture) of the one-GPU run over the parallel run's (rank 0's, and the slowest rank's), against the goal of
1.7x; the latents of rank 0 against the one-GPU batched run (largest difference, within the oracle's rtol 1e-4 /
atol 1e-5 or not), against the sequential run (bit-identical or not; its own distance to the batched run is the
rounding floor of changing the forward's batch), and rank 0 against rank 1 (must be bit-identical); (b) each
rank's peak memory per stage (allocated, reserved, the NVML reading after the stage: CUDA context and NCCL's own
buffers included) against the per-GPU budget.

    python3 bench/multi_gpu.py --checkpoint-path $CKPT_DIR/ltx2.safetensors --gemma-root $GEMMA_DIR --ranks 2 \
        --budget 32GiB --with-sequential --work /tmp/mgpu --out $OUT/multi_gpu.json

On the CPU (the tests): --device cpu runs the ranks as gloo processes on the tiny model.
"""

from __future__ import annotations

import argparse
import datetime
import json
import statistics
import sys
import time
from pathlib import Path

PROMPT = "A red kite dances over a windy beach at sunset while waves crash and gulls call."
GOAL_SPEEDUP = 1.7
ORACLE = {"rtol": 1e-4, "atol": 1e-5}  # tests/test_oracle_denoise.py (batched against the official loop)


def _request(a: argparse.Namespace):
    from ltx2_edge.request import GenerationRequest

    return GenerationRequest(prompt=PROMPT, width=a.width, height=a.height, num_frames=a.frames,
                             num_inference_steps=a.steps, seed=a.seed)  # fmt: skip


def _settings(a: argparse.Namespace, device: str, mode: str = "batched"):
    from ltx2_edge.engine.settings import RunSettings
    from ltx2_edge.plan.budget import parse_size

    return RunSettings(device=device, budget=parse_size(a.budget, "budget"), guidance_mode=mode, compile=a.compile)


def _denoise_times(stages: list[dict]) -> dict:
    den = next(s for s in stages if s["stage"] == "denoise")
    steps = den["step_seconds"]
    steady = den.get("seconds_per_step_steady") or statistics.median(steps[2:] or steps)
    return {"steps_s": round(sum(steps), 4), "steady_step_s": round(steady, 4), "step_seconds": steps}


def _memory(stages: list[dict]) -> list[dict]:
    keys = ("peak_bytes", "peak_reserved_bytes", "nvml_used_bytes_after", "predicted_peak_bytes", "budget_bytes",
            "within_budget")  # fmt: skip
    return [{"stage": s["stage"], **{k: s[k] for k in keys if k in s}} for s in stages]


def _parallel(a: argparse.Namespace, work: Path) -> list[dict]:
    import torch

    from ltx2_edge.engine.run_plan import guidance_for
    from ltx2_edge.parallel.launch import run_cfg_parallel
    from ltx2_edge.parallel.ranks import rank_layout
    from ltx2_edge.parallel.worker import CfgJob

    request = _request(a)
    gpus = torch.cuda.device_count() if a.device == "cuda" else 0
    layout = rank_layout(a.ranks, request.pipeline, guidance_for(request, "batched").passes(), a.device, gpus)
    latents = work / "parallel"
    latents.mkdir(parents=True, exist_ok=True)
    job = CfgJob(a.checkpoint_path, a.gemma_root, _settings(a, a.device), request, work / "parallel.mp4",
                 overwrite=True, quiet=a.quiet, latents_dir=latents)  # fmt: skip
    started = time.perf_counter()
    summaries = run_cfg_parallel(job, layout)
    summaries[0]["process_wall_s"] = round(time.perf_counter() - started, 3)
    return summaries


def _single(a: argparse.Namespace, work: Path, mode: str) -> dict:
    import torch

    from ltx2_edge.pipeline import Generator
    from ltx2_edge.progress import Progress

    device = "cuda:0" if a.device == "cuda" else "cpu"
    gen = Generator(a.checkpoint_path, a.gemma_root, _settings(a, device, mode), Progress(quiet=a.quiet))
    try:
        result = gen.generate(_request(a), work / f"single-{mode}.mp4", overwrite=True)
    finally:
        gen.close()
    torch.save({"video": result.latents.video.cpu(), "audio": result.latents.audio.cpu()}, work / f"{mode}.pt")
    stages = [{"stage": s.stage, "seconds": s.seconds, "peak_bytes": s.peak_bytes, **s.details}
              for s in result.report.stages]  # fmt: skip
    return {"mode": mode, "device": device, "total_s": round(result.report.total_seconds, 3),
            "denoise": _denoise_times(stages), "memory": _memory(stages)}  # fmt: skip


def _diff(x, y) -> dict:
    import torch

    out = {}
    for k in ("video", "audio"):
        a, b = x[k].float(), y[k].float()
        out[k] = {"bit_identical": bool(torch.equal(x[k], y[k])), "max_abs_diff": float((a - b).abs().max()),
                  "within_oracle_tolerance": bool(torch.allclose(a, b, **ORACLE)),
                  "rel_l2": float((a - b).norm() / b.norm().clamp_min(1e-30))}  # fmt: skip
    return out


def _equality(work: Path, ranks: int, with_sequential: bool) -> dict:
    import torch

    got = {f"rank{r}": torch.load(work / "parallel" / f"rank{r}.pt") for r in range(ranks)}
    batched = torch.load(work / "batched.pt")
    out = {"rank0_vs_batched": _diff(got["rank0"], batched),
           "ranks_identical": all(torch.equal(got["rank0"][k], got[f"rank{r}"][k]) for r in range(1, ranks)
                                  for k in ("video", "audio"))}  # fmt: skip
    if with_sequential:
        sequential = torch.load(work / "sequential.pt")
        out["rank0_vs_sequential"] = _diff(got["rank0"], sequential)
        out["sequential_vs_batched"] = _diff(sequential, batched)  # the rounding floor of batch 1 against batch 2
    return out


def _speedup(single: dict, summaries: list[dict]) -> dict:
    ranks = [_denoise_times(s.get("report_stages") or s["stages"]) for s in summaries]
    slowest = max(ranks, key=lambda r: r["steps_s"])
    base = single["denoise"]
    total = base["steps_s"] / slowest["steps_s"]
    steady = base["steady_step_s"] / slowest["steady_step_s"]
    return {"one_gpu": base, "per_rank": ranks, "speedup_steps": round(total, 3),
            "speedup_steps_rank0": round(base["steps_s"] / ranks[0]["steps_s"], 3),
            "speedup_steady_step": round(steady, 3), "goal": GOAL_SPEEDUP,
            "meets_goal": total >= GOAL_SPEEDUP}  # fmt: skip


def _machine(device: str) -> dict:
    import torch

    info = {"torch": torch.__version__, "device": device}
    if device == "cuda":
        info["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return info


def _print(result: dict) -> None:
    s = result["speedup"]
    print(f"denoise, one GPU {s['one_gpu']['steps_s']:.3f} s (steady {s['one_gpu']['steady_step_s']:.4f} s/step); "
          f"CFG parallel x{result['ranks']}: slowest rank {max(r['steps_s'] for r in s['per_rank']):.3f} s -> "
          f"{s['speedup_steps']:.2f}x (steady {s['speedup_steady_step']:.2f}x; goal {GOAL_SPEEDUP}x: "
          f"{'met' if s['meets_goal'] else 'NOT met'})")  # fmt: skip
    eq = result["equality"]
    vb = eq["rank0_vs_batched"]["video"]
    line = (f"equality: ranks bit-identical {eq['ranks_identical']}; rank 0 vs one-GPU batched max |diff| video "
            f"{vb['max_abs_diff']:.3g}, within the oracle's tolerance {vb['within_oracle_tolerance']}")  # fmt: skip
    if "rank0_vs_sequential" in eq:
        vs, floor = eq["rank0_vs_sequential"]["video"], eq["sequential_vs_batched"]["video"]
        line += (f"; vs sequential bit-identical {vs['bit_identical']} (sequential vs batched "
                 f"{floor['max_abs_diff']:.3g})")  # fmt: skip
    print(line)
    for r in result["parallel"]:
        worst = max(r["memory"], key=lambda m: m.get("peak_reserved_bytes", m["peak_bytes"]))
        within = all(m.get("within_budget", True) for m in r["memory"])
        print(f"rank {r['rank']} ({r['device']}, {', '.join(r['passes'])}): peak {worst['peak_bytes'] / 2**30:.2f} "
              f"GiB allocated in {worst['stage']}, within budget {within}")  # fmt: skip


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint-path", type=Path, required=True)
    ap.add_argument("--gemma-root", type=Path, required=True)
    ap.add_argument("--ranks", type=int, default=2)
    ap.add_argument("--budget", default="32GiB", help="per GPU (each rank's, and the one-GPU run's)")
    ap.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--width", type=int, default=512)
    ap.add_argument("--height", type=int, default=288)
    ap.add_argument("--frames", type=int, default=97)
    ap.add_argument("--seed", type=int, default=10)
    ap.add_argument("--with-sequential", action="store_true", help="also the one-GPU sequential run")
    ap.add_argument("--compile", choices=("auto", "off", "on"), default="auto",
                    help="as generate's; off: every forward eager, the sequential run's kernels")  # fmt: skip
    ap.add_argument("--work", type=Path, required=True, help="folder for the clips and latents")
    ap.add_argument("--out", type=Path, required=True, help="the results JSON")
    ap.add_argument("--quiet", action="store_true")
    a = ap.parse_args(argv)
    from ltx2_edge.parallel import env

    env.apply()  # this process starts the ranks: multicast off for it and for anything it starts
    a.work.mkdir(parents=True, exist_ok=True)
    summaries = _parallel(a, a.work)  # first: no GPU of this process is touched before the ranks end
    parallel = [{"rank": s["rank"], "device": s["device"], "passes": s["passes"],
                 "memory": _memory(s.get("report_stages") or s["stages"])} for s in summaries]  # fmt: skip
    single = _single(a, a.work, "batched")
    sequential = _single(a, a.work, "sequential") if a.with_sequential else None
    result = {
        "date": datetime.date.today().isoformat(), "command": " ".join([sys.argv[0], *(argv or sys.argv[1:])]),
        "machine": _machine(a.device), "ranks": a.ranks, "budget": a.budget,
        "workload": {"width": a.width, "height": a.height, "frames": a.frames, "steps": a.steps, "guidance": "cfg"},
        "speedup": _speedup(single, summaries), "equality": _equality(a.work, a.ranks, a.with_sequential),
        "parallel": parallel, "parallel_wall_s": summaries[0]["process_wall_s"], "single": single,
        "sequential": sequential,
    }  # fmt: skip
    tmp = a.out.with_name(f".{a.out.name}.partial")
    tmp.write_text(json.dumps(result, indent=1))
    tmp.replace(a.out)
    _print(result)
    return result


if __name__ == "__main__":
    main()
