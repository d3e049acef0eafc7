"""What each route asks of the service: admission, look-ups, cancel, delete, the content file, health.

Admission runs every check before anything enters the queue, cheapest first: the body's types, the values
(``GenerationRequest``, as the CLI builds it), the files (uploads decoded, LoRAs found), the memory plan
(``RequestError`` / ``BudgetError`` with the smallest budget that works), then the queue limit, in the same
store transaction as the insert. A refused request leaves nothing behind: its uploads are deleted.

``admission.RequestReader`` says what a body means; ``ApiError`` (``config``) carries the HTTP status and the
one-line message a client gets; ``app`` only translates.
This module must never speak HTTP itself, and never hand a server path to a client.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ltx2_edge.errors import BudgetError, RequestError
from ltx2_edge.service import api_models
from ltx2_edge.service.admission import RequestReader, body_hash
from ltx2_edge.service.config import MIB, ApiError, ServiceConfig
from ltx2_edge.service.events import TERMINAL_EVENTS, EventHub
from ltx2_edge.service.expiry import Janitor
from ltx2_edge.service.files import DataDir, check_job_id, new_job_id
from ltx2_edge.service.scheduler import Scheduler
from ltx2_edge.service.store import (
    COMPLETED,
    IN_PROGRESS,
    QUEUED,
    IdempotencyConflict,
    JobRecord,
    JobStore,
    NewJob,
    QueueFull,
    SqliteJobStore,
)

__all__ = ["MIB", "ApiError", "ServiceConfig", "VideoService"]


def _unprocessable(exc: RequestError | BudgetError, replacements: Mapping[str, str]) -> ApiError:
    if isinstance(exc, RequestError):
        param, message = api_models.request_error(exc, replacements)
        return ApiError(422, message, param, "invalid_value")
    return ApiError(422, api_models.public_message(exc, replacements), "budget", "budget_exceeded")


class VideoService:
    """The service's state: store, files, events, scheduler, and the engine once it is ready."""

    # What runs the queue: the one-device worker here; a fleet (``service.ray``) puts its dispatcher in its place.
    scheduler_class: type[Scheduler] = Scheduler

    def __init__(self, config: ServiceConfig, store: JobStore | None = None) -> None:
        self.config = config
        self.files = DataDir(config.data_dir)
        self.store = store if store is not None else SqliteJobStore(self.files.db_path)
        self.hub = EventHub()
        self.reader = RequestReader(config, self.files)
        self.engine: Any = None  # service.engine.Engine once ready (None: starting)
        self.scheduler = self.scheduler_class(
            self.store,
            self.files,
            self.hub,
            self.reader.request_for,
            self.reader.public_text,
            ttl_seconds=config.ttl_seconds,
            batch_limit=config.queue_limit,
        )
        self.recovered = self._recover()
        self.janitor = Janitor(self.store, self.files, config.ttl_seconds)
        self.janitor.start()

    # ---- lifecycle ----
    def _recover(self) -> dict[str, str]:
        """After a crash: temporaries removed, jobs that were running re-queued (or failed), orphans removed."""
        self.files.remove_temporaries()
        changed = self.store.recover(self.config.max_attempts, time.time())
        live, done = set(), set()
        after: str | None = None
        while True:
            page, more = self.store.list_jobs(after, 500, "asc")
            for r in page:
                if r.status in (QUEUED, IN_PROGRESS):
                    live.add(r.id)
                elif r.status == COMPLETED and not r.expired:
                    done.add(r.id)
            if not more or not page:
                break
            after = page[-1].id
        self.files.remove_orphans(keep_uploads=live, keep_outputs=done)
        for job_id, status in changed.items():
            self.hub.publish(job_id, status, {"progress": 0, "recovered": True})
        return changed

    def attach_engine(self, engine: Any, start_worker: bool = True) -> None:
        """The engine is ready: admission opens and the worker starts (``start_worker`` False: jobs only queue)."""
        self.engine = engine
        if start_worker:
            self.scheduler.start(engine)

    def close(self) -> None:
        """Stop the worker (its job goes back to the queue) and the janitor; close the store. The engine is its
        maker's to close."""
        self.janitor.stop()
        self.scheduler.stop()
        self.store.close()

    def health(self) -> dict[str, Any]:
        counts = self.store.counts()
        if self.engine is None:
            status = "starting"
        else:
            status = "busy" if self.scheduler.busy or counts.get(QUEUED, 0) else "ready"
        return {
            "status": status,
            "queued": counts.get(QUEUED, 0),
            "in_progress": counts.get(IN_PROGRESS, 0),
            "queue_limit": self.config.queue_limit,
        }

    def _require_engine(self) -> Any:
        if self.engine is None:
            raise ApiError(
                503,
                "the server is starting (checking the model files); retry in a few seconds",
                code="starting",
                headers={"Retry-After": "5"},
            )
        return self.engine

    def create(
        self, fields: Mapping[str, Any], files: Mapping[str, bytes], idempotency_key: str | None
    ) -> tuple[JobRecord, bool]:
        """Admit a job (see the module docstring); (the job, whether it is new: False for a repeated key)."""
        engine = self._require_engine()
        if idempotency_key is not None and not (0 < len(idempotency_key) <= 255 and idempotency_key.isprintable()):
            raise ApiError(422, "Idempotency-Key must be 1-255 printable characters", "Idempotency-Key")
        job_id, names, params = new_job_id(), [], {}
        try:
            try:
                body = self.reader.parse(fields, files, engine.model)
                images = self.reader.images(body, files)
                digest = body_hash(body, images)
                names = [self.files.save_upload(job_id, i, data, field) for i, (field, data) in enumerate(images)]
                params = api_models.to_params(body, names)
                request = self.reader.request_for(params)
                summary = engine.admit(request)
            except (RequestError, BudgetError) as exc:
                raise _unprocessable(exc, self.reader.replacements(params) if params else {}) from None
            job = NewJob(job_id, params, summary, idempotency_key, digest if idempotency_key else None)
            try:
                record, created = self.store.add(job, self.config.queue_limit)
            except QueueFull as exc:
                wait = max(1, math.ceil(self.scheduler.mean_job_seconds))
                raise ApiError(
                    429,
                    f"the queue is full ({exc.waiting} jobs waiting, --queue-limit "
                    f"{self.config.queue_limit}); retry after {wait} s",
                    code="queue_full",
                    headers={"Retry-After": str(wait)},
                ) from None
            except IdempotencyConflict as exc:
                raise ApiError(
                    409,
                    f"Idempotency-Key {idempotency_key!r} was used for job {exc.job_id} with a "
                    "different request; use a new key for a new request",
                    "Idempotency-Key",
                    "idempotency_conflict",
                ) from None
        except BaseException:
            self.files.remove_uploads(job_id)
            raise
        if not created:
            self.files.remove_uploads(job_id)  # the earlier job keeps its own
        else:
            self.hub.publish(job_id, "queued", {"progress": 0})
            self.scheduler.wake()
        return record, created

    def get(self, job_id: str) -> JobRecord:
        record = self.store.get(job_id) if check_job_id(job_id) else None
        if record is None:
            raise ApiError(
                404,
                f"no video {job_id!r} (deleted, or never made here); GET /v1/videos lists them",
                "video_id",
                "not_found",
            )
        return record

    def announce_end(self, record: JobRecord) -> None:
        """Give an ended job's event stream its terminal event if it has none (the job ended before a restart)."""
        if record.terminal and self.hub.last_kind(record.id) not in TERMINAL_EVENTS:
            data: dict[str, Any] = {"progress": record.progress}
            if record.error_code is not None:
                data.update(code=record.error_code, message=record.error_message)
            self.hub.publish(record.id, record.status, data)

    def list(self, after: str | None, limit: int, order: str) -> tuple[list[JobRecord], bool]:
        if not 1 <= limit <= 100:
            raise ApiError(422, f"limit={limit} is not allowed: 1 to 100", "limit", "invalid_value")
        if order not in ("asc", "desc"):
            raise ApiError(422, f"order={order!r} is not allowed: asc or desc", "order", "invalid_value")
        return self.store.list_jobs(after if after and check_job_id(after) else None, limit, order)

    def cancel(self, job_id: str) -> JobRecord:
        record = self.get(job_id)
        if record.terminal:
            raise ApiError(
                409, f"video {job_id} already ended ({record.status}); nothing to cancel", "video_id", "already_ended"
            )
        self.scheduler.cancel(job_id)
        after = self.store.cancel(job_id, time.time())
        if after is not None and after.status == "cancelled":  # it was still queued: it ends now
            self.files.remove_uploads(job_id)
            self.hub.publish(job_id, "cancelled", {"progress": after.progress})
        return after or record

    def delete(self, job_id: str) -> None:
        record = self.get(job_id)
        if not record.terminal:
            self.scheduler.cancel(job_id)  # a running job stops at its next step; the worker drops its files
            self.store.cancel(job_id, time.time())
        self.store.delete(job_id)
        self.files.remove_outputs(job_id)
        self.files.remove_uploads(job_id)
        if not record.terminal:
            self.hub.publish(job_id, "cancelled", {"deleted": True})
        self.hub.forget(job_id)

    def content_path(self, job_id: str, variant: str | None) -> Path:
        record = self.get(job_id)
        if variant not in (None, "video"):
            raise ApiError(
                422,
                f"variant={variant!r} is not allowed: video (this server makes no thumbnails or spritesheets)",
                "variant",
                "invalid_value",
            )
        if record.expired:
            raise ApiError(
                410,
                f"video {job_id} expired at {time.ctime(record.expires_at)} (--ttl); make it again",
                "video_id",
                "expired",
            )
        if record.status != COMPLETED:
            detail = f": {record.error_message}" if record.error_message else ""
            raise ApiError(
                409,
                f"video {job_id} is {record.status} ({record.progress}%){detail}; its content exists "
                "once its status is completed",
                "video_id",
                "not_ready",
            )
        path = self.files.output_path(job_id)
        if not path.is_file():
            raise ApiError(
                410, f"video {job_id}'s file is gone from the data directory; make it again", "video_id", "gone"
            )
        return path

    def plan(self, fields: Mapping[str, Any]) -> dict[str, Any]:
        """``ltx2-edge plan``'s answer for a request given as query fields (no images)."""
        engine = self._require_engine()
        params: dict[str, Any] = {}
        try:
            body = self.reader.parse({"prompt": "(plan only)", **fields}, {}, engine.model)
            if body.images:
                raise RequestError("images", "(given)", "none here: GET /v1/plan plans text-to-video requests")
            params = api_models.to_params(body, [])
            return engine.plan(self.reader.request_for(params))
        except (RequestError, BudgetError) as exc:
            raise _unprocessable(exc, self.reader.replacements(params) if params else {}) from None
