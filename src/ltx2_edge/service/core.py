"""What each route asks of the service: admission, look-ups, cancel, delete, the content file, health.

Admission runs every check before anything enters the queue, cheapest first: the body's types, the values
(``GenerationRequest``, as the CLI builds it), the files (uploads decoded, LoRAs found), the memory plan
(``RequestError`` / ``BudgetError`` with the smallest budget that works), then the queue limit, in the same
store transaction as the insert. A refused request leaves nothing behind: its uploads are deleted.

``ApiError`` carries the HTTP status and the one-line message a client gets; ``app`` only translates.
This module must never speak HTTP itself, and never hand a server path to a client.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ltx2_edge.errors import BudgetError, RequestError
from ltx2_edge.service import api_models
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

if TYPE_CHECKING:
    from ltx2_edge.request import GenerationRequest

MIB = 1024**2


class ApiError(Exception):
    """A refusal: HTTP ``status``, one-line ``message``, the ``param`` it is about, extra ``headers``."""

    def __init__(
        self,
        status: int,
        message: str,
        param: str | None = None,
        code: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self.status, self.message, self.param, self.code = status, message, param, code
        self.headers = dict(headers or {})
        super().__init__(message)


@dataclass(frozen=True)
class ServiceConfig:
    """The service's own settings (``ltx2-edge serve``'s flags beyond the model's)."""

    data_dir: Path
    queue_limit: int = 16
    max_attempts: int = 3
    ttl_seconds: float | None = 24 * 3600.0
    max_body_bytes: int = 32 * MIB
    max_image_bytes: int = 16 * MIB
    max_images: int = 8
    lora_dir: Path | None = None
    distilled_lora: tuple[Path, float] | None = None
    poll_after_ms: int = 500
    pipelines: tuple[str, ...] | None = None  # what this server's checkpoint runs, its default first; None: all

    def __post_init__(self) -> None:
        for name in ("queue_limit", "max_attempts", "max_body_bytes", "max_image_bytes", "max_images"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise RequestError(name.replace("_", "-"), value, "a positive integer")
        if self.ttl_seconds is not None and not (math.isfinite(self.ttl_seconds) and self.ttl_seconds > 0):
            raise RequestError("ttl", self.ttl_seconds, "a positive duration such as 24h, 30m, 3600s, or none")


def _unprocessable(exc: RequestError | BudgetError, replacements: Mapping[str, str]) -> ApiError:
    if isinstance(exc, RequestError):
        param, message = api_models.request_error(exc, replacements)
        return ApiError(422, message, param, "invalid_value")
    return ApiError(422, api_models.public_message(exc, replacements), "budget", "budget_exceeded")


class VideoService:
    """The service's state: store, files, events, scheduler, and the engine once it is ready."""

    def __init__(self, config: ServiceConfig, store: JobStore | None = None) -> None:
        self.config = config
        self.files = DataDir(config.data_dir)
        self.store = store if store is not None else SqliteJobStore(self.files.db_path)
        self.hub = EventHub()
        self.engine: Any = None  # service.engine.Engine once ready (None: starting)
        self.scheduler = Scheduler(
            self.store,
            self.files,
            self.hub,
            self.request_for,
            self.public_text,
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

    # ---- requests ----
    def _lora_paths(self, params: Mapping[str, Any]) -> list[Path]:
        paths = []
        for i, lora in enumerate(params.get("loras", ())):
            if self.config.lora_dir is None:
                raise RequestError(f"loras[{i}]", lora["name"], "none: this server was started without --lora-dir")
            path = self.config.lora_dir / f"{lora['name']}.safetensors"
            if not path.is_file():
                names = sorted(p.stem for p in self.config.lora_dir.glob("*.safetensors"))[:20]
                raise RequestError(
                    f"loras[{i}].name",
                    lora["name"],
                    "one of " + (", ".join(names) or "(none: the --lora-dir holds no .safetensors file)"),
                )
            paths.append(path)
        return paths

    def _replacements(self, params: Mapping[str, Any]) -> dict[str, str]:
        out = {str(self.files.root): "<data-dir>"}
        for i, img in enumerate(params.get("images", ())):
            out[str(self.files.upload_path(img["upload"]))] = f"images[{i}]"
        for lora in params.get("loras", ()):
            if self.config.lora_dir is not None:
                out[str(self.config.lora_dir / f"{lora['name']}.safetensors")] = lora["name"]
        if self.config.distilled_lora is not None:
            out[str(self.config.distilled_lora[0])] = "<the server's --distilled-lora>"
        return out

    def public_text(self, params: Mapping[str, Any], text: str) -> str:
        """``text`` with the server paths of a job's files replaced by the names its client knows."""
        return api_models.public_message(Exception(text), self._replacements(params))

    def request_for(self, params: Mapping[str, Any]) -> GenerationRequest:
        """``GenerationRequest`` of stored ``params`` (``RequestError`` with public names in its message)."""
        try:
            images = [self.files.upload_path(img["upload"]) for img in params.get("images", ())]
            return api_models.request_from_params(params, images, self._lora_paths(params), self.config.distilled_lora)
        except RequestError as exc:  # its value and text may hold the paths of uploads and LoRAs
            rep = self._replacements(params)
            value = api_models.public_text(exc.value, rep) if isinstance(exc.value, str) else exc.value
            raise RequestError(exc.field, value, api_models.public_text(exc.allowed, rep)) from None

    def _images(self, body: api_models.CreateBody, files: Mapping[str, bytes]) -> list[tuple[str, bytes]]:
        """(public name, bytes) of each image of ``body``."""
        if len(body.images) > self.config.max_images:
            raise RequestError("images", f"<{len(body.images)} images>", f"at most {self.config.max_images}")
        out = []
        for i, img in enumerate(body.images):
            field = f"images[{i}]"
            if (img.data is None) == (img.file is None):
                raise RequestError(
                    field,
                    "(data and file)" if img.data else None,
                    "exactly one of data (base64, in JSON) or file (the name of a multipart file part)",
                )
            if img.data is not None:
                try:
                    data = base64.b64decode(img.data, validate=True)
                except (binascii.Error, ValueError):
                    raise RequestError(
                        f"{field}.data", f"<{len(img.data)} characters>", "base64 of an image file"
                    ) from None
            elif img.file in files:
                data = files[img.file]
            else:
                raise RequestError(
                    f"{field}.file",
                    img.file,
                    f"the name of a file part of this multipart request ({', '.join(sorted(files)) or 'it has none'})",
                )
            if len(data) > self.config.max_image_bytes:
                raise ApiError(
                    413,
                    f"{field} is {len(data) / MIB:.1f} MiB; at most "
                    f"{self.config.max_image_bytes / MIB:.0f} MiB per image (--max-image-mb)",
                    field,
                )
            out.append((field, data))
        return out

    def _parse(self, fields: Mapping[str, Any], files: Mapping[str, bytes]) -> api_models.CreateBody:
        raw = dict(fields)
        if "input_reference" in files:  # the OpenAI field: the clip's first frame, kept exactly
            raw["images"] = [{"file": "input_reference", "frame_idx": 0, "strength": 1.0}, *raw.get("images", [])]
        elif raw.get("input_reference") is not None:
            raise RequestError(
                "input_reference",
                "(not a file)",
                "an uploaded image file (multipart); image URLs and file ids cannot be fetched by an offline server",
            )
        raw.pop("input_reference", None)
        body = api_models.parse_body(raw)
        allowed = self.config.pipelines
        if allowed is not None:
            if body.pipeline is None:
                body = body.model_copy(update={"pipeline": allowed[0]})
            elif body.pipeline not in allowed:
                raise RequestError(
                    "pipeline",
                    body.pipeline,
                    f"{' or '.join(allowed)} on this server (the others "
                    "need the other checkpoint: --checkpoint-path or --distilled-checkpoint-path)",
                )
        if body.model not in (None, "ltx-2", self._require_engine().model):
            raise RequestError("model", body.model, f"{self.engine.model} (or leave it unset)")
        return body

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
                body = self._parse(fields, files)
                images = self._images(body, files)
                body_hash = _body_hash(body, images)
                names = [self.files.save_upload(job_id, i, data, field) for i, (field, data) in enumerate(images)]
                params = api_models.to_params(body, names)
                request = self.request_for(params)
                summary = engine.admit(request)
            except (RequestError, BudgetError) as exc:
                raise _unprocessable(exc, self._replacements(params) if params else {}) from None
            job = NewJob(job_id, params, summary, idempotency_key, body_hash if idempotency_key else None)
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
            body = self._parse({"prompt": "(plan only)", **fields}, {})
            if body.images:
                raise RequestError("images", "(given)", "none here: GET /v1/plan plans text-to-video requests")
            params = api_models.to_params(body, [])
            return engine.plan(self.request_for(params))
        except (RequestError, BudgetError) as exc:
            raise _unprocessable(exc, self._replacements(params) if params else {}) from None


def _body_hash(body: api_models.CreateBody, images: list[tuple[str, bytes]]) -> str:
    """What makes two requests the same for ``Idempotency-Key``: the fields, and each image by its digest."""
    doc = body.model_dump(exclude={"images"})
    doc["images"] = [
        {**img.model_dump(exclude={"data", "file"}), "sha256": hashlib.sha256(data).hexdigest()}
        for img, (_, data) in zip(body.images, images, strict=True)
    ]
    return hashlib.sha256(json.dumps(doc, sort_keys=True, default=str).encode()).hexdigest()
