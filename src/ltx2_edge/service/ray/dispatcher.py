"""The ingress's side of the fleet: every queued job handed to a generation replica, every event it sends back
recorded, and a job whose replica died put back in the queue for another one.

``FleetDispatcher`` takes the single-box ``Scheduler``'s place in ``VideoService`` (``ingress.FleetService``) and
keeps its bookkeeping: the same event handling (``Scheduler._on_event``: store updates, server-sent events, the
terminal state with public messages and reports, outputs removed for anything but a completed job), the same
shutdown rule (a job stopped by shutdown goes back to the queue, its attempt not counted). What changes is who
runs the jobs: instead of one worker thread and one engine, each queued job is sent as it arrives to the replica
routing picks (``routing.route`` inside ``router.BudgetRouter``), and its events stream back on a relay thread of
its own. The ingress stays the only writer of the job store; the replicas never see it. Batching is per replica
(``replica_worker``): the jobs a replica holds when it becomes free are its next batch.

**A replica that dies mid-job** (its process killed, its node lost) is detected by Ray itself: the replica's
actor dies, the job's event stream raises (``ActorDiedError``), and this relay thread learns it at once. No lease
or heartbeat is needed while the ingress and its streams live, because Ray already watches every worker process
and fails the calls of a dead actor; a replica that hangs rather than dies is Serve's health check's to replace
(``check_health``). The job then goes through ``JobStore.interrupt``: back to ``queued`` with the attempt counted
(failed ``interrupted`` after ``--max-attempts``, so a clip that kills every replica it touches stops), the dead
writer's temporaries of its MP4 and report removed (``atomic.clean_stale``: its pid is gone), and the queue loop
sends it to a replica again. Nothing half-written survives: the replica wrote only under temporary names, and an
MP4 it renamed into place before it died is replaced by the next run (or removed if the job fails). Serve starts a
new replica in the dead one's place on its own.

Cancel: the user's cancel (or this dispatcher's shutdown) is sent to the replica holding the job, which stops it
before it starts or at its next denoising step and answers with the job's ``cancelled`` event.

This module must never import Ray (``Fleet`` is its seam, ``ray_fleet`` its Ray side) and never build a request
itself (``request_for`` does, as on one box).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from typing import Any

from ltx2_edge.atomic import clean_stale
from ltx2_edge.errors import Ltx2EdgeError
from ltx2_edge.service.ray.fleet import Fleet, FleetEngine
from ltx2_edge.service.ray.messages import ASSIGNED, JobTicket
from ltx2_edge.service.ray.replica_engine import lora_key
from ltx2_edge.service.ray.routing import JobNeeds, ReplicaReport, transformer_key
from ltx2_edge.service.scheduler import Scheduler
from ltx2_edge.service.store import CANCELLED, FAILED, IN_PROGRESS, QUEUED, JobRecord

log = logging.getLogger("ltx2_edge.service.ray")
_TERMINAL = frozenset({"completed", "failed", "cancelled"})
RETRY_AFTER_LOSS_S = 0.5  # before a job whose replica was lost before it started is sent again


class FleetDispatcher(Scheduler):
    """Sends queued jobs to the fleet and records what comes back; ``cancel``, ``wake``, ``busy`` from any thread."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._fleet: Fleet | None = None
        self._checkpoint = ""
        self._max_attempts = 1
        self._inflight: dict[str, threading.Thread] = {}  # job id -> its relay thread
        self._where: dict[str, str] = {}  # job id -> the replica holding it
        self.reports: dict[str, ReplicaReport] = {}  # replica id -> its latest report the ingress saw
        self._orders: queue.SimpleQueue[tuple[str, str] | None] = queue.SimpleQueue()  # cancels to send
        self._sender: threading.Thread | None = None

    # ---- control ----
    def start(self, engine: FleetEngine) -> None:  # type: ignore[override]
        self._engine, self._fleet = engine, engine.fleet
        self._checkpoint, self._max_attempts = engine.checkpoint, engine.max_attempts
        self._sender = threading.Thread(target=self._send_orders, name="ltx2-edge-fleet-cancels", daemon=True)
        self._sender.start()
        self._thread = threading.Thread(target=self._loop, name="ltx2-edge-fleet-dispatch", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 60.0) -> None:
        """Every job a replica holds stops at its next step and goes back to the queue; then the threads end."""
        self._stopping.set()
        self._wake.set()
        with self._lock:
            held = dict(self._where)
        for job_id, replica_id in held.items():
            self._orders.put((job_id, replica_id))
        deadline = time.monotonic() + timeout
        with self._lock:
            relays = list(self._inflight.values())
        for relay in relays:
            relay.join(max(0.0, deadline - time.monotonic()))
        self._orders.put(None)
        for thread in (self._thread, self._sender):
            if thread is not None:
                thread.join(max(0.0, deadline - time.monotonic()))

    def cancel(self, job_id: str) -> None:
        super().cancel(job_id)
        with self._lock:
            replica_id = self._where.get(job_id)
        if replica_id is not None:  # not assigned yet: the relay sends it once the replica is known
            self._orders.put((job_id, replica_id))

    @property
    def busy(self) -> bool:
        with self._lock:
            return bool(self._inflight)

    def fleet_health(self) -> list[dict[str, Any]]:
        """Each replica the ingress has heard from: its last report, and the jobs it holds now."""
        with self._lock:
            where = dict(self._where)
            reports = dict(self.reports)
        out = []
        for replica_id, report in sorted(reports.items()):
            stats = report.to_stats()
            stats.update(id=replica_id, jobs=sorted(j for j, r in where.items() if r == replica_id))
            out.append(stats)
        return out

    # ---- the queue loop ----
    def _loop(self) -> None:
        while not self._stopping.is_set():
            self._wake.clear()  # before looking: a job queued after the look sets it again
            for record in self.store.waiting(self.batch_limit):
                with self._lock:
                    known = record.id in self._inflight
                if not known:
                    self._dispatch(record)
            self._wake.wait(timeout=1.0)

    def _dispatch(self, record: JobRecord) -> None:
        try:
            request = self._request_for(record.params)
        except Ltx2EdgeError as exc:  # valid when admitted; a LoRA file went away since, say
            self._on_event(record.id, "failed", {"code": "invalid_request", "message": str(exc)})
            return
        fleet = record.summary.get("fleet", {})
        needs = JobNeeds(
            record.id,
            self._checkpoint,
            int(fleet.get("min_budget_bytes", 0)),
            transformer_key(self._checkpoint, lora_key(request)),
        )
        ticket = JobTicket(record.id, request, self.files.output_path(record.id))
        relay = threading.Thread(target=self._relay, args=(ticket, needs), name=f"ltx2-edge-relay-{record.id[-8:]}")
        relay.daemon = True
        with self._lock:
            self._inflight[record.id] = relay
        relay.start()

    # ---- one job's relay ----
    def _relay(self, ticket: JobTicket, needs: JobNeeds) -> None:
        job_id, ended, assigned = ticket.job_id, False, False
        try:
            assert self._fleet is not None
            for kind, data in self._fleet.generate(ticket, needs):
                if kind == ASSIGNED:
                    assigned = True
                    self._assigned(job_id, data)
                    continue
                ended = ended or kind in _TERMINAL
                self._on_event(job_id, kind, data)
        except Exception as exc:  # the replica died (or the stream broke): Ray says so here
            log.warning("job %s: its replica was lost (%s: %s)", job_id, type(exc).__name__, str(exc)[:200])
        finally:
            replica_id = self._forget(job_id)
            if not ended:
                self._lost(job_id, replica_id)
                if not assigned:
                    time.sleep(RETRY_AFTER_LOSS_S)  # routing itself failed: do not spin on it
            with self._lock:
                self._inflight.pop(job_id, None)
            self.wake()

    def _assigned(self, job_id: str, data: dict[str, Any]) -> None:
        replica_id = str(data["replica_id"])
        report = ReplicaReport.from_stats(replica_id, data)
        with self._lock:
            self._where[job_id] = replica_id
            if report is not None:
                self.reports[replica_id] = report
        if self._user_cancelled(job_id) or self._stopping.is_set():  # asked before the replica was known
            self._orders.put((job_id, replica_id))

    def _forget(self, job_id: str) -> str | None:
        with self._lock:
            return self._where.pop(job_id, None)

    def _lost(self, job_id: str, replica_id: str | None) -> None:
        """The job's stream ended without its terminal event: its replica died (see the module docstring)."""
        record = self.store.get(job_id)
        if record is None or record.terminal:
            return
        output = self.files.output_path(job_id)
        for path in (output, self.files.report_path(job_id)):
            clean_stale(path)
        if record.status == QUEUED:  # it never started there: it is sent again as it is
            return
        if record.status == IN_PROGRESS and self._stopping.is_set() and not self._user_cancelled(job_id):
            self.store.requeue(job_id)
            self._end(job_id)
            self.hub.publish(job_id, "queued", {"progress": 0, "requeued": True})
            return
        status = self.store.interrupt(job_id, self._max_attempts, time.time())
        self._end(job_id)
        where = f"replica {replica_id}" if replica_id else "its replica"
        if status == QUEUED:
            log.warning("job %s: %s was lost mid-job; queued again", job_id, where)
            self.hub.publish(job_id, "queued", {"progress": 0, "requeued": True, "reason": f"{where} was lost"})
            return
        if status in (FAILED, CANCELLED):
            self.files.remove_outputs(job_id)
            self.files.remove_uploads(job_id)
            after = self.store.get(job_id)
            data: dict[str, Any] = {"progress": after.progress if after else 0}
            if after is not None and after.error_code is not None:
                data.update(code=after.error_code, message=after.error_message)
            self.hub.publish(job_id, status, data)

    # ---- cancels, sent off the HTTP threads ----
    def _send_orders(self) -> None:
        while True:
            order = self._orders.get()
            if order is None:
                return
            job_id, replica_id = order
            try:
                assert self._fleet is not None
                self._fleet.cancel(job_id, replica_id)
            except Exception as exc:  # the replica is gone: its relay sees that and deals with the job
                log.info("cancel of %s on replica %s not delivered: %s", job_id, replica_id, exc)
