"""Request bodies and response shapes of the API, in the OpenAI Videos shape, and their translation to a request.

``POST /v1/videos`` takes the OpenAI fields (``prompt``, ``model``, ``size`` as ``WIDTHxHEIGHT``, ``seconds``) and
ours (``negative_prompt``, ``seed``, ``num_frames``, ``frame_rate``, ``pipeline``, ``num_inference_steps``,
``guidance``, ``audio_channels``, ``images``, ``loras``), as JSON or as multipart form fields (what the stock
``openai`` client sends; ``images`` and ``loras`` are then JSON text). ``CreateBody`` checks the types; the values
are checked by ``GenerationRequest``, built by the CLI's own ``_request`` from a namespace that starts from the
CLI's defaults: one validation, one set of defaults, for both.

Images are uploads (base64 ``data`` in JSON, or a file part named by ``file``; ``input_reference`` is frame 0 at
strength 1), saved by ``files`` under generated names. LoRAs are named, not given as paths: ``name`` must be the
stem of a ``.safetensors`` file in the server's ``--lora-dir``. A request path never reaches the filesystem.

This module must never read a file, and never put a server path into a message a client gets (``public_message``).
"""

from __future__ import annotations

import argparse
import functools
import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, ValidationError

from ltx2_edge.errors import RequestError

if TYPE_CHECKING:
    from ltx2_edge.request import GenerationRequest

OBJECT_FIELDS = (
    "prompt",
    "model",
    "size",
    "seconds",
    "negative_prompt",
    "seed",
    "num_frames",
    "frame_rate",
    "pipeline",
    "num_inference_steps",
    "guidance",
    "audio_channels",
    "images",
    "loras",
)
_SIZE = re.compile(r"^\s*(\d{1,5})\s*[xX]\s*(\d{1,5})\s*$")
# The CLI flags of request fields, as messages from the request checks name them, and the API's names for them.
# Other flags (--budget, --lora-dir, ...) are the server's settings and keep their flag names.
_FLAGS = {"prompt": "prompt", "negative-prompt": "negative_prompt", "width": "width", "height": "height",
          "num-frames": "num_frames", "frame-rate": "frame_rate", "num-inference-steps": "num_inference_steps",
          "seed": "seed", "guidance": "guidance", "audio-channels": "audio_channels", "pipeline": "pipeline",
          "image": "images", "lora": "loras"}  # fmt: skip
_FLAG = re.compile(r"(?<![\w-])--(" + "|".join(sorted(_FLAGS, key=len, reverse=True)) + r")(?![\w-])")
_LORA_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
# What a field allows when its type is wrong (the value checks name their own allowed values).
_ALLOWED = {
    "prompt": "a non-empty text",
    "size": "WIDTHxHEIGHT, e.g. 512x288 (multiples of 32)",
    "seconds": "a positive number of seconds, e.g. 4",
    "seed": "an integer from 0 to 2**63-1",
    "num_frames": "8k+1 frames (1, 9, 17, ..., 97, 121)",
    "frame_rate": "a positive number of frames per second, e.g. 24",
    "num_inference_steps": "a positive integer",
    "audio_channels": "1 (mono) or 2 (stereo)",
    "images": 'a list of {"data": BASE64 | "file": FORM_FIELD, "frame_idx": N, "strength": S, "crf": C}',
    "loras": 'a list of {"name": NAME, "strength": S} (NAME: a file in the server\'s --lora-dir)',
}


class ImageBody(BaseModel):
    """One conditioning image: base64 ``data`` (JSON) or ``file``, the name of a multipart file part."""

    model_config = ConfigDict(extra="forbid")
    data: str | None = None
    file: str | None = None
    frame_idx: int = 0
    strength: float = 1.0
    crf: int | None = None


class LoraBody(BaseModel):
    """A LoRA from the server's ``--lora-dir``, by name, and its strength."""

    model_config = ConfigDict(extra="forbid")
    name: str
    strength: float = 1.0


class CreateBody(BaseModel):
    """``POST /v1/videos`` (also the query of ``GET /v1/plan``)."""

    model_config = ConfigDict(extra="forbid")
    prompt: str
    model: str | None = None
    size: str | None = None
    seconds: float | None = None
    negative_prompt: str | None = None
    seed: int | None = None
    num_frames: int | None = None
    frame_rate: float | None = None
    pipeline: str | None = None
    num_inference_steps: int | None = None
    guidance: str | None = None
    audio_channels: int | None = None
    images: list[ImageBody] = []
    loras: list[LoraBody] = []


