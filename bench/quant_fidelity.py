"""Quantization fidelity and speed on W1: bf16 vs each 8-bit policy, several seeds, same contexts.

For each variant (bf16 reference; fp8 default keep-list; fp8 --quantize-all; fp8 with Lightricks' own keep-list
(blocks 0 and 43-47 also bf16); int8 default) the transformer is loaded from the same BF16 checkpoint
(quantized tensor by tensor at load), W1's 20 steps run for every seed, and we report the relative L2 error
of the final video and audio latents and of the decoded audio waveform against bf16, plus seconds per step
and the GPU time per kernel class of one profiled step (matmul bf16/fp8/int8, attention, other) with the
kernel count. Writes one JSON file. Usage (GPU box):
    PYTHONPATH=src python bench/quant_fidelity.py --checkpoint-path F --gemma-root D --out R.json
"""

from __future__ import annotations

import argparse
import gc
import json
import time
from collections import defaultdict
from pathlib import Path

import torch

import ltx2_edge  # noqa: F401  (torchaudio placeholder before ltx_core)
from ltx2_edge.engine.settings import RunSettings
from ltx2_edge.guidance import Guidance
from ltx2_edge.models import loaders
from ltx2_edge.pipeline import Generator
from ltx2_edge.quant.policy import LIGHTRICKS_KEEP_BF16, QuantPolicy
from ltx2_edge.request import GenerationRequest
from ltx2_edge.stages.decode_audio import decode_audio
from ltx2_edge.stages.denoise import denoise, guided_prediction, official_sigmas
from ltx2_edge.stages.latents import final_latents, noised_latents, pixel_shape

VARIANTS = {
    "bf16": QuantPolicy("bf16"),
    "fp8 (default keep-list)": QuantPolicy.from_flags("fp8"),
    "fp8 --quantize-all": QuantPolicy.from_flags("fp8", quantize_all=True),
    "fp8 Lightricks keep-list": QuantPolicy("fp8", keep_bf16=LIGHTRICKS_KEEP_BF16),
    "int8 (default keep-list)": QuantPolicy.from_flags("int8"),
}


def kernel_class(name: str) -> str:
    n = name.lower()
    if any(k in n for k in ("flash", "fmha", "attention", "sdpa", "cudnn_generated_fort_native_sdpa")):
        return "attention"
    if any(k in n for k in ("gemm", "xmma", "nvjet", "cutlass", "matmul", "_mm_", "s16816", "wgmma")):
        if "e4m3" in n or "f8" in n or "fp8" in n:
            return "matmul fp8"
        if "i8" in n or "int8" in n or "imma" in n:
            return "matmul int8"
        return "matmul bf16"
    return "other (elementwise, norms, copies)"


def profile_step(transformer, guidance, setup, contexts, sigmas) -> dict:
    from torch.profiler import ProfilerActivity, profile

    with torch.inference_mode(), profile(activities=[ProfilerActivity.CUDA]) as prof:
        guided_prediction(transformer, guidance, setup.video_state, setup.audio_state, contexts, sigmas[0])
        torch.cuda.synchronize()
    by_class: dict[str, float] = defaultdict(float)
    count = 0
    for evt in prof.events():
        if evt.device_type == torch.autograd.DeviceType.CUDA:
            by_class[kernel_class(evt.name)] += evt.device_time_total / 1e6
            count += 1
    return {"gpu_seconds_by_class": dict(by_class), "kernels": count, "gpu_seconds": sum(by_class.values())}


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    n = min(a.shape[-1], b.shape[-1])
    a, b = a[..., :n].float(), b[..., :n].float()
    return float((a - b).norm() / b.norm().clamp_min(1e-12))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--checkpoint-path", type=Path, required=True)
    ap.add_argument("--gemma-root", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--seeds", type=int, nargs="+", default=[10, 11, 12])
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--device", default="cuda", help="cpu runs a self-check of this script on a tiny model")
    args = ap.parse_args()
    dev = torch.device(args.device)
    dtype = torch.bfloat16 if dev.type == "cuda" else torch.float32
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    request = GenerationRequest(prompt="A red kite dances over a windy beach at sunset while waves crash.",
                                num_inference_steps=args.steps)  # fmt: skip
    gen = Generator(args.checkpoint_path, args.gemma_root, RunSettings(device=str(dev), quantization="bf16"))
    contexts, _ = gen.runner.encode_text(gen.prepare(request))
    gen.close()
    guidance = Guidance.preset_named("cfg")
    sigmas = official_sigmas(args.steps, dev)
    shape = pixel_shape(request.width, request.height, request.num_frames, request.frame_rate)
    audio_dec = loaders.load_audio_decoder(args.checkpoint_path, dev, dtype)
    vocoder = loaders.load_vocoder(args.checkpoint_path, dev, dtype)
    results: dict[str, dict] = {}
    reference: dict[int, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}
    for label, policy in VARIANTS.items():
        if dev.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        t = time.perf_counter()
        transformer = loaders.load_transformer(args.checkpoint_path, dev, dtype, policy)
        sync()
        entry: dict = {"load_seconds": time.perf_counter() - t}
        if dev.type == "cuda":
            entry["weights_bytes"] = torch.cuda.memory_allocated()
        if transformer.quant_report is not None:
            entry["quantization"] = transformer.quant_report.lines()
        per_seed = []
        for seed in args.seeds:
            g = torch.Generator(device=dev).manual_seed(seed)
            setup = noised_latents(shape, g, dev, dtype)
            sync()
            t = time.perf_counter()
            v, a = denoise(transformer, setup.video_state, setup.audio_state, sigmas, contexts, guidance)
            sync()
            seconds = time.perf_counter() - t
            video, audio = final_latents(setup, v, a)
            wave, _ = decode_audio(audio, audio_dec, vocoder)
            row = {"seed": seed, "seconds_per_step": seconds / args.steps,
                   "finite": bool(torch.isfinite(video).all() and torch.isfinite(audio).all())}  # fmt: skip
            if label == "bf16":
                reference[seed] = (video.cpu(), audio.cpu(), wave.cpu())
            else:
                rv, ra, rw = reference[seed]
                row.update(video_rel_err=rel(video.cpu(), rv), audio_rel_err=rel(audio.cpu(), ra),
                           waveform_rel_err=rel(wave.cpu(), rw))  # fmt: skip
            per_seed.append(row)
            print(label, row, flush=True)
        entry["seeds"] = per_seed
        entry["seconds_per_step"] = sum(r["seconds_per_step"] for r in per_seed) / len(per_seed)
        if dev.type == "cuda":
            entry["peak_bytes"] = torch.cuda.max_memory_allocated()
            entry["profile_one_step"] = profile_step(transformer, guidance, setup, contexts, sigmas)
        for key in ("video_rel_err", "audio_rel_err", "waveform_rel_err"):
            vals = [r[key] for r in per_seed if key in r]
            if vals:
                entry[key + "_mean"] = sum(vals) / len(vals)
                entry[key + "_max"] = max(vals)
        results[label] = entry
        print(label, {k: v for k, v in entry.items() if k not in ("seeds", "quantization")}, flush=True)
        del transformer
        gc.collect()
        if dev.type == "cuda":
            torch.cuda.empty_cache()
    bf16 = results["bf16"]["seconds_per_step"]
    for entry in results.values():
        entry["speedup_vs_bf16"] = bf16 / entry["seconds_per_step"]
    args.out.write_text(json.dumps({"request": request.to_dict(), "seeds": args.seeds, "variants": results},
                                   indent=2, default=str))  # fmt: skip


if __name__ == "__main__":
    main()
