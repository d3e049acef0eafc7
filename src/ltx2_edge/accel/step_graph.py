"""The batched transformer forward of a denoising step, captured once as a CUDA graph and replayed every step.

Why it pays: a W1 forward launches thousands of kernels; replaying a graph launches them from the GPU's own
queue, so the step no longer waits on Python. Shapes, the text contexts, positions and perturbations are the
same at every step of a run; only the latents and sigma change, and those are copied into static input
buffers before each replay. The outputs are static buffers too, valid until the next replay.

Design: one graph around the whole forward. With blocks streamed from pinned memory the graph holds their copies
too: each streamed block runs from a fixed slot (``streaming.streamer``), so the copies, the copy stream's waits
and the compute stream's waits on them are graph nodes, and the graph ends once the next forward's first blocks
are in their slots. Blocks streamed from the file cannot be captured (a file read is host work): those runs stay
eager; the plan says which.

Rules: capture must see only device work. ``step_invariants`` must be active (ltx-core's rotary tables are
otherwise rebuilt on the host each forward), and a warm-up forward runs on a side stream first (cuBLAS and
Triton initialise lazily; the capture stream may not allocate outside the graph's pool). The caller's stream
waits on the side stream before capture so the warm-up's reads of the latents finish first. This module
never changes a value: a replay runs the kernels an eager forward would, in the same order.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import torch


class CaptureHooks(Protocol):
    """What a forward's block streamer does around a capture and each replay (``BlockStreamer``'s methods)."""

    def capture_begin(self) -> None: ...
    def capture_end(self, failed: bool = False) -> None: ...
    def graph_ran(self, replayed: bool) -> None: ...


class StepGraph:
    """Capture ``forward(video_latent, audio_latent, sigma) -> tuple of tensors`` once; replay it per step.

    ``forward`` must read its inputs only through the three tensors it is given (the static buffers here).
    ``streamer``: the block streamer the forward runs through, if any.
    """

    def __init__(
        self,
        forward: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], tuple[torch.Tensor, ...]],
        streamer: CaptureHooks | None = None,
    ) -> None:
        self._forward = forward
        self._streamer = streamer
        self._graph: torch.cuda.CUDAGraph | None = None
        self._inputs: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None
        self._outputs: tuple[torch.Tensor, ...] | None = None
        self.replays = 0

    @property
    def captured(self) -> bool:
        return self._graph is not None

    def capture(self, video: torch.Tensor, audio: torch.Tensor, sigma: torch.Tensor) -> None:
        """Warm up on a side stream, then record the forward on the given inputs' shapes (nothing is computed).

        On an error (an out-of-memory in the warm-up or the capture) nothing is kept: the streamer, if any, is back
        at a forward's start and the caller may run the forward eager."""
        if not video.is_cuda:
            raise RuntimeError("CUDA graphs need CUDA tensors; run eager on this device")
        self._inputs = (video.clone(), audio.clone(), sigma.clone())
        try:
            self._graph = self._capture(video.device)
        except BaseException:
            self.release()
            if self._streamer is not None:
                self._streamer.reset()  # the warm-up or the capture stopped part-way through a forward
            raise

    def _capture(self, device: torch.device) -> torch.cuda.CUDAGraph:
        assert self._inputs is not None
        side = torch.cuda.Stream(device=device)
        # The side stream reads the static inputs just written on the current stream: wait for those writes.
        side.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(side):
            self._forward(*self._inputs)
        # Capture must not start while the warm-up still runs on its stream (it would free into the pool the
        # capture allocates from).
        torch.cuda.current_stream(device).wait_stream(side)
        # Blocks the eager steps cached are of no use to the graph's private pool; returning them keeps the
        # peak at one forward's activations, as the planner predicts.
        torch.cuda.empty_cache()
        if self._streamer is not None:
            self._streamer.capture_begin()
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            try:
                self._outputs = tuple(self._forward(*self._inputs))
            except BaseException:
                if self._streamer is not None:
                    # Joins the copy stream back into the capture: a capture left with an unjoined stream cannot
                    # end, and that error would hide the forward's.
                    self._streamer.capture_end(failed=True)
                raise
            if self._streamer is not None:
                self._streamer.capture_end()
        if self._streamer is not None:
            self._streamer.graph_ran(replayed=False)
        return graph

    def replay(self, video: torch.Tensor, audio: torch.Tensor, sigma: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Copy the step's inputs in, replay, and return the static outputs (overwritten by the next replay)."""
        if self._graph is None or self._inputs is None or self._outputs is None:
            raise RuntimeError("capture() first")
        for static, new in zip(self._inputs, (video, audio, sigma), strict=True):
            if static.shape != new.shape:
                raise RuntimeError(f"graph captured for shape {tuple(static.shape)}, got {tuple(new.shape)}")
            static.copy_(new)
        self._graph.replay()
        if self._streamer is not None:
            self._streamer.graph_ran(replayed=True)
        self.replays += 1
        return self._outputs

    def release(self) -> None:
        """Free the graph and its memory pool."""
        self._graph = None
        self._inputs = None
        self._outputs = None
