"""The service's data directory: where jobs, uploads and outputs live, under names the server generates.

Layout under ``--data-dir``::

    jobs.sqlite3 (+ -wal, -shm)   the job store
    uploads/<job id>-<n>.<ext>    conditioning images, kept until the job ends
    outputs/<job id>.mp4          the clip, and <job id>.report.json beside it

Every file name is made here from a job id the server generated (``new_job_id``) and that ``check_job_id``
accepts; a name or path from a request never reaches the filesystem. Uploads are written atomically (a hidden
temporary renamed into place, ``ltx2_edge.atomic``), as the engine writes outputs, so ``remove_temporaries`` at
startup finds every file an interrupted write left behind by its ``.partial-`` name.

This module must never read a path out of a request, never follow a user-given name, and never delete a file
outside ``uploads/`` and ``outputs/``.
"""

from __future__ import annotations

import re
import secrets
from pathlib import Path

from ltx2_edge.atomic import atomic_output
from ltx2_edge.errors import RequestError

JOB_ID = re.compile(r"^video_[0-9a-f]{32}$")
_UPLOAD = re.compile(r"^(video_[0-9a-f]{32})-(\d{1,3})\.(png|jpg|webp|bmp)$")
# Magic bytes of the image formats an upload may have; the extension is chosen from them, never from the client.
_IMAGE_MAGIC: tuple[tuple[bytes, int, str], ...] = (
    (b"\x89PNG\r\n\x1a\n", 0, "png"),
    (b"\xff\xd8\xff", 0, "jpg"),
    (b"WEBP", 8, "webp"),
    (b"BM", 0, "bmp"),
)
IMAGE_FORMATS = "a PNG, JPEG, WebP or BMP image"


def new_job_id() -> str:
    """A fresh job id: ``video_`` and 32 random hex digits (the OpenAI API's ``video_...`` shape)."""
    return f"video_{secrets.token_hex(16)}"


def check_job_id(job_id: str) -> bool:
    """True when ``job_id`` has the shape ``new_job_id`` makes (anything else names no job)."""
    return bool(JOB_ID.match(job_id))


def image_extension(data: bytes, field: str) -> str:
    """The extension of an uploaded image, from its first bytes; ``RequestError`` for anything else."""
    for magic, offset, ext in _IMAGE_MAGIC:
        if data[offset : offset + len(magic)] == magic:
            return ext
    raise RequestError(field, f"<{len(data)} bytes>", IMAGE_FORMATS)


class DataDir:
    """The directories of one service; creates them on construction."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root).resolve()
        self.uploads = self.root / "uploads"
        self.outputs = self.root / "outputs"
        for d in (self.root, self.uploads, self.outputs):
            d.mkdir(parents=True, exist_ok=True)

    @property
    def db_path(self) -> Path:
        return self.root / "jobs.sqlite3"

    def output_path(self, job_id: str) -> Path:
        """The MP4 of ``job_id`` (which must be a generated id)."""
        if not check_job_id(job_id):
            raise ValueError(f"not a job id: {job_id!r}")
        return self.outputs / f"{job_id}.mp4"

    def report_path(self, job_id: str) -> Path:
        """The run report the engine writes beside the MP4."""
        return self.output_path(job_id).with_suffix(".report.json")

    def save_upload(self, job_id: str, index: int, data: bytes, field: str) -> str:
        """Write an uploaded image as ``uploads/<job id>-<index>.<ext>`` (atomically); returns its name."""
        name = f"{job_id}-{index}.{image_extension(data, field)}"
        path = self.upload_path(name)
        with atomic_output(path, overwrite=False) as temp:
            temp.write_bytes(data)
        return name

    def upload_path(self, name: str) -> Path:
        """The path of an upload named by ``save_upload`` (the store keeps names, not paths)."""
        if not _UPLOAD.match(name):
            raise ValueError(f"not an upload name: {name!r}")
        return self.uploads / name

    def remove_uploads(self, job_id: str) -> None:
        """Delete the uploads of ``job_id`` (it ended, or was refused)."""
        for path in self.uploads.glob(f"{job_id}-*"):
            match = _UPLOAD.match(path.name)
            if match and match.group(1) == job_id:
                path.unlink(missing_ok=True)

    def remove_outputs(self, job_id: str) -> None:
        """Delete the MP4 and report of ``job_id``."""
        self.output_path(job_id).unlink(missing_ok=True)
        self.report_path(job_id).unlink(missing_ok=True)

    def remove_temporaries(self) -> list[str]:
        """Delete every temporary an interrupted write left (hidden ``.partial-`` files); returns their names."""
        removed = []
        for directory in (self.uploads, self.outputs):
            for path in directory.iterdir():
                if path.name.startswith(".") and ".partial-" in path.name and path.is_file():
                    path.unlink(missing_ok=True)
                    removed.append(path.name)
        return removed

    def remove_orphans(self, keep_uploads: set[str], keep_outputs: set[str]) -> list[str]:
        """Delete uploads of jobs not in ``keep_uploads`` and outputs of jobs not in ``keep_outputs``.

        After a crash the store is the truth: an MP4 renamed into place just before the job's completion was
        recorded belongs to a job that runs again, and files of deleted jobs have no owner.
        """
        removed = []
        for path in self.uploads.iterdir():
            match = _UPLOAD.match(path.name)
            if match and match.group(1) not in keep_uploads:
                path.unlink(missing_ok=True)
                removed.append(path.name)
        for path in self.outputs.iterdir():
            stem = path.name.split(".", 1)[0]
            if check_job_id(stem) and stem not in keep_outputs:
                path.unlink(missing_ok=True)
                removed.append(path.name)
        return removed
