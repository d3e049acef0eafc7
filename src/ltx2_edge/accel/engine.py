"""Runs a run's batched guidance forwards under its ``AccelSettings``: invariants once, compiled, graphed.

The schedule over the steps of one run (each step's prediction is the same function; only how it runs changes):
- step 0 runs eager. It fills the step invariants (rotary tables, caption projections, frozen text K/V), which
  must exist before anything is compiled or captured;
- then the blocks are compiled (``compile``): step 1 pays the compilation, and the report gets its seconds;
- then the forward is captured as a CUDA graph (``cuda_graph``) and every later step replays it.
The SDPA backend (``attention``) is pinned for all of it. ``close`` (or the ``with`` exit) undoes everything,
so the transformer leaves the run as it came in.

Across the clips of a batch (same shapes, same transformer held), ``EngineSlot`` keeps one engine open so the next
run replays the graph already captured instead of capturing again (~0.6 s of a W1 clip on an H200): the new run's
tensors that the forward reads besides its three inputs (``bound``: contexts, masks, positions) are written into
the captured run's tensors, the step invariants are recomputed into their stored tensors at the new run's eager
step 0 (``Invariants.refill``), and steps 1.. replay. Same kernels on the same values: a reused graph computes what
a fresh capture would.

This module decides nothing: ``AccelSettings`` says what to do (``accel.settings`` chooses). It never changes a
value beyond the compiled kernels' rounding: eager steps, compiled steps and replays compute the same forward.
"""

from __future__ import annotations

import gc
import logging
import time
from collections.abc import Hashable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field, replace

import torch
from ltx_core.types import LatentState

from ltx2_edge.accel import attention
from ltx2_edge.accel.compile import compile_blocks, uncompile_blocks
from ltx2_edge.accel.fused_ff import fuse_feed_forwards, fuse_support, unfuse_feed_forwards
from ltx2_edge.accel.step_graph import CaptureHooks, StepGraph
from ltx2_edge.accel.step_invariants import Invariants, InvariantStats, step_invariants

