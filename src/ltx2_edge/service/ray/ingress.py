"""The fleet's front: the single-box service's HTTP app and ``VideoService``, with the fleet as its engine.

``FleetIngress`` is the class ``app.build_application`` turns into the ingress deployment (one replica): it
builds a ``FleetService`` (``VideoService`` with ``dispatcher.FleetDispatcher`` in its scheduler's place, and the
fleet's replicas in ``/health``), serves ``service.app.create_app``'s app unchanged through Ray Serve's HTTP proxy,
and attaches a ``fleet.FleetEngine`` once a generation replica answers (``/health`` says ``starting`` until then,
as on one box while the model files are checked).

One ingress replica, on purpose: it is the job store's one writer (SQLite on this host, ``store_seam``) and the
home of every job's server-sent events; throughput comes from the generation replicas behind it.

This module must never run a model, and never decide anything about a job that ``core`` decides on one box.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from ltx2_edge.service.app import create_app
from ltx2_edge.service.config import ServiceConfig
from ltx2_edge.service.core import VideoService
from ltx2_edge.service.engine import EngineConfig
from ltx2_edge.service.ray.dispatcher import FleetDispatcher
from ltx2_edge.service.ray.fleet import FleetEngine
from ltx2_edge.service.ray.ray_fleet import RayFleet
from ltx2_edge.service.ray.store_seam import StoreSpec

log = logging.getLogger("ltx2_edge.service.ray")
READY_POLL_S = 5.0


class FleetService(VideoService):
    """``VideoService`` whose queue goes to the fleet; ``/health`` lists the replicas it has heard from."""

    scheduler_class = FleetDispatcher

    def health(self) -> dict[str, Any]:
        state = super().health()
        state["replicas"] = self.scheduler.fleet_health()  # type: ignore[attr-defined]
        return state


class FleetIngress:
    """The ingress deployment's body (``serve.ingress()`` gives it its ASGI app from ``__serve_build_asgi_app__``)."""

    def __init__(
        self,
        replicas: Any,
        engine_config: EngineConfig,
        service_config: ServiceConfig,
        store: StoreSpec,
        token: str | None,
        allowed_hosts: tuple[str, ...] | None,
    ) -> None:
        self.service = FleetService(service_config, store.open())
        self.token, self.allowed_hosts = token, allowed_hosts
        self.fleet = RayFleet(replicas)
        self._closed = threading.Event()
        engine = FleetEngine(self.fleet, engine_config, service_config.max_attempts)
        threading.Thread(target=self._attach, args=(engine,), name="ltx2-edge-fleet-attach", daemon=True).start()

    def _attach(self, engine: FleetEngine) -> None:
        while not self._closed.is_set():
            try:
                self.fleet.ready(READY_POLL_S)
            except Exception as exc:  # no replica up yet (Serve is still starting them)
                log.info("waiting for a generation replica: %s", exc)
                continue
            if not self._closed.is_set():
                self.service.attach_engine(engine)
                log.info("ready: model %s, data in %s", engine.model, self.service.files.root)
            return

    def __serve_build_asgi_app__(self) -> Any:
        return create_app(self.service, token=self.token, allowed_hosts=self.allowed_hosts)

    def stop_jobs(self) -> None:
        """Orderly shutdown: every running job stops at its next step and goes back to the queue (its attempt not
        counted); the store closes. Safe to call twice."""
        if not self._closed.is_set():
            self._closed.set()
            self.service.close()

    def __del__(self) -> None:
        self.stop_jobs()
