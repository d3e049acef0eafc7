"""The durable job store: every accepted job is a row before POST answers, so ``kill -9`` loses none.

``JobStore`` is the interface the service uses (a second implementation for several hosts will come later);
``SqliteJobStore`` keeps it in one SQLite file in WAL mode with ``synchronous=FULL``: a job the server answered
for survives a crash of the process and of the machine. Status moves only forward:
``queued -> in_progress -> completed | failed | cancelled``, and back to ``queued`` only through ``recover`` (a job
that was running when the server died; after ``max_attempts`` tries it is ``failed`` with code ``interrupted``)
or ``requeue`` (an orderly shutdown stopped it).

This module must never touch files other than its database, and never decide policy (limits, TTLs): callers
pass them in.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

QUEUED, IN_PROGRESS, COMPLETED, FAILED, CANCELLED = "queued", "in_progress", "completed", "failed", "cancelled"
TERMINAL: tuple[str, ...] = (COMPLETED, FAILED, CANCELLED)
INTERRUPTED = "interrupted"  # error code of a job that was running each time the server died


class QueueFull(Exception):
    """``waiting`` jobs already wait, the limit given to ``add``."""

    def __init__(self, waiting: int) -> None:
        self.waiting = waiting
        super().__init__(f"{waiting} jobs are waiting")


class IdempotencyConflict(Exception):
    """An ``Idempotency-Key`` already names a job made from a different request."""

    def __init__(self, job_id: str) -> None:
        self.job_id = job_id
        super().__init__(job_id)


@dataclass(frozen=True)
class NewJob:
    """What admission hands the store: the validated parameters, not the raw request."""

    id: str
    params: dict[str, Any]
    summary: dict[str, Any]
    idempotency_key: str | None = None
    body_hash: str | None = None


@dataclass(frozen=True)
class JobRecord:
    """One job as stored. Times are Unix seconds (float); ``params`` rebuild its ``GenerationRequest``."""

    id: str
    seq: int
    status: str
    created_at: float
    params: dict[str, Any]
    summary: dict[str, Any] = field(default_factory=dict)
    started_at: float | None = None
    completed_at: float | None = None
    expires_at: float | None = None
    progress: int = 0
    stage: str | None = None
    attempts: int = 0
    error_code: str | None = None
    error_message: str | None = None
    report: dict[str, Any] | None = None
    cancel_requested: bool = False
    expired: bool = False
    idempotency_key: str | None = None
    body_hash: str | None = None

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL


class JobStore(ABC):
    """Where jobs live. Every method is atomic and safe to call from any thread."""

    @abstractmethod
    def add(self, job: NewJob, queue_limit: int) -> tuple[JobRecord, bool]:
        """Insert ``job`` as queued unless ``queue_limit`` jobs wait (``QueueFull``). With an idempotency key
        already used: the earlier job and False (same ``body_hash``) or ``IdempotencyConflict``."""

    @abstractmethod
    def get(self, job_id: str) -> JobRecord | None: ...

    @abstractmethod
    def list_jobs(self, after: str | None, limit: int, order: str) -> tuple[list[JobRecord], bool]:
        """A page of jobs by creation (``order`` asc or desc) after job ``after``; and whether more follow."""

    @abstractmethod
    def waiting(self, limit: int) -> list[JobRecord]:
        """Up to ``limit`` queued jobs, oldest first."""

    @abstractmethod
    def counts(self) -> dict[str, int]:
        """Jobs per status."""

    @abstractmethod
    def start(self, job_id: str, now: float) -> bool:
        """queued -> in_progress (one more attempt); False if it is not queued any more."""

    @abstractmethod
    def set_progress(self, job_id: str, progress: int, stage: str | None) -> None: ...

    @abstractmethod
    def finish(
        self,
        job_id: str,
        status: str,
        now: float,
        *,
        error: tuple[str, str] | None = None,
        report: dict[str, Any] | None = None,
        expires_at: float | None = None,
    ) -> bool:
        """Mark a job that has not ended yet ``status`` (one of ``TERMINAL``); False if it had ended or is gone."""

    @abstractmethod
    def requeue(self, job_id: str) -> None:
        """in_progress -> queued without counting the attempt (an orderly shutdown interrupted it)."""

    @abstractmethod
    def cancel(self, job_id: str, now: float) -> JobRecord | None:
        """A queued job ends cancelled now; a running one gets ``cancel_requested``; an ended one is unchanged."""

    @abstractmethod
    def delete(self, job_id: str) -> bool: ...

    @abstractmethod
    def recover(self, max_attempts: int, now: float) -> dict[str, str]:
        """At startup: every job left in_progress is queued again, or failed ``interrupted`` after
        ``max_attempts`` attempts (cancelled if a cancel was asked); returns job id -> new status."""

    @abstractmethod
    def interrupt(self, job_id: str, max_attempts: int, now: float) -> str | None:
        """One job's runner was lost while it ran (a fleet replica died; the server itself lives on): as
        ``recover`` for that job alone (queued again with the attempt counted, failed ``interrupted`` after
        ``max_attempts``, cancelled if a cancel was asked); its new status, None if it was not in_progress."""

    @abstractmethod
    def expire(self, now: float) -> list[str]:
        """Ended jobs whose outputs expired by ``now``: marked expired, their ids returned (files to delete)."""

    @abstractmethod
    def close(self) -> None: ...


_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    status TEXT NOT NULL,
    created_at REAL NOT NULL,
    started_at REAL,
    completed_at REAL,
    expires_at REAL,
    progress INTEGER NOT NULL DEFAULT 0,
    stage TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,
    params TEXT NOT NULL,
    summary TEXT NOT NULL DEFAULT '{}',
    error_code TEXT,
    error_message TEXT,
    report TEXT,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    expired INTEGER NOT NULL DEFAULT 0,
    idempotency_key TEXT UNIQUE,
    body_hash TEXT
);
CREATE INDEX IF NOT EXISTS jobs_status ON jobs (status, seq);
"""
_COLUMNS = (
    "id, seq, status, created_at, params, summary, started_at, completed_at, expires_at, progress, stage, "
    "attempts, error_code, error_message, report, cancel_requested, expired, idempotency_key, body_hash"
)


