"""The one GPU worker: takes batches from the queue, hands them to ``Engine.run_batch``, records what happens.

A batch is every job waiting when the worker becomes free, oldest first, at most ``batch_limit`` (the service
passes its queue limit, so every waiting job is in the next batch). A job that arrives while a batch runs waits
for that batch only: it never waits behind more than one batch, and a stream of new jobs cannot starve it.

The engine is also told what still waits behind its batch (``_queued``: the durable queue's requests, the batch's
own jobs left out), so ``--compile auto`` counts a queue of 30 alike clips for the first of them (it asks as the
batch is prepared and again as its denoising begins, when jobs posted meanwhile have been queued).

Events from the engine (``engine.py`` lists them) become store updates and server-sent events; error messages
and reports pass ``public`` first (server paths replaced by the names a client knows). Each job ends in
one terminal state; when the engine reports none for a job (it raised), the job fails with the reason. On
``stop`` (server shutdown) the running job is stopped at its next denoising step and put back in the queue with
its attempt not counted; a restart runs it again.

This module must never call the generator except through ``Engine.run_batch``, and never read a request.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from ltx2_edge.errors import Ltx2EdgeError
from ltx2_edge.service.events import EventHub
from ltx2_edge.service.files import DataDir
from ltx2_edge.service.store import CANCELLED, COMPLETED, FAILED, JobStore

log = logging.getLogger("ltx2_edge.service")
DEFAULT_JOB_SECONDS = 30.0  # Retry-After before any job ran here
_TERMINAL = {"completed": COMPLETED, "failed": FAILED, "cancelled": CANCELLED}


class Scheduler:
    """Runs on its own thread (``start``); ``cancel``, ``wake``, ``busy`` are safe from any thread."""

    def __init__(
        self,
        store: JobStore,
        files: DataDir,
        hub: EventHub,
        request_for: Callable[[Mapping[str, Any]], Any],
        public: Callable[[Mapping[str, Any], str], str],
        *,
        ttl_seconds: float | None,
        batch_limit: int,
    ) -> None:
        self.store, self.files, self.hub = store, files, hub
        self._request_for, self._public = request_for, public
        self.ttl_seconds, self.batch_limit = ttl_seconds, batch_limit
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._cancelled: set[str] = set()
        self._batch: set[str] = set()
        self._ended: set[str] = set()
        self._started: dict[str, float] = {}
        self._thread: threading.Thread | None = None
        self._engine: Any = None
        self.mean_job_seconds = DEFAULT_JOB_SECONDS
        self.batches = 0

    # ---- control ----
    def start(self, engine: Any) -> None:
        self._engine = engine
        self._thread = threading.Thread(target=self._loop, name="ltx2-edge-worker", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 60.0) -> None:
        """Stop after the running job's next denoising step (it goes back to the queue)."""
        self._stopping.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def wake(self) -> None:
        """A job was queued."""
        self._wake.set()

    def cancel(self, job_id: str) -> None:
        """Stop ``job_id`` at its next denoising step (or before it starts)."""
        with self._lock:
            self._cancelled.add(job_id)

    @property
    def busy(self) -> bool:
        with self._lock:
            return bool(self._batch - self._ended)

    def is_cancelled(self, job_id: str) -> bool:
        if self._stopping.is_set():
            return True
        with self._lock:
            return job_id in self._cancelled

    # ---- the worker ----
    def _loop(self) -> None:
        from ltx2_edge.service.engine import BatchJob

        while not self._stopping.is_set():
            self._wake.clear()  # before looking: a job queued after the look sets it again
            records = self.store.waiting(self.batch_limit)
            if not records:
                self._wake.wait(timeout=1.0)
                continue
            jobs = []
            for r in records:
                try:
                    jobs.append(BatchJob(r.id, self._request_for(r.params), self.files.output_path(r.id)))
                except Ltx2EdgeError as exc:  # valid when admitted; a LoRA file went away since, say
                    self._on_event(r.id, "failed", {"code": "invalid_request", "message": str(exc)})
            if jobs:
                self._run(jobs)

    def _run(self, jobs: list) -> None:
        with self._lock:
            self._batch, self._ended = {j.job_id for j in jobs}, set()
        self.batches += 1
        try:
            self._engine.run_batch(jobs, self._on_event, self.is_cancelled, waiting=self._queued)
        except BaseException as exc:  # an engine bug must not leave jobs in_progress forever
            log.exception("run_batch raised")
            for job in jobs:
                if job.job_id not in self._ended:
                    self._on_event(
                        job.job_id,
                        "failed",
                        {
                            "code": "internal_error",
                            "message": f"the batch "
                            f"stopped: {type(exc).__name__}: {exc} (the server's log has the traceback)",
                        },
                    )
            if not isinstance(exc, Exception):
                raise
        finally:
            with self._lock:
                self._batch = set()

    def _queued(self) -> list[Any]:
        """The requests of the jobs queued behind the running batch, oldest first (asked from the worker thread)."""
        with self._lock:
            batch = set(self._batch)
        out = []
        for record in self.store.waiting(self.batch_limit):
            if record.id in batch:
                continue
            try:
                out.append(self._request_for(record.params))
            except Ltx2EdgeError:  # it fails, with its reason, when a batch of its own picks it
                continue
        return out

    def _on_event(self, job_id: str, kind: str, data: dict[str, Any]) -> None:
        now = time.time()
        if kind == "started":
            if not self.store.start(job_id, now):  # cancelled or deleted after the batch was picked
                self.cancel(job_id)
            self._started[job_id] = time.monotonic()
        elif kind in ("stage", "stage_done", "step"):
            self.store.set_progress(job_id, int(data.get("progress", 0)), data.get("stage"))
        elif kind in _TERMINAL:
            if kind == "cancelled" and self._stopping.is_set() and not self._user_cancelled(job_id):
                self.store.requeue(job_id)  # shutdown, not the user: it runs again after the restart
                self._end(job_id)
                self.hub.publish(job_id, "queued", {"progress": 0, "requeued": True})
                return
            self._finish(job_id, kind, data, now)
            return
        self.hub.publish(job_id, kind, data)

    def _user_cancelled(self, job_id: str) -> bool:
        with self._lock:
            return job_id in self._cancelled

    def _end(self, job_id: str) -> None:
        with self._lock:
            self._ended.add(job_id)
            self._cancelled.discard(job_id)
        began = self._started.pop(job_id, None)
        if began is not None:
            self.mean_job_seconds = 0.7 * self.mean_job_seconds + 0.3 * (time.monotonic() - began)

    def _finish(self, job_id: str, kind: str, data: dict[str, Any], now: float) -> None:
        status = _TERMINAL[kind]
        before = self.store.get(job_id)
        params = before.params if before is not None else {}
        error = (data["code"], self._public(params, data["message"])) if kind == "failed" else None
        report = data.get("report") if kind == "completed" else None
        if report is not None:  # the report names the output and the uploads by their server paths
            report = json.loads(self._public(params, json.dumps(report, default=str)))
        expires = now + self.ttl_seconds if kind == "completed" and self.ttl_seconds is not None else None
        kept = self.store.finish(job_id, status, now, error=error, report=report, expires_at=expires)
        if kind != "completed" or not kept:  # failed, cancelled, or deleted while it ran: no file of it stays
            self.files.remove_outputs(job_id)
        self.files.remove_uploads(job_id)
        self._end(job_id)
        if not kept:  # it had ended already (cancelled while queued) or was deleted: that was announced
            return
        record = self.store.get(job_id)
        payload = {k: v for k, v in data.items() if k != "report"}
        if record is not None:
            payload["progress"] = record.progress
            if record.error_code is not None:
                payload.update(code=record.error_code, message=record.error_message)
        self.hub.publish(job_id, status, payload)
