"""The generation replica as a Ray Serve deployment: one device, its own memory budget, its own worker.

``app.build_application`` wraps this class with ``serve.deployment`` (``num_gpus=1`` on CUDA, so Ray gives each
replica one GPU of its own and sets ``CUDA_VISIBLE_DEVICES``; ``num_cpus`` on the CPU). Its methods, called by the
ingress through a deployment handle and routed by ``router.BudgetRouter``:

- ``generate(ticket, needs=...)``: an async generator of the job's events (``messages``), the first ``assigned``
  with this replica's report; the job waits in ``ReplicaWorker``'s queue for the next batch. When the caller goes
  away (Ray cancels the request), the job stops at its next denoising step.
- ``admit(request)`` / ``plan(request)``: this replica's planner (headers only), as an ``Answer``;
- ``cancel(job_id, target=...)``: routed to the replica ``target`` names, the one holding the job;
- ``record_routing_stats``: the report routing reads (Serve calls it every ``request_routing_stats_period_s``);
- ``check_health``: fails once the worker thread died, so Serve replaces the replica.

This module must never touch the job store or HTTP; it imports Ray only inside the methods Ray calls.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from typing import Any

from ltx2_edge.errors import BudgetError, CheckpointError, RequestError
from ltx2_edge.request import GenerationRequest
from ltx2_edge.service.engine import EngineConfig
from ltx2_edge.service.ray.messages import ASSIGNED, Answer, JobTicket
from ltx2_edge.service.ray.routing import JobNeeds

_TERMINAL = frozenset({"completed", "failed", "cancelled"})


class GenerationReplica:
    """One replica: a ``ReplicaEngine`` on this process's device and the worker that runs its batches."""

    def __init__(self, engine_config: EngineConfig, cpu_threads: int | None = None) -> None:
        from ray import serve

        from ltx2_edge.service.ray.replica_engine import ReplicaEngine
        from ltx2_edge.service.ray.replica_worker import ReplicaWorker

        if cpu_threads is not None:  # a CPU replica computes on the cores Ray reserved for it, not on every core
            import torch

            torch.set_num_threads(cpu_threads)
        self.replica_id = serve.get_replica_context().replica_id.unique_id
        self.engine = ReplicaEngine(engine_config)
        self.worker = ReplicaWorker(self.engine, self.replica_id)

    def record_routing_stats(self) -> dict[str, Any]:
        return self.worker.report().to_stats()

    def check_health(self) -> None:
        if not self.worker.alive:
            raise RuntimeError(f"replica {self.replica_id} (pid {os.getpid()}): its worker thread stopped")

    async def admit(self, request: GenerationRequest) -> Answer:
        return await asyncio.to_thread(self._answer, self.engine.admit, request)

    async def plan(self, request: GenerationRequest) -> Answer:
        return await asyncio.to_thread(self._answer, self.engine.plan, request)

    @staticmethod
    def _answer(fn: Any, request: GenerationRequest) -> Answer:
        try:
            return Answer(fn(request))
        except (RequestError, BudgetError, CheckpointError) as exc:
            return Answer.refusal(exc)

    def cancel(self, job_id: str, target: str | None = None) -> bool:
        return self.worker.cancel(job_id)

    async def generate(self, ticket: JobTicket, needs: JobNeeds | None = None) -> AsyncIterator[tuple[str, dict]]:
        loop = asyncio.get_running_loop()
        events: asyncio.Queue[tuple[str, dict]] = asyncio.Queue()

        def sink(kind: str, data: dict[str, Any]) -> None:
            loop.call_soon_threadsafe(events.put_nowait, (kind, data))

        self.worker.submit(ticket, sink)
        ended = False
        try:
            yield ASSIGNED, {"replica_id": self.replica_id, **self.worker.report().to_stats()}
            while not ended:
                kind, data = await events.get()
                ended = kind in _TERMINAL
                yield kind, data
        finally:
            if not ended:  # the caller went away (the ingress died or gave up on it): nobody will record the job
                self.worker.cancel(ticket.job_id)

    def __del__(self) -> None:
        worker = getattr(self, "worker", None)
        if worker is not None:
            worker.stop()
            self.engine.close()