def _record(row: tuple) -> JobRecord:
    (
        job_id,
        seq,
        status,
        created,
        params,
        summary,
        started,
        completed,
        expires,
        progress,
        stage,
        attempts,
        code,
        message,
        report,
        cancel,
        expired,
        key,
        body_hash,
    ) = row
    return JobRecord(
        job_id,
        seq,
        status,
        created,
        json.loads(params),
        json.loads(summary),
        started,
        completed,
        expires,
        progress,
        stage,
        attempts,
        code,
        message,
        json.loads(report) if report else None,
        bool(cancel),
        bool(expired),
        key,
        body_hash,
    )


def _interrupted_message(what: str, attempts: int, max_attempts: int) -> str:
    return (
        f"{what} while this job ran, {attempts} time(s) of {max_attempts} allowed "
        "(--max-attempts); check the server's log and memory, then submit it again"
    )


class SqliteJobStore(JobStore):
    """One SQLite connection guarded by a lock (jobs are few; the lock keeps every method atomic)."""

    def __init__(self, path: Path) -> None:
        self._lock = threading.Lock()
        # isolation_level=None: autocommit; multi-statement changes take BEGIN IMMEDIATE themselves.
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None, timeout=30)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")  # an answered POST survives power loss too, not only kill -9
        self._db.executescript(_SCHEMA)

    def _one(self, where: str, args: tuple) -> JobRecord | None:
        row = self._db.execute(f"SELECT {_COLUMNS} FROM jobs WHERE {where}", args).fetchone()
        return _record(row) if row else None

    def add(self, job: NewJob, queue_limit: int) -> tuple[JobRecord, bool]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                if job.idempotency_key is not None:
                    earlier = self._one("idempotency_key = ?", (job.idempotency_key,))
                    if earlier is not None:
                        self._db.execute("COMMIT")
                        if earlier.body_hash != job.body_hash:
                            raise IdempotencyConflict(earlier.id)
                        return earlier, False
                (waiting,) = self._db.execute("SELECT COUNT(*) FROM jobs WHERE status = ?", (QUEUED,)).fetchone()
                if waiting >= queue_limit:
                    raise QueueFull(waiting)
                self._db.execute(
                    "INSERT INTO jobs (id, status, created_at, params, summary, idempotency_key, body_hash) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (
                        job.id,
                        QUEUED,
                        time.time(),
                        json.dumps(job.params, default=str),
                        json.dumps(job.summary, default=str),
                        job.idempotency_key,
                        job.body_hash,
                    ),
                )
                self._db.execute("COMMIT")
            except BaseException:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise
            record = self._one("id = ?", (job.id,))
        assert record is not None  # just inserted under the lock
        return record, True

    def get(self, job_id: str) -> JobRecord | None:
        with self._lock:
            return self._one("id = ?", (job_id,))

    def list_jobs(self, after: str | None, limit: int, order: str) -> tuple[list[JobRecord], bool]:
        desc = order == "desc"
        with self._lock:
            where, args = "1", ()
            if after is not None:
                anchor = self._db.execute("SELECT seq FROM jobs WHERE id = ?", (after,)).fetchone()
                if anchor is not None:
                    where, args = ("seq < ?" if desc else "seq > ?"), (anchor[0],)
            rows = self._db.execute(
                f"SELECT {_COLUMNS} FROM jobs WHERE {where} ORDER BY seq {'DESC' if desc else 'ASC'} LIMIT ?",
                (*args, limit + 1),
            ).fetchall()
        return [_record(r) for r in rows[:limit]], len(rows) > limit

    def waiting(self, limit: int) -> list[JobRecord]:
        with self._lock:
            rows = self._db.execute(
                f"SELECT {_COLUMNS} FROM jobs WHERE status = ? ORDER BY seq LIMIT ?", (QUEUED, limit)
            ).fetchall()
        return [_record(r) for r in rows]

    def counts(self) -> dict[str, int]:
        with self._lock:
            rows = self._db.execute("SELECT status, COUNT(*) FROM jobs GROUP BY status").fetchall()
        return {status: n for status, n in rows}

    def start(self, job_id: str, now: float) -> bool:
        with self._lock:
            cur = self._db.execute(
                "UPDATE jobs SET status = ?, attempts = attempts + 1, started_at = ?, stage = NULL, "
                "progress = 0 WHERE id = ? AND status = ?",
                (IN_PROGRESS, now, job_id, QUEUED),
            )
        return cur.rowcount == 1

    def set_progress(self, job_id: str, progress: int, stage: str | None) -> None:
        with self._lock:
            self._db.execute(
                "UPDATE jobs SET progress = ?, stage = ? WHERE id = ? AND status = ?",
                (progress, stage, job_id, IN_PROGRESS),
            )

    def finish(
        self,
        job_id: str,
        status: str,
        now: float,
        *,
        error: tuple[str, str] | None = None,
        report: dict[str, Any] | None = None,
        expires_at: float | None = None,
    ) -> bool:
        if status not in TERMINAL:
            raise ValueError(f"finish() with status {status!r}")
        code, message = error if error is not None else (None, None)
        with self._lock:
            cur = self._db.execute(
                "UPDATE jobs SET status = ?, completed_at = ?, error_code = ?, error_message = ?, report = ?, "
                "expires_at = ?, progress = CASE WHEN ? = 'completed' THEN 100 ELSE progress END "
                "WHERE id = ? AND status IN (?, ?)",
                (
                    status,
                    now,
                    code,
                    message,
                    json.dumps(report, default=str) if report is not None else None,
                    expires_at,
                    status,
                    job_id,
                    QUEUED,
                    IN_PROGRESS,
                ),
            )
        return cur.rowcount == 1

    def requeue(self, job_id: str) -> None:
        with self._lock:
            self._db.execute(
                "UPDATE jobs SET status = ?, attempts = MAX(attempts - 1, 0), progress = 0, stage = NULL "
                "WHERE id = ? AND status = ?",
                (QUEUED, job_id, IN_PROGRESS),
            )

    def cancel(self, job_id: str, now: float) -> JobRecord | None:
        with self._lock:
            self._db.execute(
                "UPDATE jobs SET status = ?, completed_at = ? WHERE id = ? AND status = ?",
                (CANCELLED, now, job_id, QUEUED),
            )
            self._db.execute("UPDATE jobs SET cancel_requested = 1 WHERE id = ? AND status = ?", (job_id, IN_PROGRESS))
            return self._one("id = ?", (job_id,))

    def delete(self, job_id: str) -> bool:
        with self._lock:
            return self._db.execute("DELETE FROM jobs WHERE id = ?", (job_id,)).rowcount == 1

    def recover(self, max_attempts: int, now: float) -> dict[str, str]:
        out: dict[str, str] = {}
        with self._lock:
            rows = self._db.execute(
                "SELECT id, attempts, cancel_requested FROM jobs WHERE status = ?", (IN_PROGRESS,)
            ).fetchall()
            for job_id, attempts, cancel in rows:
                if cancel:
                    self._db.execute(
                        "UPDATE jobs SET status = ?, completed_at = ? WHERE id = ?", (CANCELLED, now, job_id)
                    )
                    out[job_id] = CANCELLED
                elif attempts >= max_attempts:
                    message = _interrupted_message("the server stopped", attempts, max_attempts)
                    self._db.execute(
                        "UPDATE jobs SET status = ?, completed_at = ?, error_code = ?, error_message = ? WHERE id = ?",
                        (FAILED, now, INTERRUPTED, message, job_id),
                    )
                    out[job_id] = FAILED
                else:
                    self._db.execute(
                        "UPDATE jobs SET status = ?, progress = 0, stage = NULL WHERE id = ?", (QUEUED, job_id)
                    )
                    out[job_id] = QUEUED
        return out

    def interrupt(self, job_id: str, max_attempts: int, now: float) -> str | None:
        with self._lock:
            row = self._db.execute(
                "SELECT attempts, cancel_requested FROM jobs WHERE id = ? AND status = ?", (job_id, IN_PROGRESS)
            ).fetchone()
            if row is None:
                return None
            attempts, cancel = row
            if cancel:
                status, sql, args = CANCELLED, "status = ?, completed_at = ?", (CANCELLED, now)
            elif attempts >= max_attempts:
                message = _interrupted_message("its replica died", attempts, max_attempts)
                status = FAILED
                sql, args = "status = ?, completed_at = ?, error_code = ?, error_message = ?", (
                    FAILED, now, INTERRUPTED, message)  # fmt: skip
            else:
                status, sql, args = QUEUED, "status = ?, progress = 0, stage = NULL", (QUEUED,)
            # The status guard again: the row read above and this change are one step under the lock, and a
            # multi-process store must not turn a job that ended meanwhile back into a queued one.
            cur = self._db.execute(f"UPDATE jobs SET {sql} WHERE id = ? AND status = ?", (*args, job_id, IN_PROGRESS))
        return status if cur.rowcount == 1 else None

    def expire(self, now: float) -> list[str]:
        with self._lock:
            rows = self._db.execute(
                "SELECT id FROM jobs WHERE expired = 0 AND expires_at IS NOT NULL AND expires_at <= ?", (now,)
            ).fetchall()
            ids = [r[0] for r in rows]
            self._db.executemany("UPDATE jobs SET expired = 1 WHERE id = ?", [(i,) for i in ids])
        return ids

    def close(self) -> None:
        with self._lock:
            self._db.close()