def _loc(loc: tuple) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def parse_body(raw: Mapping[str, Any]) -> CreateBody:
    """Type-check a body; ``RequestError`` naming the first wrong field and what it allows."""
    try:
        return CreateBody.model_validate(dict(raw))
    except ValidationError as exc:
        err = exc.errors()[0]
        field = _loc(tuple(err["loc"]))
        top = str(err["loc"][0]) if err["loc"] else field
        if err["type"] == "extra_forbidden":
            known = ", ".join(OBJECT_FIELDS) if len(err["loc"]) == 1 else _ALLOWED.get(top, "")
            raise RequestError(field, err.get("input"), f"nothing: no such field (the fields are {known})") from None
        if err["type"] == "missing":
            raise RequestError(field, None, f"required: {_ALLOWED.get(top, err['msg'].lower())}") from None
        raise RequestError(field, err.get("input"), _ALLOWED.get(top, err["msg"].lower())) from None


def parse_size(size: str | None) -> tuple[int, int] | None:
    """``"WIDTHxHEIGHT"`` -> (width, height); None stays None (the CLI's default size)."""
    if size is None:
        return None
    match = _SIZE.match(size)
    if match is None:
        raise RequestError("size", size, _ALLOWED["size"])
    return int(match.group(1)), int(match.group(2))


def frames_for_seconds(seconds: float, frame_rate: float) -> int:
    """The 8k+1 frame count nearest to ``seconds`` at ``frame_rate`` (4 s at 24 fps: 97)."""
    if not math.isfinite(seconds) or seconds <= 0:
        raise RequestError("seconds", seconds, _ALLOWED["seconds"])
    return 8 * max(0, round(seconds * frame_rate / 8)) + 1


def check_lora_name(name: str, index: int) -> str:
    """A LoRA name is a plain file stem (no separators, no leading dot)."""
    if not _LORA_NAME.match(name):
        raise RequestError(
            f"loras[{index}].name",
            name,
            "the name of a .safetensors file in the server's "
            "--lora-dir, without its extension (letters, digits, . _ -)",
        )
    return name


@functools.lru_cache(maxsize=1)
def cli_defaults() -> dict[str, Any]:
    """The values ``ltx2-edge generate`` runs with when a flag is left out, read from the CLI's own parser."""
    from ltx2_edge.cli.parser import build_parser

    return vars(build_parser().parse_args(["generate", "--gemma-root", "-", "--prompt", "-"]))


def request_from_params(
    params: Mapping[str, Any],
    image_paths: list[Path],
    lora_paths: list[Path],
    distilled_lora: tuple[Path, float] | None,
) -> GenerationRequest:
    """``params`` (``to_params``' output) -> ``GenerationRequest`` through the CLI's ``_request``.

    ``image_paths`` and ``lora_paths`` are where the server keeps the job's uploads and the named LoRAs;
    ``distilled_lora`` the server's file for stage 2 of ``two-stage``."""
    from ltx2_edge.cli.generate import _request

    ns = dict(cli_defaults())
    for name in (
        "prompt",
        "negative_prompt",
        "width",
        "height",
        "num_frames",
        "frame_rate",
        "num_inference_steps",
        "seed",
        "guidance",
        "audio_channels",
        "pipeline",
    ):
        if params.get(name) is not None:
            ns[name] = params[name]
    ns["images"] = [
        [
            str(path),
            str(img["frame_idx"]),
            repr(float(img["strength"])),
            *([str(img["crf"])] if img.get("crf") is not None else []),
        ]
        for path, img in zip(image_paths, params.get("images", ()), strict=True)
    ]
    ns["loras"] = [
        [str(path), repr(float(lora["strength"]))]
        for path, lora in zip(lora_paths, params.get("loras", ()), strict=True)
    ]
    pipeline = ns["pipeline"]
    ns["distilled_lora"] = None
    if pipeline == "two-stage" and distilled_lora is not None:
        ns["distilled_lora"] = [str(distilled_lora[0]), repr(float(distilled_lora[1]))]
    return _request(argparse.Namespace(**ns))


