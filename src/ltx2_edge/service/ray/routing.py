"""Which generation replica gets a job, as pure functions over what the replicas report (unit-tested, no Ray).

A replica reports (``ReplicaReport``, through Ray Serve's ``record_routing_stats``) its device budget, the
checkpoint it serves, how many jobs it holds (queued there or running) and what it holds resident. A job brings
``JobNeeds``: the checkpoint, the smallest device budget its plan fits in (computed by a replica's own planner at
admission, ``replica_engine``), and the key of the transformer it denoises with (checkpoint and LoRA set).

``route`` ranks the replicas for a job: only replicas whose plan admits it (same checkpoint, a budget at least the
job's smallest one; an unlimited budget admits everything), the least loaded first; among the least loaded, one
that already holds this job's transformer comes first. Ray Serve then takes the first rank with room and, within
it, the replica with the shortest queue it measures itself. A warm transformer never makes a job wait behind a
longer queue: loading it costs seconds, a queued clip costs a whole clip. No replica admits it: no rank (the
router waits for the fleet to change; admission made sure some replica could run it).

``admission_ranks`` says where a request is planned for admission: on the replica with the largest budget (if
it cannot fit there it fits nowhere), replicas that have not reported yet last.

This module must never import Ray or torch, and never read a clock or a file.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any


def transformer_key(checkpoint: str, loras: Iterable[tuple[str, float]] = ()) -> str:
    """The identity of a loaded transformer: its checkpoint and the LoRAs fused into it (path, strength)."""
    fused = ",".join(f"{path}@{strength:g}" for path, strength in loras)
    return f"{checkpoint}|{fused}"


@dataclass(frozen=True)
class ReplicaReport:
    """What one generation replica says about itself (its routing stats)."""

    replica_id: str
    checkpoint: str
    budget_bytes: int | None  # the device budget its plans fit (None: unlimited)
    queue_length: int = 0  # jobs it holds: waiting for its next batch or running in this one
    resident: tuple[str, ...] = ()  # transformer keys it holds loaded now
    running: tuple[str, ...] = ()  # job ids of the batch it runs now
    device: str = "cpu"
    pid: int = 0
    node: str = ""
    jobs_done: int = 0

    def to_stats(self) -> dict[str, Any]:
        """The report as Ray Serve carries routing stats (a plain dict)."""
        return {
            "checkpoint": self.checkpoint,
            "budget_bytes": self.budget_bytes,
            "queue_length": self.queue_length,
            "resident": list(self.resident),
            "running": list(self.running),
            "device": self.device,
            "pid": self.pid,
            "node": self.node,
            "jobs_done": self.jobs_done,
        }

    @classmethod
    def from_stats(cls, replica_id: str, stats: Mapping[str, Any]) -> ReplicaReport | None:
        """The report in ``stats``; None for a replica that has not reported yet (empty stats)."""
        if not stats or "checkpoint" not in stats:
            return None
        return cls(
            replica_id,
            str(stats["checkpoint"]),
            None if stats.get("budget_bytes") is None else int(stats["budget_bytes"]),
            int(stats.get("queue_length", 0)),
            tuple(stats.get("resident", ())),
            tuple(stats.get("running", ())),
            str(stats.get("device", "cpu")),
            int(stats.get("pid", 0)),
            str(stats.get("node", "")),
            int(stats.get("jobs_done", 0)),
        )

    def with_queue(self, queue_length: int | None) -> ReplicaReport:
        """The same report with a fresher queue length (the router's own count), when it has one."""
        if queue_length is None:
            return self
        return replace(self, queue_length=queue_length)


@dataclass(frozen=True)
class JobNeeds:
    """What a job asks of the replica that runs it."""

    job_id: str
    checkpoint: str
    min_budget_bytes: int  # the smallest device budget its plan fits in
    transformer: str = ""  # ``transformer_key`` of its denoise


def admits(replica: ReplicaReport, needs: JobNeeds) -> bool:
    """True when ``replica``'s planner would admit the job: same checkpoint, and a budget it fits in (a plan that
    fits a budget fits every larger one: the planner's least-memory choices stay available)."""
    if replica.checkpoint != needs.checkpoint:
        return False
    return replica.budget_bytes is None or replica.budget_bytes >= needs.min_budget_bytes


def route(needs: JobNeeds, replicas: Sequence[ReplicaReport]) -> list[list[str]]:
    """Replica ids in ranks, best first (see the module docstring); [] when no replica admits the job."""
    eligible = [r for r in replicas if admits(r, needs)]
    if not eligible:
        return []
    least = min(r.queue_length for r in eligible)
    warm = [r for r in eligible if r.queue_length == least and needs.transformer and needs.transformer in r.resident]
    rest = sorted((r for r in eligible if r not in warm), key=lambda r: (r.queue_length, r.replica_id))
    ranks = [[r.replica_id for r in sorted(warm, key=lambda r: r.replica_id)], [r.replica_id for r in rest]]
    return [rank for rank in ranks if rank]


def admission_ranks(replicas: Sequence[ReplicaReport], unreported: Sequence[str] = ()) -> list[list[str]]:
    """Where to plan a request for admission: the largest budget first (unlimited counts largest), then the other
    budgets in falling order, then replicas that have not reported yet."""
    by_budget: dict[int | None, list[str]] = {}
    for r in replicas:
        by_budget.setdefault(r.budget_bytes, []).append(r.replica_id)
    order = sorted(by_budget, key=lambda b: (b is not None, -(b or 0)))
    ranks = [sorted(by_budget[b]) for b in order]
    if unreported:
        ranks.append(sorted(unreported))
    return ranks
