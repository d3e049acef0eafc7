"""``ltx2-edge serve`` (the always-on video service) and ``ltx2-edge submit`` (a client for scripts and robots).

``add_commands`` registers both on the main parser. ``serve`` takes the model flags and the run settings of
``generate`` (the same actions, so the same names, defaults and help texts) and the service's own flags; its
requests' fields come from the API. ``submit`` posts one request to a running server and, with ``--wait``,
follows it to its end with a progress bar on stderr; the final video object is printed on stdout as JSON.

Nothing here imports torch, FastAPI or the engine until a command runs (``ltx2-edge --help`` stays light).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ltx2_edge.errors import RequestError

# generate's run-settings flags that serve takes as they are (``_settings`` reads them).
_SETTINGS = (
    "spatial_upsampler_path",
    "device",
    "quantization",
    "keep_bf16",
    "quantize_all",
    "keep_resident",
    "budget",
    "host_budget",
    "unified",
    "prefetch_depth",
    "cuda_allocator",
    "compile",
    "cuda_graph",
    "video_encoder",
    "prequantized",
)
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*$")
_UNIT_S = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}
TOKEN_ENV = "LTX2_EDGE_TOKEN"


def parse_duration(text: str, flag: str = "ttl") -> float | None:
    """``"24h"``, ``"30m"``, ``"90s"``, ``"3600"``, ``"7d"`` -> seconds; ``"none"`` -> None (never)."""
    if text.strip().lower() == "none":
        return None
    match = _DURATION.match(text.lower())
    if match is None or float(match.group(1)) <= 0:
        raise RequestError(flag, text, "a positive duration such as 24h, 30m, 90s, 7d, or none")
    return float(match.group(1)) * _UNIT_S[match.group(2)]


def default_data_dir() -> Path:
    """$XDG_DATA_HOME/ltx2-edge/serve (default ~/.local/share/ltx2-edge/serve)."""
    base = Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share")
    return base / "ltx2-edge" / "serve"


def add_commands(
    sub: argparse._SubParsersAction,
    add_model_args: Callable[[argparse.ArgumentParser], None],
    add_clip_args: Callable[[argparse.ArgumentParser], None],
) -> None:
    """Register ``serve`` and ``submit`` (``parser.build_parser`` calls this with its own helpers)."""
    serve = sub.add_parser("serve", help="an always-on local video service: OpenAI Videos API, durable queue, page")
    add_model_args(serve)
    clip = argparse.ArgumentParser(add_help=False)
    add_clip_args(clip)
    for action in clip._actions:  # the same actions as generate's: one definition of each flag and its help
        if action.dest in _SETTINGS:
            serve._add_action(action)
    s = serve.add_argument_group("service")
    s.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on (default 127.0.0.1, this machine "
        "only); any other address requires a token (--token, or one generated and printed once)",
    )
    s.add_argument("--port", type=int, default=8000, help="TCP port (default 8000)")
    s.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="jobs, uploads and outputs (default $XDG_DATA_HOME/ltx2-edge/serve, i.e. ~/.local/share/ltx2-edge/serve)",
    )
    s.add_argument(
        "--token",
        default=None,
        help=f"the Bearer token clients must send (default: ${TOKEN_ENV} if set; "
        "none on loopback; generated and printed once otherwise)",
    )
    s.add_argument(
        "--queue-limit",
        type=int,
        default=16,
        help="jobs that may wait; more get 429 with Retry-After (default 16; every waiting job is in the next batch)",
    )
    s.add_argument(
        "--ttl",
        default="24h",
        help="how long outputs are kept after a job completes: 24h (default), 30m, 7d, ... or none",
    )
    s.add_argument(
        "--max-attempts",
        type=int,
        default=3,
        help="runs of a job the server died during before it is failed as interrupted (default 3)",
    )
    s.add_argument("--max-body-mb", type=int, default=32, help="largest request body, in MiB (default 32)")
    s.add_argument("--max-image-mb", type=int, default=16, help="largest uploaded image, in MiB (default 16)")
    s.add_argument(
        "--lora-dir",
        type=Path,
        default=None,
        help="folder of LoRA .safetensors files requests may name "
        '(loras: [{"name": STEM, "strength": S}]); requests never give paths',
    )
    s.add_argument(
        "--distilled-lora",
        nargs="+",
        default=None,
        metavar=("PATH", "STRENGTH"),
        help="the distilled LoRA for stage 2 of --pipeline two-stage requests",
    )
    s.add_argument("--log-level", choices=("debug", "info", "warning", "error"), default="info")
    r = serve.add_argument_group("scale-out on Ray Serve (pip install 'ltx2-edge[ray]')")
    r.add_argument(
        "--ray",
        action="store_true",
        help="the same API in front of generation replicas on a Ray cluster, one device and budget each (a local "
        "cluster is started unless RAY_ADDRESS names one)",
    )
    r.add_argument("--replicas", type=int, default=None, help="with --ray: this many replicas (default 1)")
    r.add_argument(
        "--autoscale",
        default=None,
        metavar="MIN..MAX",
        help="with --ray: Ray Serve adds and removes replicas between MIN and MAX as jobs wait (e.g. 1..4)",
    )

    submit = sub.add_parser("submit", help="send one request to a running `ltx2-edge serve` (--wait: follow it)")
    submit.add_argument(
        "--server", default="http://127.0.0.1:8000", help="the server's URL (default http://127.0.0.1:8000)"
    )
    submit.add_argument("--token", default=None, help=f"Bearer token (default: ${TOKEN_ENV})")
    submit.add_argument("--prompt", required=True, help="what to generate")
    submit.add_argument("--negative-prompt", default=None)
    submit.add_argument("--size", default=None, help="WIDTHxHEIGHT (server default 512x288)")
    submit.add_argument("--seconds", type=float, default=None, help="clip length (or --num-frames)")
    submit.add_argument("--num-frames", type=int, default=None, help="8k+1 frames (server default 97)")
    submit.add_argument("--frame-rate", type=float, default=None)
    submit.add_argument("--num-inference-steps", type=int, default=None)
    submit.add_argument("--seed", type=int, default=None)
    submit.add_argument("--pipeline", default=None)
    submit.add_argument("--guidance", default=None)
    submit.add_argument("--audio-channels", type=int, default=None)
    submit.add_argument(
        "--image",
        dest="images",
        nargs="+",
        action="append",
        default=[],
        metavar="ARG",
        help="a local image to upload: PATH FRAME_IDX STRENGTH [CRF] (repeatable)",
    )
    submit.add_argument(
        "--lora",
        dest="loras",
        nargs="+",
        action="append",
        default=[],
        metavar=("NAME", "STRENGTH"),
        help="a LoRA of the server's --lora-dir by name, and its strength (repeatable)",
    )
    submit.add_argument(
        "--idempotency-key",
        default=None,
        help="sent as Idempotency-Key: a retried submit with the same key gets the same job",
    )
    submit.add_argument("--wait", action="store_true", help="follow the job to its end (progress bar on stderr)")
    submit.add_argument(
        "--output-path", type=Path, default=None, help="download the MP4 here when it completes (implies --wait)"
    )
    submit.add_argument("--quiet", action="store_true", help="no progress bar")


def run_serve(args: argparse.Namespace) -> int:
    if args.ray:
        return _run_fleet(args)
    if args.replicas is not None or args.autoscale is not None:
        flag = "replicas" if args.replicas is not None else "autoscale"
        raise RequestError(flag, getattr(args, flag), "only with --ray (one box runs one worker)")
    from ltx2_edge.service.server import serve

    return serve(*_configs(args))


def _configs(args: argparse.Namespace) -> tuple:
    """(EngineConfig, ServiceConfig, ListenConfig) from serve's flags, every flag checked."""
    from ltx2_edge.cli.generate import _settings
    from ltx2_edge.cli.parser import parse_lora_arg
    from ltx2_edge.service.config import MIB, ServiceConfig
    from ltx2_edge.service.engine import EngineConfig
    from ltx2_edge.service.server import ListenConfig

    if (args.checkpoint_path is None) == (args.distilled_checkpoint_path is None):
        raise RequestError(
            "checkpoint-path",
            args.checkpoint_path,
            "exactly one of --checkpoint-path (one-stage, "
            "two-stage) or --distilled-checkpoint-path (distilled, distilled-one-stage)",
        )
    distilled = args.distilled_checkpoint_path is not None
    checkpoint = args.distilled_checkpoint_path if distilled else args.checkpoint_path
    lora = parse_lora_arg(args.distilled_lora, "distilled-lora") if args.distilled_lora else None
    if args.lora_dir is not None and not args.lora_dir.is_dir():
        raise RequestError("lora-dir", str(args.lora_dir), "an existing folder of LoRA .safetensors files")
    service = ServiceConfig(
        data_dir=args.data_dir or default_data_dir(),
        queue_limit=args.queue_limit,
        max_attempts=args.max_attempts,
        ttl_seconds=parse_duration(args.ttl),
        max_body_bytes=args.max_body_mb * MIB,
        max_image_bytes=args.max_image_mb * MIB,
        lora_dir=args.lora_dir.resolve() if args.lora_dir is not None else None,
        distilled_lora=(lora.path.resolve(), lora.strength) if lora is not None else None,
        pipelines=("distilled-one-stage", "distilled") if distilled else ("one-stage", "two-stage"),
    )
    engine = EngineConfig(checkpoint, args.gemma_root, _settings(args), model_name="ltx-2")
    listen = ListenConfig(args.host, args.port, args.token or os.environ.get(TOKEN_ENV), args.log_level)
    return engine, service, listen


