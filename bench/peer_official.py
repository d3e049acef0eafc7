"""Runs Lightricks' ltx-pipelines 1.0.0 TI2VidOneStagePipeline on W1 and times its stages (benchmark peer).

Stage times come from wrapping what the pipeline calls with CUDA-synchronised timers (``StageClock`` from
peer_diffusers.py, so both peers are timed the same way): prompt encoding (Gemma load, forward, embeddings
processor), the transformer's load, the denoising loop, the decoders' loads and decoding, and the MP4 encoding
its own CLI does after the call. Peak memory is the allocator's, per stage. A failure (an out-of-memory under
``--device-cap-gib``, say) is the result: recorded with the stage it happened in and a one-line error.
It never changes what the pipeline computes. Writes a JSON record to --out.
Usage: python bench/peer_official.py --checkpoint-path F --gemma-root D --out result.json [--guidance cfg|full]
       [--quantization fp8-cast] [--device-cap-gib 32]
"""

from __future__ import annotations

import argparse
import json
import resource
import time
import traceback
from pathlib import Path
from typing import Any

import torch

import ltx2_edge  # noqa: F401  (torchaudio placeholder where torchaudio is missing)
from peer_diffusers import PROMPT, StageClock, one_line

GiB = 1024**3


def guider_params(guidance: str) -> tuple[Any, Any]:
    """Video and audio guider parameters: the official defaults, or CFG only (STG off, no modality isolation)."""
    from ltx_core.components.guiders import MultiModalGuiderParams
    from ltx_pipelines.utils.constants import LTX_2_PARAMS

    v, a = LTX_2_PARAMS.video_guider_params, LTX_2_PARAMS.audio_guider_params
    if guidance == "full":
        return v, a
    return tuple(
        MultiModalGuiderParams(
            cfg_scale=p.cfg_scale,
            stg_scale=0.0,
            rescale_scale=p.rescale_scale,
            modality_scale=1.0,
            skip_step=0,
            stg_blocks=p.stg_blocks,
        )
        for p in (v, a)
    )


def run(args: argparse.Namespace, record: dict[str, Any], clock: StageClock) -> None:
    """Construct the pipeline, run W1 and encode the MP4; a failure leaves what was measured in ``clock``."""
    from ltx_pipelines import ti2vid_one_stage as mod
    from ltx_pipelines.utils.constants import DEFAULT_NEGATIVE_PROMPT
    from ltx_pipelines.utils.media_io import encode_video

    if args.device_cap_gib is not None:
        total = torch.cuda.get_device_properties(0).total_memory
        torch.cuda.set_per_process_memory_fraction(args.device_cap_gib * GiB / total, 0)
    quant = None
    if args.quantization == "fp8-cast":
        from ltx_core.quantization import QuantizationPolicy

        quant = QuantizationPolicy.fp8_cast()
    video_params, audio_params = guider_params(args.guidance)
    started = time.perf_counter()
    pipe = mod.TI2VidOneStagePipeline(args.checkpoint_path, args.gemma_root, loras=[], quantization=quant)
    clock.wrap(mod, "encode_prompts", "text_encode")  # loads Gemma and the embeddings processor inside
    clock.wrap(pipe.model_ledger, "video_encoder", "other")  # loaded for image conditioning, even without images
    clock.wrap(pipe.model_ledger, "transformer", "denoise_load")
    clock.wrap(mod, "denoise_audio_video", "denoise_steps")
    for loader in ("video_decoder", "audio_decoder", "vocoder"):
        clock.wrap(pipe.model_ledger, loader, "decode")
    clock.wrap(mod, "vae_decode_video", "decode", drain=True)  # a generator: decoding happens while iterated
    clock.wrap(mod, "vae_decode_audio", "decode")
    with torch.inference_mode():
        video, audio = pipe(
            prompt=PROMPT,
            negative_prompt=DEFAULT_NEGATIVE_PROMPT,
            seed=10,
            height=288,
            width=512,
            num_frames=97,
            frame_rate=24.0,
            num_inference_steps=args.steps,
            video_guider_params=video_params,
            audio_guider_params=audio_params,
            images=[],
        )
        with clock.stage("mux"):
            encode_video(video=iter(video), fps=24, audio=audio, output_path=str(args.mp4), video_chunks_number=1)
    record["total_seconds"] = time.perf_counter() - started
    record["finite"] = bool(torch.isfinite(audio.waveform).all())
    record["mp4_bytes"] = args.mp4.stat().st_size


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint-path", required=True)
    ap.add_argument("--gemma-root", required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--mp4", type=Path, default=Path("/tmp/peer_official.mp4"))
    ap.add_argument("--guidance", choices=("cfg", "full"), default="cfg")
    ap.add_argument("--quantization", choices=("none", "fp8-cast"), default="none")
    ap.add_argument("--device-cap-gib", type=float, default=None)
    ap.add_argument("--steps", type=int, default=20)
    args = ap.parse_args()
    from importlib.metadata import version

    cuda = torch.cuda.is_available()
    record: dict[str, Any] = {
        "system": "ltx-pipelines 1.0.0 TI2VidOneStagePipeline",
        "guidance": args.guidance,
        "quantization": args.quantization,
        "device_cap_gib": args.device_cap_gib,
        "steps": args.steps,
        "versions": {
            "ltx-pipelines": version("ltx-pipelines"),
            "ltx-core": version("ltx-core"),
            "transformers": version("transformers"),
            "torch": torch.__version__,
        },
        "device_name": torch.cuda.get_device_name(0) if cuda else "cpu",
    }
    clock = StageClock(torch.device("cuda" if cuda else "cpu"))
    try:
        run(args, record, clock)
        record["status"] = "ok"
    except Exception as exc:  # an OOM under the cap is a result: record where, with the error, never hide it
        record["status"] = "failed"
        record["failed_stage"] = clock.current or "outside the timed stages"
        record["error"] = one_line(exc)
        record["traceback_tail"] = traceback.format_exc()[-1500:]
    sec = clock.seconds
    record["stage_seconds_raw"], record["stage_peak_bytes"] = sec, clock.peaks
    load, steps = sec.get("denoise_load"), sec.get("denoise_steps")
    record["stages"] = {
        "text_encode": sec.get("text_encode"),
        "denoise": (load or 0.0) + (steps or 0.0) or None,
        "decode": sec.get("decode"),
        "mux": sec.get("mux"),
        "other": sec.get("other"),
    }
    record["denoise_load_seconds"], record["denoise_steps_seconds"] = load, steps
    record["peak_allocated_bytes"] = max(clock.peaks.values()) if clock.peaks else None
    record["peak_host_rss_self_bytes"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB
    print(json.dumps({k: v for k, v in record.items() if k != "traceback_tail"}, indent=2))
    args.out.write_text(json.dumps(record, indent=2))


if __name__ == "__main__":
    main()
