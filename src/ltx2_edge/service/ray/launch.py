"""``ltx2-edge serve --ray``: start (or join) a Ray cluster, run the fleet application, stop it in order.

``ray.init()`` joins the cluster ``RAY_ADDRESS`` names, or starts a local one on this machine; Serve's HTTP proxy
listens on ``--host``/``--port``. The token rules are plain ``serve``'s: none needed on loopback, one generated
and printed once on any other address unless ``--token`` gives it. SIGINT/SIGTERM stop it as plain serve stops:
every running job stops at its next denoising step and goes back to the queue (the ingress sends the stops), then
the application and, if this command started it, the local cluster end; the exit status is the signal's (130 or
143). Jobs stay in the store for the next start.

This module must never print the token twice, and never bind beyond loopback without a token.
"""

from __future__ import annotations

import logging
import sys
import time
from dataclasses import dataclass

from ltx2_edge.errors import EXIT_INTERRUPTED
from ltx2_edge.service.auth import LOOPBACK_NAMES, is_loopback, resolve_token
from ltx2_edge.service.config import ServiceConfig
from ltx2_edge.service.engine import EngineConfig
from ltx2_edge.service.ray.scale import FleetScale
from ltx2_edge.service.server import ListenConfig

log = logging.getLogger("ltx2_edge.service.ray")
STOP_TIMEOUT_S = 120.0


@dataclass
class FleetSettings:
    """Everything ``serve --ray`` (and ``serve run``'s builder) needs, from the flags."""

    engine: EngineConfig
    service: ServiceConfig
    listen: ListenConfig
    scale: FleetScale
    _access: tuple[str | None, tuple[str, ...] | None] | None = None

    def access(self) -> tuple[str | None, tuple[str, ...] | None]:
        """(token, allowed Host names): resolved once, a generated token printed once on stderr."""
        if self._access is None:
            token, generated = resolve_token(self.listen.host, self.listen.token)
            if generated:
                print(
                    f"ltx2-edge serve: --host {self.listen.host} is not loopback, so the API needs a token; this one "
                    f"is printed once: send 'Authorization: Bearer {token}' (or pass --token next time)",
                    file=sys.stderr,
                    flush=True,
                )
            self._access = (token, LOOPBACK_NAMES if is_loopback(self.listen.host) else None)
        return self._access


def serve_fleet(settings: FleetSettings) -> int:
    """Run the fleet until a signal stops it; the exit status."""
    import ray
    from ray import serve

    from ltx2_edge.service.ray.app import APP_NAME, build_application

    logging.basicConfig(
        level=settings.listen.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    token, hosts = settings.access()
    started_here = not ray.is_initialized()
    if started_here:
        ray.init(include_dashboard=False, logging_level=settings.listen.log_level.upper())
    try:
        serve.start(http_options={"host": settings.listen.host, "port": settings.listen.port})
        app = build_application(settings.engine, settings.service, settings.scale, token=token, allowed_hosts=hosts)
        serve.run(app, name=APP_NAME, route_prefix="/", blocking=False)
        print(
            f"ltx2-edge serve --ray: {settings.scale.describe()} behind http://{settings.listen.host}:"
            f"{settings.listen.port}; data in {settings.service.data_dir}",
            file=sys.stderr,
            flush=True,
        )
        while True:  # SIGTERM arrives as Terminated (a KeyboardInterrupt), SIGINT as KeyboardInterrupt
            time.sleep(3600)
    except KeyboardInterrupt as exc:
        status = getattr(exc, "exit_code", EXIT_INTERRUPTED)
        _stop(serve, APP_NAME)
        print("ltx2-edge serve --ray: stopped; unfinished jobs stay queued for the next start", file=sys.stderr)
        return status
    finally:
        if started_here:
            ray.shutdown()


def _stop(serve: object, app_name: str) -> None:
    try:
        serve.get_app_handle(app_name).stop_jobs.remote().result(timeout_s=STOP_TIMEOUT_S)  # type: ignore[attr-defined]
    except Exception as exc:  # the ingress is gone already: the store's recovery puts its jobs back at the next start
        log.warning("the ingress did not stop its jobs: %s", exc)
    serve.delete(app_name)  # type: ignore[attr-defined]
