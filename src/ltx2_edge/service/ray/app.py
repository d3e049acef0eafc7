"""The Ray Serve application: one ingress (the service's HTTP API) in front of N generation replicas.

``build_application`` makes it from the same settings plain ``serve`` uses; ``ltx2-edge serve --ray`` runs it
(``launch``), and Ray's own ``serve run`` does through ``build``, an application builder whose arguments are
``ltx2-edge serve``'s flags without their dashes (the same parser reads them, so every flag means the same)::

    serve run ltx2_edge.service.ray.app:build checkpoint-path=/m/ltx-2-19b.safetensors gemma-root=/m/gemma \\
        budget=32GiB replicas=2

or a config file (``docs/ray.md`` has a full one) with ``import_path: ltx2_edge.service.ray.app:build`` and those
flags under ``args``. Where the replicas run: ``num_gpus=1`` each when ``--device`` is cuda, or is left out and
the Ray cluster has GPUs (Ray gives each its own); else one CPU each, computing on one torch thread.

This module imports Ray inside its functions only.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ltx2_edge.service.config import ServiceConfig
from ltx2_edge.service.engine import EngineConfig
from ltx2_edge.service.ray.scale import FleetScale
from ltx2_edge.service.ray.store_seam import SqliteStoreSpec, StoreSpec

APP_NAME = "ltx2-edge"
MAX_JOBS_PER_REPLICA = 1000  # Serve's own cap on calls in flight at a replica; the queue limit is the real one
ROUTING_STATS_PERIOD_S = 1.0
CPUS_PER_REPLICA = 1


def uses_gpus(engine_config: EngineConfig) -> bool:
    """Whether each replica asks Ray for a GPU: ``--device`` cuda, or no ``--device`` on a cluster with GPUs."""
    device = engine_config.settings.device
    if device is not None:
        return str(device).startswith("cuda")
    import ray

    return ray.cluster_resources().get("GPU", 0) > 0


def build_application(
    engine_config: EngineConfig,
    service_config: ServiceConfig,
    scale: FleetScale,
    *,
    token: str | None,
    allowed_hosts: tuple[str, ...] | None,
    store: StoreSpec | None = None,
) -> Any:
    """The bound Ray Serve application (ingress and replicas), ready for ``serve.run``."""
    from ray import serve
    from ray.serve.config import RequestRouterConfig

    from ltx2_edge.service.ray.ingress import FleetIngress
    from ltx2_edge.service.ray.replica import GenerationReplica
    from ltx2_edge.service.ray.router import ROUTER_PATH

    gpu = uses_gpus(engine_config)
    replicas = serve.deployment(
        GenerationReplica,
        name="generation",
        ray_actor_options={"num_gpus": 1} if gpu else {"num_cpus": CPUS_PER_REPLICA},
        max_ongoing_requests=MAX_JOBS_PER_REPLICA,
        request_router_config=RequestRouterConfig(
            request_router_class=ROUTER_PATH, request_routing_stats_period_s=ROUTING_STATS_PERIOD_S
        ),
        health_check_period_s=5,
        **scale.serve_options(),
    )
    ingress = serve.deployment(
        serve.ingress()(FleetIngress),
        name="ingress",
        num_replicas=1,  # the store's one writer and every job's event stream (see ingress)
        ray_actor_options={"num_cpus": 0},
        max_ongoing_requests=MAX_JOBS_PER_REPLICA,  # event streams stay open for a job's whole run
    )
    spec = store if store is not None else SqliteStoreSpec(service_config.data_dir)
    bound_replicas = replicas.bind(engine_config, None if gpu else CPUS_PER_REPLICA)
    return ingress.bind(bound_replicas, engine_config, service_config, spec, token, allowed_hosts)


def build(args: Mapping[str, str]) -> Any:
    """``serve run``'s application builder: ``args`` are ``ltx2-edge serve`` flags without their dashes (a flag
    that takes no value: ``true``). Host and port are Serve's own (``serve run``'s options, or the config's
    ``http_options``)."""
    from ltx2_edge.cli.parser import build_parser
    from ltx2_edge.cli.serve import fleet_settings

    argv = ["serve", "--ray"]
    for key, value in args.items():
        flag = "--" + key.lstrip("-").replace("_", "-")
        if str(value).lower() == "true":
            argv.append(flag)
        else:
            argv += [flag, *str(value).split()]
    settings = fleet_settings(build_parser().parse_args(argv))
    token, hosts = settings.access()
    return build_application(settings.engine, settings.service, settings.scale, token=token, allowed_hosts=hosts)
