"""What travels between the ingress and the generation replicas (pickled by Ray): plain data, no behaviour.

``JobTicket`` is one job handed to a replica: its id, the validated ``GenerationRequest`` the ingress built from
the stored parameters (uploads and LoRAs by their absolute paths on the shared data directory) and the MP4 path.
A replica answers admission and plan questions with an ``Answer``: the value, or the refusal as plain fields,
rebuilt on the ingress as the same ``RequestError`` / ``BudgetError`` (an exception with its own ``__init__`` does
not always survive Ray's error wrapping as itself, and the service turns these two into 422 answers).

Each job's event stream is ``(kind, data)`` pairs: the engine's events (``service.engine`` lists them), first of
all ``ASSIGNED`` with the replica's report (``routing.ReplicaReport.to_stats``), which only the ingress reads.

This module must never import Ray or torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ltx2_edge.errors import BudgetError, CheckpointError, RequestError

if TYPE_CHECKING:
    from ltx2_edge.request import GenerationRequest

ASSIGNED = "assigned"


@dataclass(frozen=True)
class JobTicket:
    """One job for a replica's queue."""

    job_id: str
    request: GenerationRequest
    output_path: Path


@dataclass(frozen=True)
class Answer:
    """A replica's answer: ``value``, or a refusal (``error``: kind and its fields)."""

    value: Any = None
    error: tuple[Any, ...] | None = None

    @classmethod
    def refusal(cls, exc: RequestError | BudgetError | CheckpointError) -> Answer:
        """The refusal ``exc`` as plain fields."""
        if isinstance(exc, RequestError):
            return cls(error=("request", exc.field, exc.value, exc.allowed))
        return cls(error=("budget" if isinstance(exc, BudgetError) else "checkpoint", str(exc)))

    def unwrap(self) -> Any:
        """The value, or the refusal raised again as the exception the replica raised."""
        if self.error is None:
            return self.value
        kind, *fields = self.error
        if kind == "request":
            raise RequestError(*fields)
        if kind == "budget":
            raise BudgetError(fields[0])
        raise CheckpointError(fields[0])
