"""The generation replicas as the ingress sees them: the ``Fleet`` protocol, and ``FleetEngine``, the engine
``VideoService`` admits and plans with when the engine is a fleet.

``Fleet`` is four calls (``ray_fleet.RayFleet`` makes them through a Ray Serve handle; tests can give a fake):
``generate`` (a job's event stream from the replica routing chose), ``admit`` and ``plan`` (a replica's planner,
whose device profile and budget are the ones that count: the ingress has no device), ``cancel`` (to the replica
holding a job).

``FleetEngine`` stands where ``service.engine.Engine`` stands on one box, for admission and ``GET /v1/plan``; the
batches are the dispatcher's (``dispatcher.FleetDispatcher``) and the replicas'.

This module must never import Ray or torch.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Protocol

from ltx2_edge.request import GenerationRequest
from ltx2_edge.service.engine import EngineConfig
from ltx2_edge.service.ray.messages import JobTicket
from ltx2_edge.service.ray.routing import JobNeeds


class Fleet(Protocol):
    """The generation replicas, one call each."""

    def generate(self, ticket: JobTicket, needs: JobNeeds) -> Iterator[tuple[str, dict[str, Any]]]:
        """The job's events as the replica routing chose sends them; raises when that replica is lost."""

    def admit(self, request: GenerationRequest) -> dict[str, Any]:
        """A replica's admission summary for ``request`` (``RequestError`` / ``BudgetError`` when refused)."""

    def plan(self, request: GenerationRequest) -> dict[str, Any]:
        """A replica's ``GET /v1/plan`` answer for ``request``."""

    def cancel(self, job_id: str, replica_id: str) -> bool:
        """Ask replica ``replica_id`` to stop ``job_id``; False when it does not hold the job (or is gone)."""


class FleetEngine:
    """Admission and plans through the fleet; what the ingress knows of the model files."""

    def __init__(self, fleet: Fleet, config: EngineConfig, max_attempts: int) -> None:
        self.fleet, self.config, self.max_attempts = fleet, config, max_attempts
        self.checkpoint = str(config.checkpoint_path.resolve())

    @property
    def model(self) -> str:
        """What the API calls the model."""
        return self.config.model_name

    def admit(self, request: GenerationRequest) -> dict[str, Any]:
        """The admitting replica's summary, with its ``fleet`` block (the smallest budget the plan fits in)."""
        return self.fleet.admit(request)

    def plan(self, request: GenerationRequest) -> dict[str, Any]:
        return self.fleet.plan(request)

    def close(self) -> None:
        """Nothing to free here: each replica frees its own engine."""
