"""What every HTTP request passes before a route sees it, as one ASGI middleware, in this order:

1. **Host** (loopback servers): the ``Host`` header must name this machine (``localhost``, ``127.0.0.1``,
   ``[::1]``), so a web page that rebinds its own DNS name to 127.0.0.1 cannot reach the API.
2. **Origin**: a request that changes something (POST, PUT, PATCH, DELETE) from a page of another origin is
   refused. CORS is off: no ``Access-Control-*`` header is ever sent, so other origins cannot read answers either.
3. **Token**: ``/v1/...`` needs ``Authorization: Bearer`` when the server has a token (``auth``).
4. **Body size**: a body over ``max_body_bytes`` is refused with 413, from ``Content-Length`` before it is read,
   or while it streams in; a body within it is read here once and handed on.

Refusals use the API's error shape. This module must never call the service, and never read past the limit.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import urlsplit

from ltx2_edge.service.api_models import error_body
from ltx2_edge.service.auth import BearerAuth

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
_UNSAFE = frozenset({"POST", "PUT", "PATCH", "DELETE"})


async def _refuse(send: Send, status: int, message: str, code: str, headers: dict[str, str] | None = None) -> None:
    body = json.dumps(error_body(message, code=code)).encode()
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    raw += [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


def _hostname(host: str) -> str:
    return (urlsplit(f"//{host}").hostname or "").lower()


class Guards:
    """The middleware; ``token`` None: no token needed; ``allowed_hosts`` None: any Host header."""

    def __init__(
        self, app: ASGIApp, *, token: str | None, allowed_hosts: tuple[str, ...] | None, max_body_bytes: int
    ) -> None:
        self.app = app
        self.auth = BearerAuth(token) if token else None
        self.allowed_hosts = frozenset(h.strip("[]").lower() for h in allowed_hosts) if allowed_hosts else None
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        host = headers.get("host", "")
        if self.allowed_hosts is not None and _hostname(host) not in self.allowed_hosts:
            await _refuse(
                send,
                403,
                f"Host {host!r} is not this server's name: a loopback server answers only "
                "localhost, 127.0.0.1 and [::1] (start it with --host to serve other names)",
                "bad_host",
            )
            return
        method = scope["method"].upper()
        origin = headers.get("origin")
        if method in _UNSAFE and origin is not None and urlsplit(origin).netloc.lower() != host.lower():
            await _refuse(
                send,
                403,
                f"cross-origin request from {origin!r} refused: CORS is off; call the API from "
                "this server's own page or from a program",
                "cross_origin",
            )
            return
        if (
            self.auth is not None
            and scope["path"].startswith("/v1/")
            and not self.auth.allows(headers.get("authorization"))
        ):
            await _refuse(
                send,
                401,
                "missing or wrong token: send Authorization: Bearer <token> (the one given to "
                "--token, or printed by the server when it started)",
                "unauthorized",
                {"WWW-Authenticate": "Bearer"},
            )
            return
        if method not in ("POST", "PUT", "PATCH"):
            await self.app(scope, receive, send)
            return
        declared = headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_body_bytes:
            await self._too_large(send, int(declared))
            return
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                await self._too_large(send, size)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body, sent = b"".join(chunks), False

        async def replay() -> Message:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _too_large(self, send: Send, size: int) -> None:
        mib = 1024**2
        await _refuse(
            send,
            413,
            f"the request body is over {self.max_body_bytes / mib:.0f} MiB (at least "
            f"{size / mib:.1f} MiB); send smaller images, or start the server with a larger "
            "--max-body-mb",
            "body_too_large",
        )
