"""The service's ``Engine`` as one generation replica runs it: the same engine, plus what routing asks of it.

Admission adds a ``fleet`` block to the plan's summary: the smallest device budget the request's plan fits in
(``plan.planner.minimum_budget``, bisecting the pure planner from headers: no weight is read), so the ingress can
send the job to any replica whose budget is at least that, and this replica's own budget. ``budget_bytes``,
``checkpoint`` and ``resident`` are what the replica reports for routing.

This module must never run a batch itself (``Engine.run_batch`` does) nor decide where a job goes (``routing``).
"""

from __future__ import annotations

from typing import Any

from ltx2_edge.memory.runtime import gemma_tensors
from ltx2_edge.plan.planner import minimum_budget, quantized_predicate
from ltx2_edge.request import GenerationRequest
from ltx2_edge.service.engine import Engine
from ltx2_edge.service.ray.routing import transformer_key


def lora_key(request: GenerationRequest) -> tuple[tuple[str, float], ...]:
    """The LoRA set a request's (first) denoise fuses into the transformer."""
    return tuple((str(spec.path), float(spec.strength)) for spec in request.loras)


class ReplicaEngine(Engine):
    """An ``Engine`` that can say its budget, its checkpoint, what it holds, and a request's smallest budget."""

    @property
    def budget_bytes(self) -> int | None:
        """The device budget this replica's plans fit (None: unlimited)."""
        return self._planner.setup.budget.device_bytes

    @property
    def checkpoint(self) -> str:
        """The checkpoint this replica serves, by its resolved path (the same file on every host of a fleet)."""
        return str(self._planner.setup.checkpoint.path.resolve())

    @property
    def device(self) -> str:
        return str(self._worker.setup.device)

    def resident(self, last_loras: tuple[tuple[str, float], ...] | None) -> tuple[str, ...]:
        """Transformer keys held loaded now: the one of the last clip denoised here, while the cache still has it
        (a LoRA set loads a transformer of its own, so the last one run is the one held)."""
        if last_loras is None or not self._worker.cache.holds("transformer"):
            return ()
        return (transformer_key(self.checkpoint, last_loras),)

    def min_budget_bytes(self, request: GenerationRequest) -> int:
        """The smallest device budget ``request``'s plan fits in, on this replica's device profile and files."""
        setup = self._planner.setup
        plan = self._prepare(request).memory
        return minimum_budget(
            setup.checkpoint.header,
            gemma_tensors(setup.gemma.shards),
            plan.request,
            setup.budget,
            setup.profile,
            quantized_predicate(setup.policy),
        )

    def admit(self, request: GenerationRequest) -> dict[str, Any]:
        summary = super().admit(request)
        summary["fleet"] = {"min_budget_bytes": self.min_budget_bytes(request), "budget_bytes": self.budget_bytes}
        return summary
