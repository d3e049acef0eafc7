"""The decode stage on its own (issue 6): video VAE, audio decoder + vocoder, serial vs overlapped, encoding apart.

Loads only the video decoder, the audio decoder and the vocoder from the checkpoint (no transformer, no Gemma),
draws random latents of each case's shape and takes the tiles the planner picks for each budget (the budget is
also enforced as the run would: ``set_per_process_memory_fraction`` on a discrete GPU). Per case, after one
untimed warm-up of everything, ``--repeats`` timings of:
  video      the tiled video decode alone, chunks copied to the host as the stage does;
  audio      audio decoder + vocoder alone;
  serial     audio, then video (what every peer does);
  overlapped ``decode_overlapped``: audio on its own CUDA stream beside the video (the stage, no encoding);
  encode     H.264 + AAC of the decoded clip alone (``write_mp4`` from memory);
  stage      the overlapped decode streaming into the MP4 writer, audio handed over late (the pipeline's stage).
The two encoding modes are CPU-bound and slow at 1280x704 (seconds): they run ``--encode-repeats`` times with
no warm-up. Each measurement syncs the device before reading the clock and records the allocator's peak and
NVML's used memory. Target: overlapped <= 1.1x video alone. Writes JSON to --out, one summary line per case to stdout.
Usage (GPU box):  PYTHONPATH=src python bench/decode_bench.py --checkpoint-path F --out R.json
CPU check:        ... --device cpu --sizes 128x64x17 --repeats 1
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

import ltx2_edge  # noqa: F401  (torchaudio placeholder before ltx_core)
from ltx2_edge.checkpoint.header import read_header
from ltx2_edge.memory import runtime
from ltx2_edge.models import loaders
from ltx2_edge.mp4.mux import LateAudio, write_mp4
from ltx2_edge.pipeline import default_dtype
from ltx2_edge.plan.budget import GiB
from ltx2_edge.plan.plan_types import PlanRequest
from ltx2_edge.plan.planner import plan_decode
from ltx2_edge.report import device_info, versions
from ltx2_edge.stages.decode import decode_overlapped
from ltx2_edge.stages.decode_audio import decode_audio
from ltx2_edge.stages.decode_video import decode_video
from ltx2_edge.stages.latents import VIDEO_LATENT_CHANNELS, VIDEO_SCALE_FACTORS, pixel_shape

TARGET = 1.1  # overlapped wall time over video alone
MODES = ("video", "audio", "serial", "overlapped", "encode", "stage")


def _size(text: str) -> tuple[int, int, int]:
    """WxHxF, e.g. 512x288x97."""
    try:
        w, h, f = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"size {text!r}: expected WIDTHxHEIGHTxFRAMES, e.g. 512x288x97") from None
    return w, h, f


class Case:
    """One size at one budget: its latents, tiling and the timed modes."""

    def __init__(self, args: argparse.Namespace, decoders: tuple, size: tuple[int, int, int], budget_gib: float):
        from ltx_core.types import AudioLatentShape, VideoLatentShape

        self.dev, self.dtype, self.fps = args.device, args.dtype, args.fps
        self.video_decoder, self.audio_decoder, self.vocoder = decoders
        w, h, f = size
        self.label = f"{w}x{h}x{f}"
        self.budget = runtime.budget_for(self.dev, int(budget_gib * GiB), "auto", unified=False)
        profile, _ = runtime.device_profile(self.dev)
        self.runtime_bytes = profile.runtime_overhead_bytes
        self.plan = plan_decode(args.header, PlanRequest(w, h, f, self.fps, 1), self.budget, profile)
        self.tiling = runtime.tiling_config(self.plan.tiles)
        shape = pixel_shape(w, h, f, self.fps)
        g = torch.Generator(device=self.dev).manual_seed(args.seed)
        video = VideoLatentShape.from_pixel_shape(shape, VIDEO_LATENT_CHANNELS, VIDEO_SCALE_FACTORS).to_torch_shape()
        audio = AudioLatentShape.from_video_pixel_shape(shape).to_torch_shape()
        self.video = torch.randn(video, generator=g, device=self.dev, dtype=self.dtype)
        self.audio = torch.randn(audio, generator=g, device=self.dev, dtype=self.dtype)
        self.out_dir = Path(tempfile.mkdtemp(prefix="decode-bench-"))
        self.info: dict[str, Any] = {}

    # ---- the modes: each returns extra figures for the record ----
    def video_alone(self) -> dict:
        frames = sum(c.cpu().shape[0] for c in decode_video(self.video, self.video_decoder, None, self.tiling))
        return {"frames": frames}

    def audio_alone(self) -> dict:
        waveform, rate = decode_audio(self.audio, self.audio_decoder, self.vocoder)
        return {"samples": int(waveform.shape[1]), "sample_rate": rate}

    def serial(self) -> dict:
        return {**self.audio_alone(), **self.video_alone()}

    def _overlapped(self) -> tuple[list[torch.Tensor], Any]:
        chunks, audio = decode_overlapped(self.video, self.video_decoder, None, self.tiling, self.audio,
                                          self.audio_decoder, self.vocoder)  # fmt: skip
        return list(chunks), audio.result()

    def overlapped(self) -> dict:
        chunks, result = self._overlapped()
        self.clip = (chunks, result.waveform, result.sample_rate)  # kept for "encode"
        return {"chunks": len(chunks), "audio_seconds": result.seconds, "audio_hidden_seconds": result.hidden_seconds,
                "audio_after_video_seconds": result.after_video_seconds}  # fmt: skip

    def encode(self) -> dict:
        chunks, waveform, rate = self.clip
        stats = write_mp4(self.out_dir / "encode.mp4", chunks, waveform, rate, self.fps, 2, {}, overwrite=True)
        return {"video_encode_s": stats.video_encode_s, "audio_encode_s": stats.audio_encode_s,
                "file_bytes": stats.file_bytes}  # fmt: skip

    def stage(self) -> dict:
        chunks, audio = decode_overlapped(self.video, self.video_decoder, None, self.tiling, self.audio,
                                          self.audio_decoder, self.vocoder)  # fmt: skip
        late = LateAudio(get=lambda: audio.result().waveform, ready=audio.done)
        stats = write_mp4(self.out_dir / "stage.mp4", chunks, late, audio.sample_rate, self.fps, 2, {}, overwrite=True)
        return {"video_encode_s": stats.video_encode_s, "frames": stats.frames, "audio_samples": stats.audio_samples}


def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def measure(dev: torch.device, fn: Callable[[], dict], repeats: int, warm_up: bool) -> dict:
    """``repeats`` timed runs of ``fn`` (after an untimed one if ``warm_up``); seconds, median, peak memory, NVML."""
    if dev.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(dev)
    try:
        if warm_up:
            fn()  # kernels chosen, allocator blocks cached
        seconds, extra = [], {}
        for _ in range(repeats):
            _sync(dev)
            start = time.perf_counter()
            extra = fn()
            _sync(dev)
            seconds.append(time.perf_counter() - start)
    except torch.cuda.OutOfMemoryError as exc:  # a planning error: recorded for this mode, the others still run
        return {"error": f"CUDA out of memory: {str(exc).splitlines()[0]}"}
    record = {"seconds": seconds, "median": statistics.median(seconds), "min": min(seconds), **extra}
    if dev.type == "cuda":
        record.update(peak_allocated_bytes=int(torch.cuda.max_memory_allocated(dev)),
                      peak_reserved_bytes=int(torch.cuda.max_memory_reserved(dev)),
                      nvml_used_bytes=runtime.nvml_used_bytes(dev))  # fmt: skip
    return record


def run_case(args: argparse.Namespace, decoders: tuple, size: tuple[int, int, int], budget_gib: float) -> dict:
    """Every mode for one size at one budget; the record of the case."""
    case = Case(args, decoders, size, budget_gib)
    enforcement = runtime.enforce_device_budget(args.device, case.budget, case.runtime_bytes)
    fns = {"video": case.video_alone, "audio": case.audio_alone, "serial": case.serial,
           "overlapped": case.overlapped, "encode": case.encode, "stage": case.stage}  # fmt: skip
    record: dict[str, Any] = {
        "size": case.label, "fps": args.fps, "budget_gib": budget_gib, "enforcement": enforcement,
        "tiling": case.plan.tiles.describe(), "tiles": case.plan.tiles.tiles,
        "predicted_peak_bytes": case.plan.predicted_peak_bytes, "predicted_seconds": case.plan.predicted_seconds,
    }  # fmt: skip
    for mode in MODES:
        if mode == "encode" and "error" in record["overlapped"]:
            record[mode] = {"error": "no decoded clip to encode: the overlapped decode failed"}
            continue
        encoding = mode in ("encode", "stage")
        record[mode] = measure(args.device, fns[mode], args.encode_repeats if encoding else args.repeats, not encoding)
    for path in case.out_dir.iterdir():
        path.unlink()
    case.out_dir.rmdir()
    video, overlapped = record["video"].get("median"), record["overlapped"].get("median")
    if video and overlapped:
        record["overlapped_over_video"] = overlapped / video
        record["target_met"] = overlapped <= TARGET * video
    peaks = [r["peak_allocated_bytes"] for r in (record[m] for m in MODES) if "peak_allocated_bytes" in r]
    if peaks:
        record["within_budget"] = max(peaks) <= budget_gib * GiB
    return record


def summary(rec: dict) -> str:
    """One line per case."""

    def t(mode: str) -> str:
        r = rec[mode]
        return f"{r['median']:.3f}" if "median" in r else "OOM"

    line = (f"{rec['size']} @{rec['budget_gib']:g}GiB {rec['tiling']}: video {t('video')} s, audio {t('audio')} s, "
            f"serial {t('serial')} s, overlapped {t('overlapped')} s")  # fmt: skip
    if "overlapped_over_video" in rec:
        verdict = "met" if rec["target_met"] else "MISSED"
        ov = rec["overlapped"]
        line += (f" ({rec['overlapped_over_video']:.2f}x video, target <= {TARGET}x {verdict}; audio hidden "
                 f"{ov['audio_hidden_seconds']:.3f} of {ov['audio_seconds']:.3f} s)")  # fmt: skip
    enc = rec["encode"]
    if "median" in enc:
        line += f"; encode {enc['median']:.2f} s (H.264 {enc['video_encode_s']:.2f}, AAC {enc['audio_encode_s']:.2f})"
    line += f"; stage with encoding {t('stage')} s"
    peak = max((rec[m].get("peak_allocated_bytes", 0) for m in MODES), default=0)
    nvml = max((rec[m].get("nvml_used_bytes") or 0 for m in MODES), default=0)
    if peak:
        line += (f"; peak {peak / GiB:.2f} GiB (predicted {rec['predicted_peak_bytes'] / GiB:.2f}), "
                 f"NVML {nvml / GiB:.2f} GiB")  # fmt: skip
    return line


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint-path", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument(
        "--sizes", type=lambda s: [_size(v) for v in s.split(",")], default=[(512, 288, 97), (1280, 704, 121)]
    )
    ap.add_argument("--budgets", type=lambda s: [float(v) for v in s.split(",")], default=[32.0, 16.0], help="GiB")
    ap.add_argument("--fps", type=float, default=24.0)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--encode-repeats", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    args.device = torch.device(args.device)
    args.dtype = default_dtype(args.device)
    args.header = read_header(args.checkpoint_path)
    ckpt, dev, dt = args.checkpoint_path, args.device, args.dtype
    load: dict[str, float] = {}
    decoders = []
    for name, loader in (("video_decoder", loaders.load_video_decoder), ("audio_decoder", loaders.load_audio_decoder),
                         ("vocoder", loaders.load_vocoder)):  # fmt: skip
        start = time.perf_counter()
        decoders.append(loader(ckpt, dev, dt))
        _sync(dev)
        load[name] = time.perf_counter() - start
    result: dict[str, Any] = {"device": device_info(dev), "versions": versions(), "checkpoint": str(ckpt),
                              "dtype": str(dt).removeprefix("torch."), "load_seconds": load, "cases": []}  # fmt: skip
    with torch.inference_mode():
        for size in args.sizes:
            for budget in args.budgets:
                rec = run_case(args, tuple(decoders), size, budget)
                result["cases"].append(rec)
                print(summary(rec), flush=True)
                args.out.write_text(json.dumps(result, indent=1, default=str))  # partial results survive a kill
    return result


if __name__ == "__main__":
    main()
