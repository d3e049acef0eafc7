"""The types a run hands around: the denoising passes ``Generator.passes`` derives from a request, the final
latents, the ``Result`` of ``Generator.generate``, and the default device and dtype.

Plain data and two one-line defaults: this module must never load weights, read files or decide anything about a
clip (the request and the plan do that).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from ltx2_edge.guidance import Guidance
from ltx2_edge.inputs import LoraSpec
from ltx2_edge.report import RunReport


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


@dataclass(frozen=True)
class DenoisePass:
    """One denoising stage of a run, as ``Generator.passes`` derives it from the request.

    ``stage``: its plan stage, ``denoise`` (the only one, or stage 1 at half the output size) or ``denoise_2``
    (stage 2 of the two-stage pipelines: it starts from the upsampled latent noised to its first sigma, with one
    unguided forward per step). ``loras``: fused into the weights this pass loads (stage 2 of two-stage adds the
    distilled LoRA). ``images``: the conditioning images, fitted to this pass's size.
    """

    stage: str
    width: int
    height: int
    num_frames: int
    frame_rate: float
    schedule: str
    steps: int
    guidance: Guidance
    loras: tuple[LoraSpec, ...]
    images: tuple = ()

    @property
    def from_upsampled(self) -> bool:
        return self.stage == "denoise_2"


@dataclass
class Result:
    """What ``Generator.generate`` returns."""

    output_path: Path
    report_path: Path
    report: RunReport
    latents: Latents
