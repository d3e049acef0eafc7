"""Sequence parallel (Ulysses, ``ltx2_edge.parallel.ulysses``) against one GPU: one guided denoising forward.

For each clip length in --seconds, every rank (one a GPU, NCCL) loads the transformer, builds the same inputs
(the W1 size, CFG: 2 passes batched, fixed noise and contexts) and times --repeats forwards with its video tokens
split across the ranks (audio replicated); then this process times the same forward on cuda:0 alone and compares
the outputs. Eager forwards on both sides (no compile, no CUDA graph), so the ratio is the split's alone. Reports,
per length: video tokens, seconds per forward on one GPU and split (the slowest rank), the speedup, each rank's
peak allocated memory, and rank 0's output against the one-GPU output (largest difference, relative L2).

    python3 bench/sequence_parallel.py --checkpoint-path $CKPT_DIR/ltx2.safetensors --ranks 2 --seconds 4 20 \
        --out $OUT/sequence_parallel.json

On the CPU (the tests): --device cpu, gloo ranks, the tiny model.
"""

from __future__ import annotations

import argparse
import datetime
import functools
import json
import os
import sys
import time
from pathlib import Path

import torch

ORACLE = {"rtol": 1e-4, "atol": 1e-5}  # tests/test_oracle_denoise.py


def _frames(seconds: float, fps: float) -> int:
    return int(round(seconds * fps / 8)) * 8 + 1  # 8k + 1 frames


def _setup(a: argparse.Namespace, device: torch.device, seconds: float):
    """The transformer on ``device`` and one step's inputs, the same on every rank and in the one-GPU run."""
    from ltx2_edge.checkpoint.header import read_config
    from ltx2_edge.guidance import Guidance
    from ltx2_edge.models.loaders import load_transformer
    from ltx2_edge.quant.policy import QuantPolicy
    from ltx2_edge.quant.precision import resolve_precision
    from ltx2_edge.run_types import default_dtype
    from ltx2_edge.stages.denoise import Contexts, batch_passes, official_sigmas
    from ltx2_edge.stages.latents import noised_latents, pixel_shape

    dtype = default_dtype(device)
    precision, _ = resolve_precision(a.quantization, device)
    transformer = load_transformer(a.checkpoint_path, device, dtype, QuantPolicy.from_flags(precision))
    width = read_config(a.checkpoint_path)["transformer"]["caption_channels"]
    g = torch.Generator().manual_seed(1)
    ctx = Contexts(*(torch.randn(1, 1024, width, generator=g).to(device, dtype) for _ in range(4)))
    shape = pixel_shape(a.width, a.height, _frames(seconds, a.fps), a.fps)
    setup = noised_latents(shape, torch.Generator(device=device).manual_seed(10), device, dtype)
    sigma = official_sigmas(20, device)[0]
    return transformer, batch_passes(Guidance.preset_named("cfg"), ctx), setup, sigma


def _time(forward, repeats: int, device: torch.device) -> tuple[list[float], tuple]:
    out = forward()  # warm-up: kernels chosen, workspaces allocated
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        out = forward()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(round(time.perf_counter() - start, 5))
    return times, out


@torch.inference_mode()
def _rank(rank: int, a: argparse.Namespace, world: int, port: int, work: str) -> None:
    import torch.distributed as dist

    from ltx2_edge.parallel import env
    from ltx2_edge.parallel.ulysses import SequenceParallel
    from ltx2_edge.stages.denoise import batched_forward

    os.environ.update(env.rank_environment(rank, world, port))
    device = torch.device(f"cuda:{rank}" if a.device == "cuda" else "cpu")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo", init_method="env://", rank=rank,
                            world_size=world, device_id=device if device.type == "cuda" else None)  # fmt: skip
    try:
        for seconds in a.seconds:
            transformer, batched, setup, sigma = _setup(a, device, seconds)
            split = SequenceParallel(transformer, rank, world)
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            forward = functools.partial(batched_forward, split, batched, setup.video_state, setup.audio_state, sigma)
            times, (out_v, out_a) = _time(forward, a.repeats, device)
            peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None
            row = {"rank": rank, "seconds": seconds, "times": times, "peak_allocated_bytes": peak}
            torch.save({"row": row, "video": out_v.cpu(), "audio": out_a.cpu()}, Path(work) / f"{seconds}-{rank}.pt")
            del forward, split, transformer  # before the next length's copy loads
            if device.type == "cuda":
                torch.cuda.empty_cache()
    finally:
        dist.destroy_process_group()


