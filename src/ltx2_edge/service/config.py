"""The service's settings (``ServiceConfig``, from ``ltx2-edge serve``'s flags) and ``ApiError``, the refusal every
part of the service raises and ``app`` turns into an HTTP answer. Plain data: this module must never read a file
or speak HTTP.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from ltx2_edge.errors import RequestError

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
