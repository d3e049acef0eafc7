"""Runs a run's batched guidance forwards under its ``AccelSettings``: invariants once, compiled, graphed.

The schedule over the steps of one run (each step's prediction is the same function; only how it runs changes):
- step 0 runs eager. It fills the step invariants (rotary tables, caption projections, frozen text K/V), which
  must exist before anything is compiled or captured;
- then the blocks are compiled (``compile``): step 1 pays the compilation, and the report gets its seconds;
- then the forward is captured as a CUDA graph (``cuda_graph``) and every later step replays it.
The SDPA backend (``attention``) is pinned for all of it. ``close`` (or the ``with`` exit) undoes everything,
so the transformer leaves the run as it came in.

This module decides nothing: ``AccelSettings`` says what to do (``accel.settings`` chooses). It never changes a
value beyond the compiled kernels' rounding: eager steps, compiled steps and replays compute the same forward.
"""

from __future__ import annotations

import time
from contextlib import ExitStack
from dataclasses import dataclass, field, replace

import torch
from ltx_core.types import LatentState

from ltx2_edge.accel import attention
from ltx2_edge.accel.compile import compile_blocks, uncompile_blocks
from ltx2_edge.accel.fused_ff import fuse_feed_forwards, fuse_support, unfuse_feed_forwards
from ltx2_edge.accel.step_graph import StepGraph
from ltx2_edge.accel.step_invariants import InvariantStats, step_invariants


@dataclass(frozen=True)
class AccelSettings:
    """How a run's denoising forwards run. All off is the plain eager forward (the oracle's path)."""

    compile: bool = False
    cuda_graph: bool = False
    freeze_text_kv: bool = False
    attention: str | None = None  # an ``attention.CANDIDATES`` key, or None for PyTorch's dispatch
    reasons: tuple[str, ...] = ()  # why each lever is on or off, for the plan and report
    # With compile: each FeedForward's GELU and its 8-bit activation quantization in one hand-written kernel
    # (``accel.fused_ff``): Inductor's own fusion of the two read the 16384-wide rows twice (0.21 ms a call).
    fused_ff: bool = True

    def describe(self) -> str:
        parts = ["compiled blocks" if self.compile else "eager", "CUDA graph" if self.cuda_graph else "no graph"]
        if self.compile and self.fused_ff:
            parts.append("GELU fused into the 8-bit quantization where the FF is 8-bit")
        if self.freeze_text_kv:
            parts.append("text K/V once per run")
        parts.append(f"SDPA {self.attention}" if self.attention else "SDPA default")
        return ", ".join(parts)


@dataclass
class AccelStats:
    """What happened, for the report."""

    invariants: InvariantStats = field(default_factory=InvariantStats)
    compile_step_seconds: float | None = None  # the first compiled step (compilation + one forward)
    capture_seconds: float | None = None  # warm-up forward + capture
    graph_replays: int = 0
    eager_steps: int = 0
    compiled_graphs: int | None = None  # graphs Dynamo made for the block: 1 when all 48 blocks share one
    fused_feed_forwards: int | None = None  # FeedForwards given the fused GELU + quantization kernel
    fused_ff_note: str | None = None  # why none was, when none was
    graph_breaks: dict[str, int] = field(default_factory=dict)  # why the block split into several graphs

    def as_dict(self) -> dict:
        return {
            "invariants": self.invariants.as_dict(),
            "compile_step_seconds": None if self.compile_step_seconds is None else round(self.compile_step_seconds, 3),
            "capture_seconds": None if self.capture_seconds is None else round(self.capture_seconds, 3),
            "graph_replays": self.graph_replays,
            "eager_steps": self.eager_steps,
            "compiled_graphs": self.compiled_graphs,
            "fused_feed_forwards": self.fused_feed_forwards,
            "fused_ff_note": self.fused_ff_note,
            "graph_breaks": self.graph_breaks,
        }


def _unique_graphs() -> int:
    from torch._dynamo.utils import counters  # noqa: PLC0415  (Dynamo loads only when compiling)

    return int(counters["stats"]["unique_graphs"])


def _graph_breaks() -> dict[str, int]:
    from torch._dynamo.utils import counters  # noqa: PLC0415

    return {reason[:200]: int(n) for reason, n in counters["graph_break"].items()}


class StepEngine:
    """``forward(video_state, audio_state, sigma) -> tuple of outputs`` of one run, accelerated per settings.

    ``forward`` is the batched forward (``denoise.batched_forward`` bound to its transformer and passes);
    ``x0_model`` is the transformer it calls (ltx-core's ``X0Model``), which the engine compiles and patches.
    """

    def __init__(self, x0_model: torch.nn.Module, forward, settings: AccelSettings, device: torch.device) -> None:  # noqa: ANN001
        self.model = x0_model
        self.forward = forward
        self.settings = settings
        self.device = device
        self.stats = AccelStats()
        self._stack = ExitStack()
        self._graph: StepGraph | None = None
        self._compiled = False
        self._graphs_before = 0
        self._steps = 0

    def __enter__(self) -> StepEngine:
        self.stats.invariants = self._stack.enter_context(step_invariants(self.model, self.settings.freeze_text_kv))
        self._stack.enter_context(attention.use_backend(self.settings.attention))
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._graph is not None:
            self._graph.release()
            self._graph = None
        if self._compiled:
            self.stats.compiled_graphs = _unique_graphs() - self._graphs_before
            self.stats.graph_breaks = _graph_breaks()
            uncompile_blocks(getattr(self.model, "velocity_model", self.model))
            unfuse_feed_forwards(getattr(self.model, "velocity_model", self.model))
            self._compiled = False
        self._stack.close()

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def __call__(self, video: LatentState, audio: LatentState, sigma: torch.Tensor) -> tuple[torch.Tensor, ...]:
        step, self._steps = self._steps, self._steps + 1
        if step == 0:  # fills the invariants, eager, before any compile or capture
            self.stats.eager_steps += 1
            return self.forward(video, audio, sigma)
        if self.settings.compile and not self._compiled:
            self._graphs_before = _unique_graphs()
            velocity = getattr(self.model, "velocity_model", self.model)
            if self.settings.fused_ff:  # before compiling, so the compiled blocks trace the fused forward
                self.stats.fused_ff_note = fuse_support(velocity, self.device.type)
                self.stats.fused_feed_forwards = fuse_feed_forwards(velocity, self.device.type)
            compile_blocks(velocity, self.device.type)
            self._compiled = True
            if not self.settings.cuda_graph:
                start = time.perf_counter()
                out = self.forward(video, audio, sigma)
                self._sync()
                self.stats.compile_step_seconds = time.perf_counter() - start
                return out
        if not self.settings.cuda_graph:
            self.stats.eager_steps += 0 if self._compiled else 1
            return self.forward(video, audio, sigma)
        if self._graph is None:
            graph = StepGraph(lambda v, a, s: self.forward(replace(video, latent=v), replace(audio, latent=a), s))
            start = time.perf_counter()
            graph.capture(video.latent, audio.latent, sigma)
            self._sync()
            self.stats.capture_seconds = time.perf_counter() - start
            self._graph = graph
        out = self._graph.replay(video.latent, audio.latent, sigma)
        self.stats.graph_replays = self._graph.replays
        return out