def to_params(body: CreateBody, upload_names: list[str]) -> dict[str, Any]:
    """The job's stored parameters: the body with ``size`` and ``seconds`` resolved to numbers and each image's
    bytes replaced by the name of its saved upload. What a re-run after a restart is built from."""
    params: dict[str, Any] = {
        name: getattr(body, name)
        for name in (
            "prompt",
            "negative_prompt",
            "seed",
            "num_frames",
            "frame_rate",
            "pipeline",
            "num_inference_steps",
            "guidance",
            "audio_channels",
        )
    }
    wh = parse_size(body.size)
    params["width"], params["height"] = wh if wh is not None else (None, None)
    if body.seconds is not None:
        if body.num_frames is not None:
            raise RequestError("seconds", body.seconds, "unset when num_frames is given (num_frames sets the length)")
        fps = body.frame_rate if body.frame_rate is not None else cli_defaults()["frame_rate"]
        params["num_frames"] = frames_for_seconds(body.seconds, fps)
    params["images"] = [
        {"upload": name, "frame_idx": img.frame_idx, "strength": img.strength, "crf": img.crf}
        for name, img in zip(upload_names, body.images, strict=True)
    ]
    params["loras"] = [
        {"name": check_lora_name(lora.name, i), "strength": lora.strength} for i, lora in enumerate(body.loras)
    ]
    return params


def public_text(text: str, replacements: Mapping[str, str]) -> str:
    """``text`` with every server path in it replaced by the name the client knows it by (longest first)."""
    for path, public in sorted(replacements.items(), key=lambda kv: -len(kv[0])):
        text = text.replace(path, public)
    return text


def public_message(exc: Exception, replacements: Mapping[str, str]) -> str:
    """``exc``'s one line for an API client: server paths replaced (``public_text``), CLI flags spelled as the
    API's field names (``--num-frames`` -> ``num_frames``)."""
    return _FLAG.sub(lambda m: _FLAGS[m.group(1)], public_text(str(exc), replacements))


def request_error(exc: RequestError, replacements: Mapping[str, str]) -> tuple[str, str]:
    """(the API field, the one-line message) of a refused value."""
    param = exc.param.replace("image[", "images[").replace(".path", "")
    param = {"image": "images", "lora": "loras"}.get(param, param)  # the CLI's flags are singular
    value = public_text(exc.value, replacements) if isinstance(exc.value, str) else exc.value
    shown = repr(value) if len(repr(value)) <= 120 else repr(value)[:100] + "..."
    allowed = public_message(Exception(exc.allowed), replacements)
    return ("size" if param in ("width", "height") else param), f"{param}={shown} is not allowed: {allowed}"


def _seconds_text(num_frames: int, frame_rate: float) -> str:
    return f"{num_frames / frame_rate:.2f}".rstrip("0").rstrip(".")


def video_object(record: Any, model: str) -> dict[str, Any]:
    """A job as the OpenAI ``Video`` object, plus our fields (``stage``, ``started_at``, ``attempts``, ``request``,
    ``plan``, ``report``, ``expired``)."""
    p, defaults = record.params, cli_defaults()
    width = p.get("width") or defaults["width"]
    height = p.get("height") or defaults["height"]
    frames = p.get("num_frames") or defaults["num_frames"]
    fps = p.get("frame_rate") or defaults["frame_rate"]
    error = None
    if record.error_code is not None:
        error = {"code": record.error_code, "message": record.error_message}
    public_request = {k: v for k, v in p.items() if k != "images"}
    public_request["images"] = [{k: v for k, v in img.items() if k != "upload"} for img in p.get("images", ())]

    def ts(value: float | None) -> int | None:
        return int(value) if value is not None else None

    return {
        "id": record.id,
        "object": "video",
        "model": model,
        "status": record.status,
        "progress": int(record.progress),
        "created_at": int(record.created_at),
        "completed_at": ts(record.completed_at),
        "expires_at": ts(record.expires_at),
        "error": error,
        "prompt": p.get("prompt"),
        "seconds": _seconds_text(frames, fps),
        "size": f"{width}x{height}",
        "remixed_from_video_id": None,
        "stage": record.stage,
        "started_at": ts(record.started_at),
        "attempts": record.attempts,
        "cancel_requested": record.cancel_requested,
        "expired": record.expired,
        "request": public_request,
        "plan": record.summary,
        "report": record.report,
    }


def error_body(
    message: str, param: str | None = None, code: str | None = None, kind: str = "invalid_request_error"
) -> dict[str, Any]:
    """The OpenAI error shape: ``{"error": {"message", "type", "param", "code"}}`` (its client reads ``message``)."""
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}
