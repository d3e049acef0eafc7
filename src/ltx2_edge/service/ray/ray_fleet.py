"""``RayFleet``: the ``fleet.Fleet`` calls made through a Ray Serve handle to the generation replicas.

Every call is routed by ``router.BudgetRouter`` from its keyword arguments: ``needs`` (a job), ``target`` (a
cancel, to the replica holding the job), neither (admission and plans: the largest budget first). Blocking calls
(``admit``, ``plan``, ``cancel``, ``ready``) wait for their answer on the caller's thread, which is never the
event loop's (the service runs admission in a worker thread); ``generate`` returns the job's event stream.

This module imports no Ray itself: the handle it is given carries Ray.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from ltx2_edge.request import GenerationRequest
from ltx2_edge.service.ray.messages import JobTicket
from ltx2_edge.service.ray.routing import JobNeeds

ANSWER_TIMEOUT_S = 300.0  # admission waits this long for a replica (one that is starting loads headers first)
CANCEL_TIMEOUT_S = 20.0


class RayFleet:
    """The fleet behind ``handle`` (a ``DeploymentHandle`` of the generation replicas)."""

    def __init__(self, handle: Any) -> None:
        self._handle = handle

    def generate(self, ticket: JobTicket, needs: JobNeeds) -> Iterator[tuple[str, dict[str, Any]]]:
        return iter(self._handle.options(stream=True).generate.remote(ticket, needs=needs))

    def _ask(self, method: str, *args: Any, timeout_s: float = ANSWER_TIMEOUT_S, **kwargs: Any) -> Any:
        response = getattr(self._handle, method).remote(*args, **kwargs)
        try:
            return response.result(timeout_s=timeout_s)
        except TimeoutError:
            response.cancel()  # or it would wait in the router for a replica for ever
            raise

    def admit(self, request: GenerationRequest) -> dict[str, Any]:
        return self._ask("admit", request).unwrap()

    def plan(self, request: GenerationRequest) -> dict[str, Any]:
        return self._ask("plan", request).unwrap()

    def cancel(self, job_id: str, replica_id: str) -> bool:
        return bool(self._ask("cancel", job_id, target=replica_id, timeout_s=CANCEL_TIMEOUT_S))

    def ready(self, timeout_s: float) -> dict[str, Any]:
        """One replica's report, once one is up (``TimeoutError`` after ``timeout_s``)."""
        return self._ask("record_routing_stats", timeout_s=timeout_s)
