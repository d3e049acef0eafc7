"""Experiment for the compute-floor issue: one W1 denoising step eager vs replayed as a CUDA graph.

Loads the transformer resident (bf16 or fp8 per --quantization), builds W1's inputs with fixed random contexts,
times eager guided predictions, then captures one into a CUDA graph (static inputs: the latents are copied in
before each replay) and times replays, and checks the replayed output against eager. Writes JSON to --out.
A capture failure is recorded, not hidden.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

import ltx2_edge  # noqa: F401
from ltx2_edge.checkpoint.header import read_config
from ltx2_edge.guidance import Guidance
from ltx2_edge.models.loaders import load_transformer
from ltx2_edge.quant.policy import QuantPolicy
from ltx2_edge.stages.denoise import Contexts, guided_prediction, official_sigmas
from ltx2_edge.stages.latents import noised_latents, pixel_shape


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--checkpoint-path", type=Path, required=True)
    ap.add_argument("--quantization", choices=("bf16", "fp8"), default="fp8")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    dev, dtype = torch.device("cuda"), torch.bfloat16
    policy = None if args.quantization == "bf16" else QuantPolicy.from_flags("fp8")
    transformer = load_transformer(args.checkpoint_path, dev, dtype, policy)
    g = torch.Generator(device=dev).manual_seed(0)
    # Contexts enter at the text width (caption_channels); the transformer's caption projections widen them.
    width = read_config(args.checkpoint_path)["transformer"]["caption_channels"]
    ctx = Contexts(*(torch.randn(1, 1024, width, device=dev, dtype=dtype, generator=g) for _ in range(4)))
    setup = noised_latents(pixel_shape(512, 288, 97, 24.0), torch.Generator(device=dev).manual_seed(10), dev, dtype)
    sigma = official_sigmas(20, dev)[3]
    guidance = Guidance.preset_named("cfg")
    rec: dict = {"quantization": args.quantization}

    def step() -> tuple[torch.Tensor, torch.Tensor]:
        return guided_prediction(transformer, guidance, setup.video_state, setup.audio_state, ctx, sigma)

    with torch.inference_mode():
        for _ in range(3):
            ref = step()
        torch.cuda.synchronize()
        t = time.perf_counter()
        for _ in range(5):
            step()
        torch.cuda.synchronize()
        rec["eager_seconds_per_step"] = (time.perf_counter() - t) / 5
        try:
            stream = torch.cuda.Stream()
            stream.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(stream):
                step()  # warm-up on the capture stream
            torch.cuda.current_stream().wait_stream(stream)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                out = step()
            torch.cuda.synchronize()
            t = time.perf_counter()
            for _ in range(5):
                graph.replay()
            torch.cuda.synchronize()
            rec["graph_seconds_per_step"] = (time.perf_counter() - t) / 5
            rec["graph_max_abs_diff"] = [float((a - b).abs().max()) for a, b in zip(out, ref, strict=True)]
            rec["speedup"] = rec["eager_seconds_per_step"] / rec["graph_seconds_per_step"]
        except Exception as exc:  # the result of the experiment either way
            rec["graph_error"] = f"{type(exc).__name__}: {str(exc)[:500]}"
    print(json.dumps(rec, indent=1))
    args.out.write_text(json.dumps(rec, indent=1))


if __name__ == "__main__":
    main()
