"""Runs Lightricks' ltx-pipelines 1.0.0 TI2VidOneStagePipeline on W1 and times its stages (benchmark peer).

Stage times come from wrapping the functions the pipeline calls (prompt encoding, denoising, video and audio
decoding) with CUDA-synchronised timers; peak memory is the allocator's. Writes a JSON record to --out.
Usage: python bench/peer_official.py --checkpoint-path F --gemma-root D --out result.json [--guidance cfg|full]
       [--quantization fp8-cast] [--device-cap-gib 32]
"""

from __future__ import annotations

import argparse
import json
import time
import traceback

import torch

import ltx2_edge  # noqa: F401  (torchaudio placeholder where torchaudio is missing)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--checkpoint-path", required=True)
    ap.add_argument("--gemma-root", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--guidance", choices=("cfg", "full"), default="cfg")
    ap.add_argument("--quantization", choices=("none", "fp8-cast"), default="none")
    ap.add_argument("--device-cap-gib", type=float, default=None)
    ap.add_argument("--steps", type=int, default=20)
    args = ap.parse_args()

    from ltx_core.components.guiders import MultiModalGuiderParams
    from ltx_pipelines import ti2vid_one_stage as mod
    from ltx_pipelines.utils.constants import DEFAULT_NEGATIVE_PROMPT, LTX_2_PARAMS

    if args.device_cap_gib:
        total = torch.cuda.get_device_properties(0).total_memory
        torch.cuda.set_per_process_memory_fraction(args.device_cap_gib * 1024**3 / total)

    times: dict[str, float] = {}
    peaks: dict[str, int] = {}

    def timed(name: str, fn):
        def wrapper(*a, **k):
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            t = time.perf_counter()
            out = fn(*a, **k)
            if name == "decode_video":  # a generator: drain it inside the timer
                out = [c for c in out]
            torch.cuda.synchronize()
            times[name] = times.get(name, 0.0) + time.perf_counter() - t
            peaks[name] = max(peaks.get(name, 0), torch.cuda.max_memory_allocated())
            return out

        return wrapper

    mod.encode_prompts = timed("text_encode", mod.encode_prompts)
    mod.denoise_audio_video = timed("denoise", mod.denoise_audio_video)
    mod.vae_decode_video = timed("decode_video", mod.vae_decode_video)
    mod.vae_decode_audio = timed("decode_audio", mod.vae_decode_audio)

    quant = None
    if args.quantization == "fp8-cast":
        from ltx_core.quantization import QuantizationPolicy

        quant = QuantizationPolicy.fp8_cast()
    v, a = LTX_2_PARAMS.video_guider_params, LTX_2_PARAMS.audio_guider_params
    if args.guidance == "cfg":
        v = MultiModalGuiderParams(
            cfg_scale=v.cfg_scale,
            stg_scale=0.0,
            rescale_scale=v.rescale_scale,
            modality_scale=1.0,
            skip_step=0,
            stg_blocks=v.stg_blocks,
        )
        a = MultiModalGuiderParams(
            cfg_scale=a.cfg_scale,
            stg_scale=0.0,
            rescale_scale=a.rescale_scale,
            modality_scale=1.0,
            skip_step=0,
            stg_blocks=a.stg_blocks,
        )
    record: dict[str, object] = {
        "system": "ltx-pipelines 1.0.0 TI2VidOneStagePipeline",
        "guidance": args.guidance,
        "quantization": args.quantization,
        "device_cap_gib": args.device_cap_gib,
    }
    start = time.perf_counter()
    try:
        pipe = mod.TI2VidOneStagePipeline(args.checkpoint_path, args.gemma_root, loras=[], quantization=quant)
        with torch.inference_mode():
            pipe(
                prompt="A red kite dances over a windy beach at sunset while waves crash and gulls call.",
                negative_prompt=DEFAULT_NEGATIVE_PROMPT,
                seed=10,
                height=288,
                width=512,
                num_frames=97,
                frame_rate=24.0,
                num_inference_steps=args.steps,
                video_guider_params=v,
                audio_guider_params=a,
                images=[],
            )
        record["status"] = "ok"
    except Exception as exc:  # the peer may run out of memory under a cap: that is a result, recorded
        record["status"] = f"failed: {type(exc).__name__}: {str(exc)[:400]}"
        record["traceback_tail"] = traceback.format_exc()[-1500:]
    record["total_seconds"] = time.perf_counter() - start
    record["stage_seconds"] = times
    record["stage_peak_bytes"] = peaks
    record["peak_allocated_bytes"] = torch.cuda.max_memory_allocated()
    if "denoise" in times:
        record["seconds_per_step"] = times["denoise"] / args.steps
    print(json.dumps(record, indent=2))
    with open(args.out, "w") as f:
        json.dump(record, f, indent=2)


if __name__ == "__main__":
    main()
