"""Outputs expire: a thread that deletes the files of completed jobs whose ``expires_at`` has passed (``--ttl``).

The job's record stays (its status, report and ``expired: true``), so a client learns why the content is gone
(410) instead of meeting a job that vanished. This module must never delete a file of a job that has not expired.
"""

from __future__ import annotations

import logging
import threading
import time

from ltx2_edge.service.files import DataDir
from ltx2_edge.service.store import JobStore

log = logging.getLogger("ltx2_edge.service")


class Janitor:
    """Checks every ``interval`` seconds (a quarter of the TTL, at most a minute)."""

    def __init__(self, store: JobStore, files: DataDir, ttl_seconds: float | None) -> None:
        self.store, self.files = store, files
        self.interval = min(60.0, max(0.05, ttl_seconds / 4)) if ttl_seconds is not None else None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def sweep(self) -> list[str]:
        """Expire what is due now; returns the job ids whose files were deleted."""
        ids = self.store.expire(time.time())
        for job_id in ids:
            self.files.remove_outputs(job_id)
        if ids:
            log.info("expired %d video(s): %s", len(ids), ", ".join(ids))
        return ids

    def start(self) -> None:
        if self.interval is None:
            return
        self.sweep()
        self._thread = threading.Thread(target=self._loop, name="ltx2-edge-expiry", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        assert self.interval is not None  # start() returns early without a TTL
        while not self._stop.wait(self.interval):
            self.sweep()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