def fleet_settings(args: argparse.Namespace) -> Any:
    """``serve --ray``'s settings (``service.ray.launch.FleetSettings``), every flag checked; a one-line error
    naming ``pip install 'ltx2-edge[ray]'`` when Ray Serve is not installed."""
    import importlib.util

    from ltx2_edge.errors import Ltx2EdgeError
    from ltx2_edge.service.ray.scale import parse_scale

    scale = parse_scale(args.replicas, args.autoscale)
    if importlib.util.find_spec("ray") is None or importlib.util.find_spec("ray.serve") is None:
        raise Ltx2EdgeError("--ray needs Ray Serve, which is not installed here: pip install 'ltx2-edge[ray]'")
    if args.device is not None and args.device.startswith("cuda:"):
        raise RequestError("device", args.device, "cuda or cpu with --ray (Ray gives each replica a GPU of its own)")
    from ltx2_edge.service.ray.launch import FleetSettings

    return FleetSettings(*_configs(args), scale)


def _run_fleet(args: argparse.Namespace) -> int:
    settings = fleet_settings(args)
    from ltx2_edge.service.ray.launch import serve_fleet

    return serve_fleet(settings)


def run_submit(args: argparse.Namespace) -> int:
    from ltx2_edge.service.client import ServiceClient, image_field

    fields: dict[str, object] = {"prompt": args.prompt}
    for name in (
        "negative_prompt",
        "size",
        "seconds",
        "num_frames",
        "frame_rate",
        "num_inference_steps",
        "seed",
        "pipeline",
        "guidance",
        "audio_channels",
    ):
        if getattr(args, name) is not None:
            fields[name] = getattr(args, name)
    images = []
    for i, values in enumerate(args.images):
        if len(values) not in (3, 4):
            raise RequestError(f"image[{i}]", " ".join(values), "PATH FRAME_IDX STRENGTH [CRF]")
        try:
            crf = int(values[3]) if len(values) == 4 else None
            images.append(image_field(Path(values[0]), int(values[1]), float(values[2]), crf))
        except ValueError:
            raise RequestError(
                f"image[{i}]", " ".join(values), "FRAME_IDX and CRF integers, STRENGTH a number"
            ) from None
    if images:
        fields["images"] = images
    loras = []
    for values in args.loras:
        if len(values) not in (1, 2):
            raise RequestError("lora", " ".join(values), "NAME and an optional STRENGTH")
        try:
            loras.append({"name": values[0], "strength": float(values[1]) if len(values) == 2 else 1.0})
        except ValueError:
            raise RequestError("lora", " ".join(values), "a number as STRENGTH") from None
    if loras:
        fields["loras"] = loras
    client = ServiceClient(args.server, args.token or os.environ.get(TOKEN_ENV))
    video = client.create(fields, args.idempotency_key)
    print(f"ltx2-edge submit: {video['id']} {video['status']}", file=sys.stderr)
    if args.wait or args.output_path is not None:
        video = client.wait(video["id"], show_progress=not args.quiet)
        if video["status"] == "completed" and args.output_path is not None:
            size = client.download(video["id"], args.output_path)
            print(f"ltx2-edge submit: wrote {args.output_path} ({size} bytes)", file=sys.stderr)
    print(json.dumps({k: v for k, v in video.items() if k != "report"}, indent=2))
    if video["status"] in ("failed", "cancelled"):
        reason = (video.get("error") or {}).get("message") or video["status"]
        print(f"ltx2-edge: error: {video['id']} {video['status']}: {reason}", file=sys.stderr)
        return 1
    return 0
