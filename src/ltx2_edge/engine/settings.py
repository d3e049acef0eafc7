"""``RunSettings``: every run-wide choice of a ``Generator`` (device, budget, quantization, acceleration, streaming),
frozen and validated once, when it is made.

The CLI builds one from its flags, the service from its command line, a library user by hand. Each field is
named for its CLI flag and a bad value is refused with a one-line ``RequestError`` naming that flag and what is
allowed, before any file is opened. This module must never look at the machine (which device exists, how much
memory it has): ``Generator`` resolves those when it starts.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path

from ltx2_edge.accel.compile_choice import COMPILE_MODES
from ltx2_edge.accel.settings import CUDA_GRAPH_MODES
from ltx2_edge.checkpoint.prequantized import PREQUANTIZED_MODES
from ltx2_edge.errors import RequestError
from ltx2_edge.memory.allocator import ALLOCATOR_MODES
from ltx2_edge.mp4.video_encoders import VIDEO_ENCODER_CHOICES
from ltx2_edge.plan.budget import DEFAULT_BUDGET_BYTES

QUANTIZATIONS: tuple[str, ...] = ("auto", "fp8", "int8", "bf16")
GUIDANCE_MODES: tuple[str, ...] = ("batched", "sequential")
DTYPES: tuple[str, ...] = ("bfloat16", "float32")
_DEVICE = re.compile(r"^(cpu|cuda(:\d{1,2})?)$")
# More blocks in flight than the transformer has (48) buys nothing and only takes slots from the budget.
MAX_PREFETCH_DEPTH = 47


@dataclass(frozen=True)
class RunSettings:
    """How a generator runs every request (the request says what to generate).

    ``device``: ``cpu``, ``cuda`` or ``cuda:N`` (None: the first GPU, else the CPU). ``dtype``: ``bfloat16`` or
    ``float32`` (None: bf16 on GPUs, float32 on the CPU). ``budget``: bytes of device memory (the one pool with
    ``unified`` or on Jetson); None: no budget. ``host_budget``: bytes, None, or ``"auto"`` (what the OS has free
    less a margin). ``keep_resident``: with no budget, keep every loaded part between stages and clips.
    ``guidance_mode``: ``batched`` (one forward per step) or ``sequential`` (the oracle's one pass at a time).
    ``spatial_upsampler_path``: the latent upsampler file for the two-stage pipelines. ``prequantized``: read the
    pre-quantized copies ``ltx2-edge quantize`` writes beside the checkpoint and Gemma folder (``auto``: when there;
    ``on``: refuse without them; ``off``: the originals; ``quant.prequantized``).
    """

    device: str | None = None
    dtype: str | None = None
    budget: int | None = DEFAULT_BUDGET_BYTES
    host_budget: int | None | str = "auto"
    unified: bool = False
    prefetch_depth: int = 2
    keep_resident: bool = False
    guidance_mode: str = "batched"
    quantization: str = "auto"
    keep_bf16: tuple[str, ...] = ()
    quantize_all: bool = False
    compile: str = "auto"
    cuda_graph: str = "auto"
    cuda_allocator: str = "auto"
    spatial_upsampler_path: Path | None = None
    video_encoder: str = "libx264"
    prequantized: str = "auto"

    def __post_init__(self) -> None:
        if self.device is not None and (not isinstance(self.device, str) or not _DEVICE.match(self.device)):
            raise RequestError("device", self.device, "cpu, cuda or cuda:N (N the GPU's index)")
        _one_of("dtype", self.dtype, (None, *DTYPES))
        _size("budget", self.budget)
        if self.host_budget != "auto":
            _size("host-budget", self.host_budget)
        _flag("unified", self.unified)
        _flag("keep-resident", self.keep_resident)
        _flag("quantize-all", self.quantize_all)
        depth = self.prefetch_depth
        if isinstance(depth, bool) or not isinstance(depth, int) or not 2 <= depth <= MAX_PREFETCH_DEPTH:
            raise RequestError("prefetch-depth", depth, f"an integer from 2 to {MAX_PREFETCH_DEPTH}")
        _one_of("guidance-mode", self.guidance_mode, GUIDANCE_MODES)
        _one_of("quantization", self.quantization, QUANTIZATIONS)
        if not isinstance(self.keep_bf16, tuple) or not all(isinstance(p, str) and p for p in self.keep_bf16):
            raise RequestError("keep-bf16", self.keep_bf16, "a tuple of non-empty glob patterns over module names")
        _one_of("compile", self.compile, COMPILE_MODES)
        _one_of("cuda-graph", self.cuda_graph, CUDA_GRAPH_MODES)
        _one_of("cuda-allocator", self.cuda_allocator, ALLOCATOR_MODES)
        _one_of("video-encoder", self.video_encoder, VIDEO_ENCODER_CHOICES)
        _one_of("prequantized", self.prequantized, PREQUANTIZED_MODES)
        if self.spatial_upsampler_path is not None and not isinstance(self.spatial_upsampler_path, Path):
            object.__setattr__(self, "spatial_upsampler_path", Path(self.spatial_upsampler_path))


def _one_of(field: str, value: object, allowed: tuple) -> None:
    if value not in allowed:
        shown = ", ".join("unset" if a is None else str(a) for a in allowed)
        raise RequestError(field, value, f"one of {shown}")


def _flag(field: str, value: object) -> None:
    if not isinstance(value, bool):
        raise RequestError(field, value, "True or False")


def _size(field: str, value: object) -> None:
    if value is None:
        return
    ok = isinstance(value, int) and not isinstance(value, bool) and 0 < value < 2**63
    if not ok or not math.isfinite(value):  # type: ignore[arg-type]
        raise RequestError(field, value, "a positive number of bytes below 2**63, or none (unlimited)")
