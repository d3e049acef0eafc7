"""The HTTP face of the service: a FastAPI app whose routes translate between HTTP and ``VideoService``.

Routes: ``POST /v1/videos`` (JSON or multipart; ``Idempotency-Key``), ``GET /v1/videos``, ``GET /v1/videos/{id}``,
``DELETE /v1/videos/{id}``, ``POST /v1/videos/{id}/cancel``, ``GET /v1/videos/{id}/content`` (MP4, range
requests), ``GET /v1/videos/{id}/events`` (server-sent events), ``GET /v1/plan``, ``GET /health``, and the web page
(``/`` and ``/app.js``). Every refusal is the OpenAI error shape with one message. ``guards.Guards`` wraps the app
(host, origin, token, body size); no CORS middleware is ever added.

This module must never decide anything about a job (``core`` does) and never build a path from a request.
"""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response, StreamingResponse
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.formparsers import MultiPartException

from ltx2_edge import __version__
from ltx2_edge.errors import RequestError
from ltx2_edge.service.api_models import error_body, request_error, video_object
from ltx2_edge.service.config import ApiError
from ltx2_edge.service.core import VideoService
from ltx2_edge.service.guards import Guards

_PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; media-src 'self' blob:; img-src 'self' data: blob:; "
    "style-src 'self' 'unsafe-inline'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}
_JSON_FIELDS = ("images", "loras")  # list fields that a multipart form carries as JSON text


def _error(
    status: int, message: str, param: str | None = None, code: str | None = None, headers: dict[str, str] | None = None
) -> JSONResponse:
    kind = "invalid_request_error" if status < 500 else "server_error"
    return JSONResponse(error_body(message, param, code, kind), status_code=status, headers=headers)


async def _fields(request: Request, max_bytes: int) -> tuple[dict[str, Any], dict[str, bytes]]:
    """(fields, uploaded files) of a JSON or multipart/urlencoded body."""
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype in ("multipart/form-data", "application/x-www-form-urlencoded"):
        try:
            form = await request.form(max_files=16, max_fields=64, max_part_size=max_bytes)
        except MultiPartException as exc:
            raise ApiError(400, f"the multipart body cannot be read: {exc}", code="bad_body") from None
        fields: dict[str, Any] = {}
        files: dict[str, bytes] = {}
        for key, value in form.multi_items():
            if isinstance(value, UploadFile):
                files[key] = await value.read()
            elif value != "":
                fields[key] = value
        for key in _JSON_FIELDS:
            if isinstance(fields.get(key), str):
                try:
                    fields[key] = json.loads(fields[key])
                except json.JSONDecodeError:
                    raise RequestError(
                        key,
                        fields[key][:60],
                        'JSON text of a list in a form field, e.g. [{"file": "image0", "frame_idx": 0}]',
                    ) from None
        return fields, files
    if ctype not in ("application/json", ""):
        raise ApiError(
            415,
            f"Content-Type {ctype!r} is not allowed: application/json or multipart/form-data",
            code="unsupported_media_type",
        )
    try:
        body = json.loads(await request.body() or b"null")
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ApiError(400, f"the body is not JSON ({exc.__class__.__name__}: {exc})", code="bad_body") from None
    if not isinstance(body, dict):
        raise ApiError(
            422,
            'the body must be a JSON object with at least a prompt, e.g. {"prompt": "..."}',
            "prompt",
            "invalid_value",
        )
    return body, {}


def _page(name: str) -> str:
    return resources.files("ltx2_edge.service").joinpath("web", name).read_text(encoding="utf-8")


