"""Where a fleet keeps its jobs and clips: the seam between the service and its storage, and what a deployment
across several hosts must put behind it.

**What the fleet needs from the job store.** ``store.JobStore`` is the interface the service uses; ``StoreSpec``
says how the process that needs it (the ingress replica, wherever Ray places it) opens one. A spec travels to that
process pickled, so it holds only what names the store (a path, a DSN), never an open connection. The semantics
every implementation must keep, which the fleet relies on:

- ``add``: the queue-limit count and the insert in one transaction (no two admissions both see room for one);
  the idempotency key unique.
- ``start``: the claim. ``queued -> in_progress`` only if still queued, in one statement, and the answer says who
  won: a cancel that arrived first, or a second dispatcher racing for the job, makes it ``False``.
- ``interrupt``: one job's runner lost (a replica died): back to queued with the attempt counted, or failed
  ``interrupted`` after ``max_attempts``, guarded on the job still being in_progress.
- ``finish`` only on a job that has not ended; ``requeue``, ``cancel``, ``recover``, ``expire`` as documented
  there. Durable before ``add`` returns (the POST is answered after it).

**One host** (what ships): ``SqliteStoreSpec``, the single-box store's SQLite file in the data directory. The
ingress is its only writer and runs on the host that holds the data directory; the generation replicas never open
it. Replicas on other hosts of the same Ray cluster work as long as the data directory is the same shared
filesystem at the same path on every host (they read uploads and write MP4s there, atomically: temporary name,
then rename, which a POSIX shared filesystem keeps atomic).

**Several hosts, or an ingress that may move** (a seam, not built here): a ``StoreSpec`` whose ``open`` returns a
``JobStore`` over a database every host reaches, e.g. PostgreSQL: ``add`` as ``INSERT ... SELECT ... WHERE (SELECT
count(*) ...) < limit`` under ``SERIALIZABLE`` (or an advisory lock); ``start`` as ``UPDATE jobs SET
status='in_progress' WHERE id=$1 AND status='queued' RETURNING id``; and, for workers that pull their own jobs
instead of an ingress pushing them, ``SELECT ... FOR UPDATE SKIP LOCKED LIMIT n`` so that concurrent claimers
never block on or double-take a row. Clips then need shared object storage (S3 or the like): replicas upload the
finished MP4 and report under the job's id (the upload is the commit: a multipart upload completed, or a PUT to
the final key after the file is whole), the ingress streams ``/content`` from there, and deletion and expiry
remove objects. ``clean_stale``'s pid test (dead writers' temporaries) then works on each replica's local scratch
directory, not on the shared store.

This module must never open a connection at import, and never decide policy (limits, TTLs).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from ltx2_edge.service.files import DataDir
from ltx2_edge.service.store import JobStore, SqliteJobStore


class StoreSpec(Protocol):
    """How any process of the fleet opens the shared job store (picklable: names the store, holds no handle)."""

    def open(self) -> JobStore:
        """A new connection to the store, for this process."""

    def describe(self) -> str:
        """Where the jobs are, for the log and the docs (no secret in it)."""


@dataclass(frozen=True)
class SqliteStoreSpec:
    """The single-box SQLite store in ``data_dir`` (``DataDir.db_path``): one host, one writer."""

    data_dir: Path

    def open(self) -> JobStore:
        return SqliteJobStore(DataDir(self.data_dir).db_path)

    def describe(self) -> str:
        return f"SQLite {DataDir(self.data_dir).db_path} (this host)"
