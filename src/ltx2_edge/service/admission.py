"""What a request body means on this server: fields type-checked, uploads decoded, LoRAs found by name in
``--lora-dir``, the pipeline checked against the checkpoint, and the ``GenerationRequest`` built from the stored
parameters (by the CLI's own code, ``api_models.request_from_params``). Also the other way: the server paths in a
message or report replaced by the names a client knows (``images[0]``, a LoRA's name, ``<data-dir>``).

This module must never write a file (``files`` saves uploads), never touch the store, and never take a path
from a request.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ltx2_edge.errors import RequestError
from ltx2_edge.service import api_models
from ltx2_edge.service.config import MIB, ApiError, ServiceConfig
from ltx2_edge.service.files import DataDir

if TYPE_CHECKING:
    from ltx2_edge.request import GenerationRequest


class RequestReader:
    """Reads request bodies for one server (its settings and data directory)."""

    def __init__(self, config: ServiceConfig, files: DataDir) -> None:
        self.config, self.files = config, files

    def lora_paths(self, params: Mapping[str, Any]) -> list[Path]:
        """The files of the LoRAs ``params`` names, in ``--lora-dir``."""
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

    def replacements(self, params: Mapping[str, Any]) -> dict[str, str]:
        """Server path -> the name a client knows it by, for a job's messages and report."""
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
        return api_models.public_message(Exception(text), self.replacements(params))

    def request_for(self, params: Mapping[str, Any]) -> GenerationRequest:
        """``GenerationRequest`` of stored ``params`` (``RequestError`` with public names in its message)."""
        try:
            images = [self.files.upload_path(img["upload"]) for img in params.get("images", ())]
            return api_models.request_from_params(params, images, self.lora_paths(params), self.config.distilled_lora)
        except RequestError as exc:  # its value and text may hold the paths of uploads and LoRAs
            rep = self.replacements(params)
            value = api_models.public_text(exc.value, rep) if isinstance(exc.value, str) else exc.value
            raise RequestError(exc.field, value, api_models.public_text(exc.allowed, rep)) from None

    def images(self, body: api_models.CreateBody, files: Mapping[str, bytes]) -> list[tuple[str, bytes]]:
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

    def parse(self, fields: Mapping[str, Any], files: Mapping[str, bytes], model: str) -> api_models.CreateBody:
        """The body's fields type-checked, ``input_reference`` made frame 0, the pipeline checked against this
        server's checkpoint (and defaulted to its first), the model name checked."""
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
        if body.model not in (None, "ltx-2", model):
            raise RequestError("model", body.model, f"{model} (or leave it unset)")
        return body


def body_hash(body: api_models.CreateBody, images: list[tuple[str, bytes]]) -> str:
    """What makes two requests the same for ``Idempotency-Key``: the fields, and each image by its digest."""
    doc = body.model_dump(exclude={"images"})
    doc["images"] = [
        {**img.model_dump(exclude={"data", "file"}), "sha256": hashlib.sha256(data).hexdigest()}
        for img, (_, data) in zip(body.images, images, strict=True)
    ]
    return hashlib.sha256(json.dumps(doc, sort_keys=True, default=str).encode()).hexdigest()