def create_app(
    service: VideoService, *, token: str | None = None, allowed_hosts: tuple[str, ...] | None = None
) -> Guards:
    """The ASGI app of ``service``: FastAPI inside ``Guards``. ``token`` None: no token needed."""
    api = FastAPI(title="ltx2-edge", version=__version__, docs_url=None, redoc_url=None, openapi_url=None)
    model = lambda: service.engine.model if service.engine is not None else "ltx-2"  # noqa: E731

    @api.exception_handler(ApiError)
    async def _api_error(_request: Request, exc: ApiError) -> JSONResponse:
        return _error(exc.status, exc.message, exc.param, exc.code, exc.headers)

    @api.exception_handler(RequestError)
    async def _request_error(_request: Request, exc: RequestError) -> JSONResponse:
        param, message = request_error(exc, {})
        return _error(422, message, param, "invalid_value")

    @api.exception_handler(RequestValidationError)
    async def _validation(_request: Request, exc: RequestValidationError) -> JSONResponse:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err.get("loc", ()))
        return _error(422, f"{where}: {err.get('msg', 'invalid')}", where, "invalid_value")

    @api.exception_handler(HTTPException)
    async def _http(_request: Request, exc: HTTPException) -> JSONResponse:
        hint = "; the API is under /v1/videos" if exc.status_code == 404 else ""
        return _error(exc.status_code, f"{exc.detail}{hint}", code="http_error", headers=exc.headers)

    @api.exception_handler(Exception)
    async def _internal(_request: Request, exc: Exception) -> JSONResponse:  # logged with its traceback by Starlette
        return _error(
            500, f"internal error ({type(exc).__name__}); the server's log has the traceback", code="internal"
        )

    @api.get("/", include_in_schema=False)
    async def index() -> Response:
        return Response(_page("index.html"), media_type="text/html; charset=utf-8", headers=_PAGE_HEADERS)

    @api.get("/app.js", include_in_schema=False)
    async def script() -> Response:
        return Response(_page("app.js"), media_type="text/javascript; charset=utf-8", headers=_PAGE_HEADERS)

    @api.get("/health")
    async def health() -> JSONResponse:
        state = service.health()
        starting = state["status"] == "starting"
        return JSONResponse(
            {**state, "version": __version__, "model": model()},
            status_code=503 if starting else 200,
            headers={"Retry-After": "5"} if starting else None,
        )

    @api.post("/v1/videos")
    async def create(request: Request) -> JSONResponse:
        fields, files = await _fields(request, service.config.max_body_bytes)
        key = request.headers.get("idempotency-key")
        record, created = await _in_thread(service.create, fields, files, key)
        headers = {"openai-poll-after-ms": str(service.config.poll_after_ms)}
        if not created:
            headers["Idempotent-Replayed"] = "true"
        return JSONResponse(video_object(record, model()), headers=headers)

    @api.get("/v1/videos")
    async def list_videos(after: str | None = None, limit: int = 20, order: str = "desc") -> JSONResponse:
        records, more = service.list(after, limit, order)
        data = [video_object(r, model()) for r in records]
        return JSONResponse(
            {
                "object": "list",
                "data": data,
                "first_id": data[0]["id"] if data else None,
                "last_id": data[-1]["id"] if data else None,
                "has_more": more,
            }
        )

    @api.get("/v1/videos/{video_id}")
    async def retrieve(video_id: str) -> JSONResponse:
        return JSONResponse(
            video_object(service.get(video_id), model()),
            headers={"openai-poll-after-ms": str(service.config.poll_after_ms)},
        )

    @api.delete("/v1/videos/{video_id}")
    async def delete(video_id: str) -> JSONResponse:
        service.delete(video_id)
        return JSONResponse({"id": video_id, "object": "video.deleted", "deleted": True})

    @api.post("/v1/videos/{video_id}/cancel")
    async def cancel(video_id: str) -> JSONResponse:
        return JSONResponse(video_object(service.cancel(video_id), model()))

    @api.get("/v1/videos/{video_id}/content")
    async def content(video_id: str, variant: str | None = None) -> FileResponse:
        path = service.content_path(video_id, variant)
        return FileResponse(path, media_type="video/mp4", filename=f"{video_id}.mp4", content_disposition_type="inline")

    @api.get("/v1/videos/{video_id}/events")
    async def events(video_id: str, request: Request) -> StreamingResponse:
        record = service.get(video_id)
        service.announce_end(record)
        last = request.headers.get("last-event-id", "")
        after = int(last) if last.isdigit() else 0

        async def stream():  # noqa: ANN202
            yield "retry: 2000\n\n"
            async for event in service.hub.stream(video_id, after):
                yield ": keepalive\n\n" if event is None else event.sse()

        return StreamingResponse(
            stream(), media_type="text/event-stream", headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
        )

    @api.get("/v1/plan")
    async def plan(request: Request) -> JSONResponse:
        return JSONResponse(await _in_thread(service.plan, dict(request.query_params)))

    return Guards(api, token=token, allowed_hosts=allowed_hosts, max_body_bytes=service.config.max_body_bytes)


async def _in_thread(fn, *args):  # noqa: ANN001, ANN202
    """Run blocking work (file checks, the planner, SQLite) off the event loop."""
    from starlette.concurrency import run_in_threadpool

    return await run_in_threadpool(fn, *args)
