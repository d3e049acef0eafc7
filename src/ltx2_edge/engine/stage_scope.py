"""``StageScopes.stage``: the one bracket around every stage of a run — its progress lines, its report record (time,
peak memory, technique, details), the release of what the plan does not keep, and the check of what the device
really held against the prediction and the budget.

This module must never load or run a model; it measures and releases what the stage inside it used.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager

import torch

from ltx2_edge.engine.setup import EngineSetup
from ltx2_edge.memory import runtime
from ltx2_edge.models.model_cache import ModelCache
from ltx2_edge.progress import Progress
from ltx2_edge.report import RunReport, StageRecord

LEAK_NOTE_BYTES = 256 * 1024**2  # retained after release beyond this is worth a note (fragments are smaller)


class StageScopes:
    """Brackets the stages of one run: one report, one progress, one cache, one allocation baseline."""

    def __init__(self, setup: EngineSetup, cache: ModelCache, report: RunReport, progress: Progress) -> None:
        self.setup, self.cache, self.report, self.progress = setup, cache, report, progress
        dev = setup.device
        # What was allocated before the run that no cached part explains (parts held from an earlier clip are
        # counted as held, stage by stage).
        self.baseline = torch.cuda.memory_allocated(dev) - cache.held_bytes() if dev.type == "cuda" else 0

    @contextmanager
    def stage(self, name: str, detail: str, technique: str, predicted: int,
              keep: Iterable[str] = ()) -> Iterator[StageRecord]:  # fmt: skip
        """Run a stage inside: ``detail`` is its start line, ``technique`` its report column, ``predicted`` its
        planned peak; when it ends the cache drops every part not in ``keep`` (nor held by its owner). A stage that
        fails drops everything its owner does not hold: a plan's keep is for the next stage of a run that goes on.
        """
        self.progress.stage(name, detail)
        try:
            with self.report.measure(name, technique, self.setup.device) as rec:
                yield rec
        except BaseException:
            self.cache.end_stage()
            raise
        self.cache.end_stage(keep)
        kept = [part for part in keep if self.cache.holds(part)]
        if kept:
            rec.details["held_for_next_stage"] = kept
        self._memory(rec, predicted)
        self.progress.done(name, rec.seconds)

    def _memory(self, rec: StageRecord, predicted: int) -> None:
        """Budget, prediction and what the device really held, for the report (and leaks between stages)."""
        setup, dev = self.setup, self.setup.device
        cap = setup.budget.device_bytes
        # What the budget holds: the allocator's reserved memory (allocated + cached segments; the cap enforces
        # it) and, on a GPU, the runtime's own device memory, which no allocator figure includes.
        runtime_bytes = setup.profile.runtime_overhead_bytes if dev.type == "cuda" else 0
        held_peak = max(rec.peak_bytes, rec.details.get("peak_reserved_bytes", 0)) + runtime_bytes
        rec.details.update(budget_bytes=cap, predicted_peak_bytes=predicted,
                           within_budget=cap is None or held_peak <= cap)  # fmt: skip
        held = self.cache.held_bytes()  # kept on purpose, for the next stage or the next clip
        rec.details["held_for_next_stage_bytes"] = held
        if dev.type == "cuda":
            rec.details["nvml_used_bytes_after"] = runtime.nvml_used_bytes(dev)
            retained = torch.cuda.memory_allocated(dev) - self.baseline - held
            rec.details["retained_bytes_after"] = retained
            if not setup.keep_resident and retained > LEAK_NOTE_BYTES:
                self.progress.note(f"{rec.stage} left {retained / 1024**3:.2f} GiB allocated after release")
