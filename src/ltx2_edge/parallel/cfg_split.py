"""One rank's share of a step's guidance passes, and every pass's output gathered back onto every rank.

``CfgSplit`` is the ``stages.denoise.PassSplit`` a CFG-parallel rank hands the denoising loop. ``local`` keeps this
rank's slice of the stacked passes (contexts and per-sample perturbations, cut once per run); ``gather`` runs one
all-gather per modality each step, so every rank holds the same predictions, bit for bit, applies the guider to
them identically and so keeps the same latents (no rank ever sends latents). Uneven shares (3 passes on 2 ranks)
are padded to the largest share for the collective and the padding dropped after. The collective is ordered
against the tensors' own stream (NCCL's stream waits for the forward that produced them, and the caller's stream
for the collective), so no synchronisation is added here; it stays outside any CUDA graph (the step engine graphs
only the forward).
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from ltx_core.guidance.perturbations import BatchedPerturbationConfig

from ltx2_edge.parallel.ranks import pass_ranges
from ltx2_edge.stages.denoise import BatchedPasses


class CfgSplit:
    """Rank ``rank`` of ``world_size`` in ``group`` (None: the default process group). ``meet``: the ranks wait
    for each other in ``local`` (off only where no process group exists: unit tests)."""

    def __init__(self, rank: int, world_size: int, group: dist.ProcessGroup | None = None, meet: bool = True) -> None:
        self.rank, self.world_size, self.group, self.meet = rank, world_size, group, meet
        self._ranges: tuple[tuple[int, int], ...] = ()

    def local(self, batched: BatchedPasses) -> BatchedPasses:
        """This rank's passes of ``batched`` (``ValueError`` when there are fewer passes than ranks)."""
        self._ranges = pass_ranges(len(batched.passes), self.world_size)
        start, stop = self._ranges[self.rank]
        if self.meet:
            # The loop starts once every rank has loaded its transformer (the runner loads it before calling the
            # loop): step 0's time is then the step's, not a wait for the slowest rank's load.
            dist.barrier(group=self.group)
        return BatchedPasses(
            batched.passes[start:stop],
            batched.video_context[start:stop],
            batched.audio_context[start:stop],
            BatchedPerturbationConfig(list(batched.perturbations.perturbations[start:stop])),
        )

    def gather(self, out: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Every rank's outputs, stacked in pass order (video, audio)."""
        if not self._ranges:
            raise ValueError("gather before local: the split does not know the passes yet")
        return self._gather(out[0]), self._gather(out[1])

    def _gather(self, mine: torch.Tensor) -> torch.Tensor:
        widest = max(stop - start for start, stop in self._ranges)
        padded = mine.contiguous()
        if padded.shape[0] < widest:
            pad = padded.new_zeros((widest - padded.shape[0], *padded.shape[1:]))
            padded = torch.cat([padded, pad])
        parts = [torch.empty_like(padded) for _ in range(self.world_size)]
        dist.all_gather(parts, padded, group=self.group)
        return torch.cat([part[: stop - start] for part, (start, stop) in zip(parts, self._ranges, strict=True)])
