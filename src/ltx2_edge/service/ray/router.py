"""``BudgetRouter``: Ray Serve's request router for the generation replicas, a thin shell around ``routing``.

Serve builds it inside every process that holds a handle to the replicas (the ingress) and asks it, for each call,
for ranks of candidate replicas; Serve then takes the first rank with room and, within it, the replica with the
shortest queue it measures. What it ranks by:

- a ``generate`` call carries ``needs`` (``routing.JobNeeds``): ``routing.route`` over the replicas' reports
  (their ``record_routing_stats``), each report's queue length replaced by the router's own live count of calls
  in flight there when it has one (reports are up to ``request_routing_stats_period_s`` old);
- a call with ``target`` (a cancel) goes to that replica only, or nowhere while it is not in the fleet;
- anything else (``admit``, ``plan``) follows ``routing.admission_ranks``: the largest budget first.

This module imports Ray at its top: only Serve loads it (by its import path in the deployment's
``RequestRouterConfig``), never plain ``serve``.
"""

from __future__ import annotations

from ray.serve.request_router import PendingRequest, RequestRouter, RunningReplica

from ltx2_edge.service.ray.routing import ReplicaReport, admission_ranks, route

ROUTER_PATH = "ltx2_edge.service.ray.router:BudgetRouter"


class BudgetRouter(RequestRouter):
    """Routes jobs to replicas whose plan admits them (see the module docstring)."""

    async def choose_replicas(
        self, candidate_replicas: list[RunningReplica], pending_request: PendingRequest | None = None
    ) -> list[list[RunningReplica]]:
        by_id = {r.replica_id.unique_id: r for r in candidate_replicas}
        kwargs = pending_request.kwargs if pending_request is not None else {}
        target = kwargs.get("target")
        if target is not None:
            return [[by_id[target]]] if target in by_id else []
        reports, unreported = [], []
        for replica_id, replica in by_id.items():
            report = ReplicaReport.from_stats(replica_id, replica.routing_stats)
            if report is None:
                unreported.append(replica_id)
            else:
                reports.append(report.with_queue(self.replica_queue_len_cache.get(replica.replica_id)))
        needs = kwargs.get("needs")
        ranks = route(needs, reports) if needs is not None else admission_ranks(reports, unreported)
        return [[by_id[i] for i in rank] for rank in ranks]
