"""A small client of the service, for ``ltx2-edge submit`` and for scripts: the standard library only.

``ServiceClient`` speaks the API (``create``, ``retrieve``, ``cancel``, ``events``, ``download``); ``wait`` follows
a job's server-sent events to its end with a progress bar on stderr, falling back to polling when the stream
breaks. Errors from the server arrive as ``ServiceError`` with its one-line message.

This module must never import torch or the engine (a robot's process may have neither), and never write a
partial download where the caller asked for the file: it writes a temporary beside it and renames it.
"""

from __future__ import annotations

import base64
import json
import os
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from ltx2_edge.atomic import temp_path
from ltx2_edge.errors import Ltx2EdgeError

TERMINAL = ("completed", "failed", "cancelled")


class ServiceError(Ltx2EdgeError):
    """The server refused or could not be reached; the message says why (and what to do)."""

    def __init__(self, message: str, status: int | None = None) -> None:
        self.status = status
        super().__init__(message)


class ServiceClient:
    """The API at ``base_url`` (e.g. ``http://127.0.0.1:8000``), with an optional Bearer ``token``."""

    def __init__(self, base_url: str, token: str | None = None, timeout: float = 60.0) -> None:
        self.base = base_url.rstrip("/")
        if self.base.endswith("/v1"):
            self.base = self.base[:-3]
        self.token, self.timeout = token, timeout

    def _open(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: float | None = None,
    ):  # noqa: ANN202  (an http.client.HTTPResponse)
        h = dict(headers or {})
        if self.token:
            h["Authorization"] = f"Bearer {self.token}"
        req = urllib.request.Request(self.base + path, data=body, method=method, headers=h)
        try:
            return urllib.request.urlopen(req, timeout=timeout or self.timeout)
        except urllib.error.HTTPError as exc:
            try:
                message = json.loads(exc.read())["error"]["message"]
            except (ValueError, KeyError, TypeError):
                message = f"{exc.code} {exc.reason}"
            retry = exc.headers.get("Retry-After")
            raise ServiceError(message + (f" (Retry-After {retry} s)" if retry else ""), exc.code) from None
        except (urllib.error.URLError, OSError) as exc:
            raise ServiceError(f"cannot reach {self.base} ({exc}); is `ltx2-edge serve` running there?") from None

    def _json(self, method: str, path: str, doc: Any = None, headers: Mapping[str, str] | None = None) -> Any:
        body = json.dumps(doc).encode() if doc is not None else None
        h = {"Content-Type": "application/json", **(headers or {})} if body is not None else dict(headers or {})
        with self._open(method, path, body, h) as res:
            return json.loads(res.read())

    def create(self, fields: Mapping[str, Any], idempotency_key: str | None = None) -> dict[str, Any]:
        """POST /v1/videos with ``fields`` (JSON); the video object."""
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        return self._json("POST", "/v1/videos", dict(fields), headers)

    def retrieve(self, video_id: str) -> dict[str, Any]:
        return self._json("GET", f"/v1/videos/{video_id}")

    def cancel(self, video_id: str) -> dict[str, Any]:
        return self._json("POST", f"/v1/videos/{video_id}/cancel")

    def health(self) -> dict[str, Any]:
        with self._open("GET", "/health") as res:
            return json.loads(res.read())

    def events(self, video_id: str) -> Iterator[tuple[str, dict[str, Any]]]:
        """(kind, data) of each server-sent event of the job, until its terminal one."""
        with self._open("GET", f"/v1/videos/{video_id}/events", timeout=60.0) as res:
            kind, data = "message", ""
            for raw in res:
                line = raw.decode("utf-8").rstrip("\r\n")
                if line.startswith("event: "):
                    kind = line[7:]
                elif line.startswith("data: "):
                    data += line[6:]
                elif line == "" and data:
                    yield kind, json.loads(data)
                    if kind in TERMINAL:
                        return
                    kind, data = "message", ""

    def download(self, video_id: str, path: Path) -> int:
        """The MP4 into ``path`` (written beside it first, renamed when complete); bytes written."""
        path = Path(path)
        temp = temp_path(path)
        try:
            with self._open("GET", f"/v1/videos/{video_id}/content") as res, open(temp, "wb") as out:
                size = 0
                while chunk := res.read(1 << 20):
                    out.write(chunk)
                    size += len(chunk)
            os.replace(temp, path)
        finally:
            temp.unlink(missing_ok=True)
        return size

    def wait(self, video_id: str, show_progress: bool = True, poll_s: float = 1.0) -> dict[str, Any]:
        """Follow the job to its end (progress bar on stderr); the final video object."""
        bar = _Bar(show_progress)
        try:
            try:
                for kind, data in self.events(video_id):
                    bar.update(data.get("progress"), _describe(kind, data))
            except ServiceError:
                pass  # the stream broke (proxy, restart): polling finds the end too
            while True:
                video = self.retrieve(video_id)
                bar.update(video.get("progress"), video.get("stage") or video["status"])
                if video["status"] in TERMINAL:
                    return video
                time.sleep(poll_s)
        finally:
            bar.close()


def image_field(path: Path, frame_idx: int, strength: float, crf: int | None) -> dict[str, Any]:
    """A local image file as the API's ``images`` item (base64 ``data``)."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise ServiceError(f"cannot read image {path}: {exc.strerror}") from None
    item: dict[str, Any] = {"data": base64.b64encode(data).decode(), "frame_idx": frame_idx, "strength": strength}
    if crf is not None:
        item["crf"] = crf
    return item


def _describe(kind: str, data: Mapping[str, Any]) -> str:
    if kind == "step":
        return f"{data['stage']} {data['step']}/{data['total']} ETA {data['eta_seconds']:.1f} s"
    return str(data.get("stage") or kind)


class _Bar:
    """One line on stderr: ``[#####-----]  42%  denoise 8/20 ETA 3.1 s``."""

    def __init__(self, show: bool) -> None:
        self.show = show and sys.stderr is not None
        self.last = ""

    def update(self, progress: object, text: str) -> None:
        if not self.show or not isinstance(progress, int):
            return
        filled = progress * 30 // 100
        line = f"[{'#' * filled}{'-' * (30 - filled)}] {progress:3d}%  {text}"[:100]
        if line != self.last:
            print("\r" + line.ljust(len(self.last)), end="", file=sys.stderr, flush=True)
            self.last = line

    def close(self) -> None:
        if self.show and self.last:
            print(file=sys.stderr, flush=True)
