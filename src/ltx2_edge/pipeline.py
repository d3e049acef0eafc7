"""Runs one generation: text encode -> denoise -> decode video + audio -> mux, each stage in a measured scope.

``Generator`` is long-lived: it validates its files once (headers only), and with ``keep_resident`` it keeps
each stage's modules between calls, so a robot or an installation making many clips does not reload tens of
GB per clip. Without it, a stage's weights exist only while the stage runs (staged residency). What to run
comes in as a ``GenerationRequest``; this module decides nothing about the clip itself.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from ltx2_edge.atomic import check_output_path
from ltx2_edge.checkpoint.validate import inspect_checkpoint, inspect_gemma_folder
from ltx2_edge.guidance import Guidance
from ltx2_edge.models import loaders
from ltx2_edge.progress import Progress
from ltx2_edge.quant.policy import QuantPolicy, resolve_precision
from ltx2_edge.report import RunReport, device_info, versions
from ltx2_edge.request import GenerationRequest
from ltx2_edge.stages.decode_audio import decode_audio
from ltx2_edge.stages.decode_video import decode_video
from ltx2_edge.stages.denoise import Contexts, denoise, official_sigmas
from ltx2_edge.stages.latents import final_latents, noised_latents, pixel_shape, video_token_count
from ltx2_edge.stages.mux import mp4_metadata, write_mp4
from ltx2_edge.stages.text_encode import TextEncoder


def default_device() -> torch.device:
    """The first CUDA device if there is one, else the CPU."""
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


def default_dtype(device: torch.device) -> torch.dtype:
    """bf16 on GPUs (the checkpoint's dtype); float32 on the CPU, where bf16 matmuls are slow and inexact."""
    return torch.bfloat16 if device.type == "cuda" else torch.float32


@dataclass
class Latents:
    """Final latents of a run, before decoding, and the generator state the decoder continues from."""

    video: torch.Tensor
    audio: torch.Tensor
    generator: torch.Generator


@dataclass
class Result:
    """What ``Generator.generate`` returns."""

    output_path: Path
    report_path: Path
    report: RunReport
    latents: Latents


class Generator:
    """Keeps the model files (and, with ``keep_resident``, the loaded stages) for many generations."""

    def __init__(
        self,
        checkpoint_path: str | Path,
        gemma_root: str | Path,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        keep_resident: bool = False,
        guidance_mode: str = "batched",
        quantization: str = "auto",
        keep_bf16: tuple[str, ...] = (),
        quantize_all: bool = False,
        progress: Progress | None = None,
    ) -> None:
        self.checkpoint = inspect_checkpoint(Path(checkpoint_path))
        self.gemma = inspect_gemma_folder(Path(gemma_root))
        self.device = torch.device(device) if device is not None else default_device()
        self.dtype = dtype or default_dtype(self.device)
        self.keep_resident = keep_resident
        self.guidance_mode = guidance_mode
        self.progress = progress or Progress()
        precision, note = resolve_precision(quantization, self.device)
        self.policy = QuantPolicy.from_flags(precision, tuple(keep_bf16), quantize_all)
        self.notes = [note] if note else []
        for line in self.notes:
            self.progress.note(line)
        self._text = TextEncoder(
            self.gemma.root,
            self.checkpoint.path,
            device=self.device,
            dtype=self.dtype,
            keep_resident=keep_resident,
            policy=self.policy,
        )
        self._resident: dict[str, torch.nn.Module] = {}

    # ---- checks that need the tokenizer or the file system, still before any weight is read ----
    def check(self, request: GenerationRequest, output_path: Path | None, overwrite: bool) -> None:
        """Raise ``RequestError`` for a prompt over the context or a bad output path."""
        self._text.tokenizer.check(request.prompt, "prompt")
        self._text.tokenizer.check(request.negative_prompt, "negative_prompt")
        if output_path is not None:
            check_output_path(output_path, overwrite)

    # ---- stages ----
    def _module(self, name: str, load: Callable[[], torch.nn.Module]) -> torch.nn.Module:
        if name in self._resident:
            return self._resident[name]
        module = load()
        if self.keep_resident:
            self._resident[name] = module
        return module

    def _release(self) -> None:
        """Free what a stage held (when not kept resident) so the next stage finds the memory back."""
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    def encode_text(self, request: GenerationRequest, details: dict | None = None) -> Contexts:
        """Prompt and negative prompt -> video and audio contexts. ``details`` receives per-part seconds."""

        def part_done(part: str, seconds: float) -> None:
            if details is not None:
                details[f"{part}_seconds"] = round(seconds, 4)

        pos, neg = self._text.encode([request.prompt, request.negative_prompt], progress=part_done)
        return Contexts(
            video=pos.video_encoding,
            audio=pos.audio_encoding,
            video_negative=neg.video_encoding,
            audio_negative=neg.audio_encoding,
        )

    def denoise(self, request: GenerationRequest, contexts: Contexts, details: dict | None = None) -> Latents:
        """Noise from the seed, then all denoising steps; returns the final latents.

        ``details`` receives the weight-load seconds and each step's seconds (loading is not denoising).
        """
        details = {} if details is None else details
        generator = torch.Generator(device=self.device).manual_seed(request.seed)
        setup = noised_latents(
            pixel_shape(request.width, request.height, request.num_frames, request.frame_rate),
            generator,
            self.device,
            self.dtype,
        )
        started = time.perf_counter()
        transformer = self._module(
            "transformer", lambda: loaders.load_transformer(self.checkpoint.path, self.device, self.dtype, self.policy)
        )
        self._sync()
        details["load_seconds"] = round(time.perf_counter() - started, 4)
        quant_report = getattr(transformer, "quant_report", None)
        if quant_report is not None:
            details["quantization"] = quant_report.lines()
        guidance = Guidance.preset_named(request.guidance, mode=self.guidance_mode)  # type: ignore[arg-type]
        sigmas = official_sigmas(request.num_inference_steps, self.device)
        step_seconds: list[float] = details.setdefault("step_seconds", [])
        started = time.perf_counter()

        def on_step(i: int, total: int, seconds: float) -> None:
            step_seconds.append(round(seconds, 4))
            self.progress.step(i, total, seconds, time.perf_counter() - started)

        sync = torch.cuda.synchronize if self.device.type == "cuda" else None
        video, audio = denoise(
            transformer, setup.video_state, setup.audio_state, sigmas, contexts, guidance, on_step=on_step,
            synchronize=sync,
        )  # fmt: skip
        details["steps_seconds"] = round(sum(step_seconds), 4)
        details["seconds_per_step"] = round(sum(step_seconds) / len(step_seconds), 4)
        del transformer
        self._release()
        v, a = final_latents(setup, video, audio)
        return Latents(video=v, audio=a, generator=generator)

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def decode_audio(self, latents: Latents) -> tuple[torch.Tensor, int]:
        """Final audio latent -> waveform [channels, samples] (CPU float32) and its sample rate."""
        decoder = self._module(
            "audio_decoder", lambda: loaders.load_audio_decoder(self.checkpoint.path, self.device, self.dtype)
        )
        vocoder = self._module("vocoder", lambda: loaders.load_vocoder(self.checkpoint.path, self.device, self.dtype))
        out = decode_audio(latents.audio, decoder, vocoder)
        del decoder, vocoder
        self._release()
        return out

    def decode_video(self, latents: Latents) -> Iterator[torch.Tensor]:
        """Final video latent -> uint8 frame chunks [f, h, w, 3] on the CPU."""
        decoder = self._module(
            "video_decoder", lambda: loaders.load_video_decoder(self.checkpoint.path, self.device, self.dtype)
        )
        for chunk in decode_video(latents.video, decoder, latents.generator):
            yield chunk.cpu()
        del decoder
        self._release()

    # ---- the whole run ----
    def generate(self, request: GenerationRequest, output_path: str | Path, overwrite: bool = False) -> Result:
        """Generate one clip into ``output_path`` (MP4, written atomically) and its ``.report.json``."""
        out = Path(output_path)
        self.check(request, out, overwrite)
        report = RunReport(
            request=request.to_dict(), device=device_info(self.device), versions=versions(), output_path=str(out)
        )
        report.extra["model"] = {
            "checkpoint": str(self.checkpoint.path),
            "model_version": self.checkpoint.model_version,
            "gemma_root": str(self.gemma.root),
            "dtype": str(self.dtype).removeprefix("torch."),
        }
        guidance = Guidance.preset_named(request.guidance, mode=self.guidance_mode)  # type: ignore[arg-type]
        report.extra["guidance"] = guidance.describe()
        report.extra["quantization"] = {"precision": self.policy.precision, "policy": self.policy.describe()}
        report.notes.extend(self.notes)
        start = time.perf_counter()
        dev = self.device
        weights = "bf16" if self.policy.precision == "bf16" else f"{self.policy.precision} Linears, keep-list bf16"

        self.progress.stage("text_encode", "Gemma 3 over prompt and negative prompt, then the connectors")
        with report.measure("text_encode", f"staged: Gemma language model only ({weights}), freed after", dev) as rec:
            contexts = self.encode_text(request, rec.details)
            rec.details["prompt_tokens"] = self._text.count_tokens(request.prompt)
        self.progress.done("text_encode", rec.seconds)

        tokens = video_token_count(request.width, request.height, request.num_frames)
        self.progress.stage(
            "denoise",
            f"{request.num_inference_steps} steps, {tokens} video tokens, {guidance.batch} guidance passes per forward",
        )
        with report.measure(
            "denoise",
            f"{weights}; guidance batched x{guidance.batch} in one forward per step"
            if guidance.mode == "batched"
            else f"{weights}; guidance passes run one by one",
            dev,
        ) as rec:
            latents = self.denoise(request, contexts, rec.details)
            rec.details.update(steps=request.num_inference_steps, video_tokens=tokens, passes=list(guidance.passes()))
        self.progress.done("denoise", rec.seconds)
        del contexts

        self.progress.stage("decode_audio", "audio VAE decoder + vocoder")
        with report.measure("decode_audio", "staged: decoder + vocoder loaded for this stage only", dev) as rec:
            waveform, sample_rate = self.decode_audio(latents)
            rec.details.update(sample_rate=sample_rate, channels=int(waveform.shape[0]), samples=int(waveform.shape[1]))
        self.progress.done("decode_audio", rec.seconds)

        self.progress.stage("decode_video+mux", "video VAE decoder, H.264 + AAC into the MP4")
        metadata = mp4_metadata({**request.to_dict(), "guidance": guidance.describe()}, self.checkpoint.model_version)
        with report.measure("decode_video+mux", "staged: video decoder for this stage only; untiled", dev) as rec:
            stats = write_mp4(
                out,
                self.decode_video(latents),
                waveform,
                sample_rate,
                request.frame_rate,
                request.audio_channels,
                metadata,
                overwrite,
            )
            rec.details.update(asdict(stats))
        self.progress.done("decode_video+mux", rec.seconds)

        report.total_seconds = time.perf_counter() - start
        report_path = out.with_suffix(".report.json")
        report.write(report_path)
        return Result(output_path=out, report_path=report_path, report=report, latents=latents)

    def close(self) -> None:
        """Release everything kept resident."""
        self._resident.clear()
        self._text.close()
        self._release()