def _diff(x: torch.Tensor, y: torch.Tensor) -> dict:
    x, y = x.float(), y.float()
    return {"bit_identical": bool(torch.equal(x, y)), "max_abs_diff": float((x - y).abs().max()),
            "rel_l2": float((x - y).norm() / y.norm().clamp_min(1e-30)),
            "within_oracle_tolerance": bool(torch.allclose(x, y, **ORACLE))}  # fmt: skip


@torch.inference_mode()
def _single(a: argparse.Namespace, seconds: float) -> tuple[dict, tuple]:
    from ltx2_edge.stages.denoise import batched_forward
    from ltx2_edge.stages.latents import video_token_count

    device = torch.device("cuda:0" if a.device == "cuda" else "cpu")
    transformer, batched, setup, sigma = _setup(a, device, seconds)
    forward = functools.partial(batched_forward, transformer, batched, setup.video_state, setup.audio_state, sigma)
    times, out = _time(forward, a.repeats, device)
    tokens = {"video": video_token_count(a.width, a.height, _frames(seconds, a.fps)),
              "audio": int(setup.audio_state.latent.shape[1])}  # fmt: skip
    del forward, transformer
    return {"times": times, "tokens": tokens}, tuple(t.cpu() for t in out)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint-path", type=Path, required=True)
    ap.add_argument("--ranks", type=int, default=2)
    ap.add_argument("--seconds", type=float, nargs="+", default=[4.0, 20.0], help="clip lengths to measure")
    ap.add_argument("--width", type=int, default=512)
    ap.add_argument("--height", type=int, default=288)
    ap.add_argument("--fps", type=float, default=24.0)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--quantization", default="auto")
    ap.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    ap.add_argument("--work", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    a = ap.parse_args(argv)
    import torch.multiprocessing as mp
    from torch.distributed import TCPStore

    from ltx2_edge.parallel import env

    env.apply()
    a.work.mkdir(parents=True, exist_ok=True)
    store = TCPStore(env.MASTER_ADDR, 0, is_master=True, wait_for_workers=False)
    mp.start_processes(_rank, args=(a, a.ranks, store.port, str(a.work)), nprocs=a.ranks, start_method="spawn")
    rows = []
    for seconds in a.seconds:
        single, (ref_v, ref_a) = _single(a, seconds)
        ranks = [torch.load(a.work / f"{seconds}-{r}.pt") for r in range(a.ranks)]
        split_s = max(min(r["row"]["times"]) for r in ranks)  # the slowest rank's best forward
        one_s = min(single["times"])
        rows.append({"seconds": seconds, "frames": _frames(seconds, a.fps), "tokens": single["tokens"],
                     "one_gpu_s": one_s, "split_s": split_s, "speedup": round(one_s / split_s, 3),
                     "per_rank": [r["row"] for r in ranks], "one_gpu_times": single["times"],
                     "ranks_identical": all(torch.equal(ranks[0]["video"], r["video"]) for r in ranks),
                     "video_vs_one_gpu": _diff(ranks[0]["video"], ref_v),
                     "audio_vs_one_gpu": _diff(ranks[0]["audio"], ref_a)})  # fmt: skip
        print(f"{seconds:g} s ({single['tokens']['video']} video tokens): one GPU {one_s:.4f} s/forward, "
              f"{a.ranks} ranks {split_s:.4f} s -> {one_s / split_s:.2f}x; video vs one GPU max |diff| "
              f"{rows[-1]['video_vs_one_gpu']['max_abs_diff']:.3g}")  # fmt: skip
    machine = {"torch": torch.__version__, "device": a.device}
    if a.device == "cuda":
        machine["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    result = {"date": datetime.date.today().isoformat(), "command": " ".join([sys.argv[0], *(argv or sys.argv[1:])]),
              "machine": machine, "ranks": a.ranks, "size": f"{a.width}x{a.height}", "rows": rows}  # fmt: skip
    a.out.write_text(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