log = logging.getLogger(__name__)


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
    graph_reused: bool = False  # this run replayed the graph an earlier run of the batch captured
    graph_refused: str | None = None  # why the capture failed and the steps ran eager instead

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
            "graph_reused": self.graph_reused,
            "graph_refused": self.graph_refused,
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

    def __init__(
        self,
        x0_model: torch.nn.Module,
        forward,  # noqa: ANN001
        settings: AccelSettings,
        device: torch.device,
        bound: Sequence[torch.Tensor | None] = (),
        signature: Hashable = None,
        streamer: CaptureHooks | None = None,
    ) -> None:
        """``bound``: every tensor ``forward`` reads besides its three inputs (what ``begin_run`` refills);
        ``signature``: what else must be equal for a later run to replay this run's graph (passes, perturbations);
        ``streamer``: the block streamer of the transformer's streamed blocks (a graph then holds their copies)."""
        self.model = x0_model
        self.streamer = streamer
        self.forward = forward
        self.settings = settings
        self.device = device
        self.stats = AccelStats()
        self._stack = ExitStack()
        self._graph: StepGraph | None = None
        self._compiled = False
        self._graphs_before = 0
        self._steps = 0
        self._invariants: Invariants | None = None
        self._bound = tuple(bound)
        self._signature = signature
        self._states: tuple[LatentState, LatentState] | None = None  # the capturing run's, once step 0 ran
        self._refilled = False

    def __enter__(self) -> StepEngine:
        self._invariants = self._stack.enter_context(step_invariants(self.model, self.settings.freeze_text_kv))
        self.stats.invariants = self._invariants.stats
        self._stack.enter_context(attention.use_backend(self.settings.attention))
        return self

    def begin_run(self, bound: Sequence[torch.Tensor | None], signature: Hashable) -> bool:
        """Serve a new run with this engine's captured graph: True when it can (then the new run's ``bound``
        tensors have been written into this engine's and its stats start afresh), False when the run differs
        (then nothing changed: close this engine and open a new one)."""
        if self._states is None or signature != self._signature:  # no step ran yet: nothing to reuse
            return False
        bound = tuple(bound)
        if len(bound) != len(self._bound):
            return False
        if not all(_same_layout(o, n) for o, n in zip(self._bound, bound, strict=True)):
            return False
        for old, new in zip(self._bound, bound, strict=True):
            if old is not None and new is not None and old is not new:
                old.copy_(new)
        # A refused capture is not retried per clip: the steps stay eager, and nothing is said to be replayed.
        refused = self.stats.graph_refused
        stats = AccelStats(graph_reused=refused is None, compiled_graphs=self.stats.compiled_graphs,
                           graph_refused=refused)  # fmt: skip
        assert self._invariants is not None  # set by __enter__, which opened the graph's scope
        self._invariants.refill(stats.invariants)
        self.stats, self._steps, self._refilled = stats, 0, True
        return True

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
        if self._refilled:
            return self._reused_step(step, video, audio, sigma)
        if step == 0:  # fills the invariants, eager, before any compile or capture
            self.stats.eager_steps += 1
            self._states = (video, audio)
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
        if not self.settings.cuda_graph or self.stats.graph_refused is not None:
            self.stats.eager_steps += 0 if self._compiled else 1
            return self.forward(video, audio, sigma)
        if self._graph is None:
            # The states of step 0: the same mask and position tensors as this step's (only the latent differs).
            first_video, first_audio = self._states or (video, audio)
            graph = StepGraph(
                lambda v, a, s: self.forward(replace(first_video, latent=v), replace(first_audio, latent=a), s),
                self.streamer,
            )
            start = time.perf_counter()
            refused = None
            try:
                graph.capture(video.latent, audio.latent, sigma)
            except torch.OutOfMemoryError as exc:
                refused = str(exc).split(".")[0]
            if refused is not None:
                # The graph's private pool cannot reuse what the eager steps cached, so a capture can need more
                # than an eager step where the budget is tight. Out of the except block, the failed forward's
                # tensors (held by the traceback) are gone; the steps then compute the same values eager: said in
                # the log and the report, never silently.
                gc.collect()
                torch.cuda.empty_cache()
                self.stats.graph_refused = (f"the CUDA graph's capture ran out of memory inside the budget "
                                            f"({refused}): steps ran eager")  # fmt: skip
                log.warning("%s; --cuda-graph off skips the capture, a larger --budget leaves it room",
                            self.stats.graph_refused)  # fmt: skip
                self.stats.eager_steps += 1
                return self.forward(video, audio, sigma)
            self._sync()
            self.stats.capture_seconds = time.perf_counter() - start
            self._graph = graph
        out = self._graph.replay(video.latent, audio.latent, sigma)
        self.stats.graph_replays = self._graph.replays
        return out

    def _reused_step(
        self, step: int, video: LatentState, audio: LatentState, sigma: torch.Tensor
    ) -> tuple[torch.Tensor, ...]:
        """A step of a run served by an earlier run's engine: through the earlier run's states (their tensors now
        hold this run's values). Step 0 is eager and recomputes the invariants into the tensors the graph reads;
        later steps replay the graph (or run the same forward, compiled or eager, when there is none)."""
        if step > 0 and self._graph is not None:
            out = self._graph.replay(video.latent, audio.latent, sigma)
            self.stats.graph_replays += 1
            return out
        if step == 0 or not self._compiled:
            self.stats.eager_steps += 1
        old_video, old_audio = self._states  # type: ignore[misc]  (begin_run checked them)
        return self.forward(replace(old_video, latent=video.latent), replace(old_audio, latent=audio.latent), sigma)


def _same_layout(old: torch.Tensor | None, new: torch.Tensor | None) -> bool:
    if old is None or new is None:
        return old is None and new is None
    return old.shape == new.shape and old.dtype == new.dtype and old.device == new.device


class EngineSlot:
    """Keeps the last run's ``StepEngine`` open so the next run of the same shapes on the same (held) transformer
    replays its CUDA graph. Only for a batch that holds the transformer: the open engine keeps the transformer
    patched (step invariants) and its graph's memory pool allocated until ``close``."""

    def __init__(self) -> None:
        self.engine: StepEngine | None = None

    def acquire(
        self,
        x0_model: torch.nn.Module,
        forward,  # noqa: ANN001
        settings: AccelSettings,
        device: torch.device,
        bound: Sequence[torch.Tensor | None],
        signature: Hashable,
        streamer: CaptureHooks | None = None,
    ) -> StepEngine:
        """An open engine for this run: the slot's, refilled, when it can replay for it; else a new one."""
        old = self.engine
        same = (old is not None and old.model is x0_model and old.streamer is streamer
                and _comparable(old.settings) == _comparable(settings))  # fmt: skip
        if same and old.begin_run(bound, signature):
            return old
        self.close()
        self.engine = StepEngine(x0_model, forward, settings, device, bound, signature, streamer).__enter__()
        return self.engine

    def close(self) -> None:
        """Release the graph and restore the transformer."""
        if self.engine is not None:
            engine, self.engine = self.engine, None
            engine.close()


def _comparable(settings: AccelSettings) -> AccelSettings:
    return replace(settings, reasons=())  # the reasons' wording may differ between runs; the levers may not
