"""``ltx2-edge serve``: the service under uvicorn, from one call.

The port opens at once and ``/health`` answers ``starting`` while the model files are checked (headers only) on a
thread; then admission opens, the worker starts and health says ``ready`` (or ``busy``). Without ``--token`` a
server on a loopback address needs none; on any other address a token is generated and printed once, on stderr.
SIGINT/SIGTERM stop it in order: the running job stops at its next denoising step and goes back to the queue,
then the process ends by that signal (status 130 or 143 in a shell). ``kill -9`` loses nothing either (the store
and the atomic outputs see to it); it only costs the job an attempt.

This module must never print the token twice, and never bind beyond loopback without a token.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass

import uvicorn

from ltx2_edge.errors import Ltx2EdgeError
from ltx2_edge.service.app import create_app
from ltx2_edge.service.auth import LOOPBACK_NAMES, is_loopback, resolve_token
from ltx2_edge.service.core import ServiceConfig, VideoService
from ltx2_edge.service.engine import Engine, EngineConfig

log = logging.getLogger("ltx2_edge.service")
GRACEFUL_SHUTDOWN_S = 3  # open event streams would hold a shutdown forever


@dataclass(frozen=True)
class ListenConfig:
    """Where the server listens and who may call it."""

    host: str = "127.0.0.1"
    port: int = 8000
    token: str | None = None
    log_level: str = "info"


class _Server(uvicorn.Server):
    """uvicorn, stopping the service inside its own shutdown: uvicorn re-raises SIGTERM/SIGINT once it is done
    (the exit status says which signal stopped it), so code after ``run()`` would never run."""

    def __init__(self, config: uvicorn.Config, on_stop: Callable[[], None]) -> None:
        super().__init__(config)
        self._on_stop = on_stop

    async def shutdown(self, sockets: list | None = None) -> None:
        await super().shutdown(sockets)
        await asyncio.to_thread(self._on_stop)


def _stop(service: VideoService) -> None:
    """The running job stops at its next denoising step and goes back to the queue; then the engine is freed."""
    service.close()
    if service.engine is not None:
        service.engine.close()
        print("ltx2-edge serve: stopped; unfinished jobs stay queued for the next start", file=sys.stderr, flush=True)


def _load_engine(engine_config: EngineConfig, service: VideoService, server: uvicorn.Server, failed: list[str]) -> None:
    try:
        service.attach_engine(Engine(engine_config))
        log.info("ready: model %s, data in %s", engine_config.model_name, service.files.root)
    except Ltx2EdgeError as exc:
        failed.append(str(exc))
        server.should_exit = True
    except Exception as exc:
        log.exception("the model files could not be opened")
        failed.append(f"{type(exc).__name__}: {exc}")
        server.should_exit = True


def serve(engine_config: EngineConfig, service_config: ServiceConfig, listen: ListenConfig) -> int:
    """Run the service until it is stopped; the exit status (0, or 2 when the model could not be opened)."""
    logging.basicConfig(level=listen.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    token, generated = resolve_token(listen.host, listen.token)
    if generated:
        print(
            f"ltx2-edge serve: --host {listen.host} is not loopback, so the API needs a token; this one is printed "
            f"once: send 'Authorization: Bearer {token}' (or pass --token next time)",
            file=sys.stderr,
            flush=True,
        )
    service = VideoService(service_config)
    for job_id, status in service.recovered.items():
        log.info("recovered job %s: %s", job_id, status)
    hosts = LOOPBACK_NAMES if is_loopback(listen.host) else None
    app = create_app(service, token=token, allowed_hosts=hosts)
    config = uvicorn.Config(
        app,
        host=listen.host,
        port=listen.port,
        log_level=listen.log_level,
        lifespan="off",
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S,
        server_header=False,
    )
    stopped = threading.Event()

    def stop_once() -> None:
        if not stopped.is_set():
            stopped.set()
            _stop(service)

    server = _Server(config, stop_once)
    failed: list[str] = []
    loader = threading.Thread(target=_load_engine, args=(engine_config, service, server, failed), daemon=True)
    loader.start()
    try:
        server.run()
    finally:
        stop_once()
    if failed:
        print(f"ltx2-edge: error: {failed[0]}", file=sys.stderr)
        return 2
    return 0
