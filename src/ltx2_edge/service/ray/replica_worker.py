"""One generation replica's worker: its own queue of jobs, run in phase-batched batches on its one device.

The ingress hands each job over as soon as routing picked this replica (``submit``); the worker thread takes every
job waiting here when it becomes free, oldest first, and runs them through ``Engine.run_batch``, the single-box
service's worker path (``ltx2_edge.phased``: Gemma once per batch, the transformer held through the denoises,
MP4s written while the next clip denoises). A job that arrives while a batch runs waits for that batch only, as
on one box, and the running batch's ``--compile auto`` counts it (``_queued``). Every event of a job goes to the
callback its ``submit`` gave, from this thread.

Cancellation is asked here (``cancel``: the ingress sends the user's cancel, or its own shutdown's, to the
replica that holds the job) and honoured by the engine before the job starts or at its next denoising step.

``report`` is what routing reads: the queue length, the batch running now, the transformer held, the budget.

This module must never touch the job store, the event hub or HTTP (the ingress owns those), nor import Ray.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ltx2_edge.service.engine import BatchJob
from ltx2_edge.service.ray.messages import JobTicket
from ltx2_edge.service.ray.replica_engine import ReplicaEngine, lora_key
from ltx2_edge.service.ray.routing import ReplicaReport

log = logging.getLogger("ltx2_edge.service.ray")
EventSink = Callable[[str, dict[str, Any]], None]
_TERMINAL = frozenset({"completed", "failed", "cancelled"})


@dataclass
class _Held:
    ticket: JobTicket
    sink: EventSink


class ReplicaWorker:
    """Runs on its own thread from construction; every method is safe from any thread."""

    def __init__(self, engine: ReplicaEngine, replica_id: str) -> None:
        self.engine, self.replica_id = engine, replica_id
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._waiting: list[_Held] = []
        self._sinks: dict[str, EventSink] = {}  # every job held here, waiting or running
        self._running: tuple[str, ...] = ()
        self._cancelled: set[str] = set()
        self._last_loras: tuple[tuple[str, float], ...] | None = None
        self.jobs_done = 0
        self._thread = threading.Thread(target=self._loop, name=f"ltx2-edge-replica-{replica_id}", daemon=True)
        self._thread.start()

    # ---- what the ingress calls ----
    def submit(self, ticket: JobTicket, sink: EventSink) -> None:
        """Queue ``ticket`` for this replica's next batch; its events go to ``sink``."""
        with self._lock:
            self._waiting.append(_Held(ticket, sink))
            self._sinks[ticket.job_id] = sink
        self._wake.set()

    def cancel(self, job_id: str) -> bool:
        """Stop ``job_id`` before it starts or at its next denoising step; False if it is not held here."""
        with self._lock:
            if job_id not in self._sinks:
                return False
            self._cancelled.add(job_id)
            return True

    def report(self) -> ReplicaReport:
        """This replica as routing sees it."""
        with self._lock:
            queue, running, last = len(self._sinks), self._running, self._last_loras
        return ReplicaReport(
            self.replica_id,
            self.engine.checkpoint,
            self.engine.budget_bytes,
            queue,
            self.engine.resident(last),
            running,
            self.engine.device,
            os.getpid(),
            socket.gethostname(),
            self.jobs_done,
        )

    @property
    def alive(self) -> bool:
        """The worker thread still runs (a replica whose worker died must be replaced: its health check says)."""
        return self._thread.is_alive()

    def stop(self, timeout: float = 30.0) -> None:
        """Every held job stops at its next step (the ingress puts them back in the queue); the thread ends."""
        self._stopping.set()
        self._wake.set()
        self._thread.join(timeout)

    # ---- the worker thread ----
    def _is_cancelled(self, job_id: str) -> bool:
        if self._stopping.is_set():
            return True
        with self._lock:
            return job_id in self._cancelled

    def _on_event(self, job_id: str, kind: str, data: dict[str, Any]) -> None:
        with self._lock:
            sink = self._sinks.get(job_id)
            if kind in _TERMINAL:
                self._sinks.pop(job_id, None)
                self._cancelled.discard(job_id)
        if kind == "completed":
            self.jobs_done += 1
            data.get("report", {}).setdefault("service", {})["replica"] = self.replica_id
        if sink is None:
            log.warning("event %s for job %s, which this replica no longer holds", kind, job_id)
            return
        sink(kind, data)

    def _queued(self) -> list[Any]:
        """The requests submitted here since the running batch was taken (``--compile auto`` counts them)."""
        with self._lock:
            return [h.ticket.request for h in self._waiting]

    def _take(self) -> list[_Held]:
        with self._lock:
            batch, self._waiting = self._waiting, []
            self._running = tuple(h.ticket.job_id for h in batch)
        return batch

    def _loop(self) -> None:
        while not self._stopping.is_set():
            self._wake.clear()  # before looking: a job submitted after the look sets it again
            batch = self._take()
            if not batch:
                self._wake.wait(timeout=1.0)
                continue
            jobs = [BatchJob(h.ticket.job_id, h.ticket.request, h.ticket.output_path) for h in batch]
            try:
                self.engine.run_batch(jobs, self._on_event, self._is_cancelled, waiting=self._queued)
            except BaseException as exc:  # an engine bug must not leave a job without its terminal event
                log.exception("run_batch raised")
                message = f"the batch stopped: {type(exc).__name__}: {exc} (the replica's log has the traceback)"
                for job in jobs:
                    if job.job_id in self._sinks:
                        self._on_event(job.job_id, "failed", {"code": "internal_error", "message": message})
                if not isinstance(exc, Exception):
                    raise
            finally:
                with self._lock:
                    self._running = ()
                    self._last_loras = lora_key(batch[-1].ticket.request)
        # Stopping: jobs that never reached a batch end as cancelled, so the ingress re-queues them.
        for held in self._take():
            self._on_event(held.ticket.job_id, "cancelled", {})
