"""``--cfg-parallel N`` checked against the request and the machine, before any process starts (torch-free).

A rank is one process on one device. The guidance passes of each step are shared out in order, the first ranks
taking one more when they do not divide evenly (``pass_ranges``): 2 ranks with CFG run cond | uncond; 2 with the
full guidance cond, uncond | perturbed, isolated; 3 with it cond, uncond | perturbed | isolated. This module never
imports torch: the caller gives it the facts (the passes, the GPUs visible).
"""

from __future__ import annotations

from dataclasses import dataclass

from ltx2_edge.errors import RequestError

FLAG = "cfg-parallel"


def pass_ranges(passes: int, ranks: int) -> tuple[tuple[int, int], ...]:
    """Each rank's passes as ``[start, stop)`` of the step's pass order; no rank gets none (``ranks <= passes``)."""
    if not 1 <= ranks <= passes:
        raise ValueError(f"{ranks} ranks cannot share {passes} passes (1 to {passes} ranks)")
    base, extra = divmod(passes, ranks)
    out, start = [], 0
    for r in range(ranks):
        stop = start + base + (1 if r < extra else 0)
        out.append((start, stop))
        start = stop
    return tuple(out)


@dataclass(frozen=True)
class RankLayout:
    """Which device and which passes each rank runs. ``device_type``: ``cuda`` (rank r on ``cuda:r``, NCCL) or
    ``cpu`` (every rank a CPU process, gloo: how the tests run it)."""

    ranks: int
    device_type: str
    passes: tuple[str, ...]

    @property
    def backend(self) -> str:
        return "nccl" if self.device_type == "cuda" else "gloo"

    def device(self, rank: int) -> str:
        return f"cuda:{rank}" if self.device_type == "cuda" else "cpu"

    def share(self, rank: int) -> tuple[str, ...]:
        """The passes ``rank`` runs each step."""
        start, stop = pass_ranges(len(self.passes), self.ranks)[rank]
        return self.passes[start:stop]

    @property
    def largest_share(self) -> int:
        """Passes in the largest rank's forward: what each rank's memory plan is made for."""
        return -(-len(self.passes) // self.ranks)

    def describe(self) -> str:
        where = f"cuda:0-{self.ranks - 1}, NCCL" if self.device_type == "cuda" else "CPU processes, gloo"
        shares = "; ".join(f"rank {r}: {', '.join(self.share(r))}" for r in range(self.ranks))
        return f"CFG parallel over {self.ranks} ranks ({where}): {shares}; only rank 0 decodes and writes the MP4"


def rank_layout(ranks: object, pipeline: str, passes: tuple[str, ...], device: str | None, gpus: int) -> RankLayout:
    """The layout ``--cfg-parallel ranks`` asks for, or a one-line ``RequestError`` naming the flag.

    ``pipeline``: ``--pipeline``; ``passes``: the guidance passes of its (only) denoising stage; ``device``:
    ``--device`` (None: the GPUs when there are any); ``gpus``: CUDA devices visible to this process."""
    if isinstance(ranks, bool) or not isinstance(ranks, int) or ranks < 2:
        raise RequestError(FLAG, ranks, "an integer >= 2 (ranks, one a GPU); leave it out to run in one process")
    if pipeline != "one-stage":
        why = ("runs one unguided pass per step: nothing to split" if pipeline == "distilled-one-stage" else
               "ends in a stage of one unguided pass, which has nothing to split")  # fmt: skip
        raise RequestError(FLAG, ranks, f"--pipeline one-stage only (--pipeline {pipeline} {why}); leave "
                           "--cfg-parallel out to run it on one GPU")  # fmt: skip
    if len(passes) < 2:
        raise RequestError(FLAG, ranks, f"guidance with 2 or more passes (this request runs {len(passes)}: "
                           f"{', '.join(passes)}: nothing to split); leave --cfg-parallel out to run it on one "
                           "GPU")  # fmt: skip
    if ranks > len(passes):
        raise RequestError(FLAG, ranks, f"at most {len(passes)} ranks, one per guidance pass ({', '.join(passes)}; "
                           "--guidance full has 4)")  # fmt: skip
    if device is not None and device not in ("cuda", "cpu"):
        raise RequestError("device", device, "cuda or cpu with --cfg-parallel (rank r runs on cuda:r; choose the "
                           "GPUs with CUDA_VISIBLE_DEVICES)")  # fmt: skip
    if device == "cpu":
        return RankLayout(ranks, "cpu", passes)
    if gpus < ranks:
        hint = "; --device cpu runs the ranks as CPU processes (gloo, for testing)" if gpus == 0 else ""
        raise RequestError(FLAG, ranks, f"at most as many ranks as GPUs: {ranks} ranks need {ranks} GPUs, "
                           f"{gpus} visible{hint}")  # fmt: skip
    return RankLayout(ranks, "cuda", passes)
