"""The job store across processes, as the fleet uses it: a ``StoreSpec`` travels pickled and opens the same
store in another process; ``start`` is the claim (processes racing for one queued job: exactly one wins);
``interrupt`` is one lost runner's job, queued again with the attempt counted until ``max_attempts``, then failed
``interrupted``; a job with a cancel asked ends cancelled; a job that is not running is left alone."""

from __future__ import annotations

import pickle
import subprocess
import sys
import time

from ltx2_edge.service.ray.store_seam import SqliteStoreSpec, StoreSpec
from ltx2_edge.service.store import CANCELLED, FAILED, IN_PROGRESS, INTERRUPTED, QUEUED, NewJob

_CLAIM = """
import sys, time
from pathlib import Path
from ltx2_edge.service.ray.store_seam import SqliteStoreSpec
store = SqliteStoreSpec(Path(sys.argv[1])).open()
go = Path(sys.argv[1]) / "go"
while not go.exists():
    time.sleep(0.001)
print(store.start(sys.argv[2], time.time()))
"""


def _job(store, n: int = 0) -> str:
    job_id = f"video_{n:032x}"
    store.add(NewJob(job_id, {"prompt": "x"}, {}), queue_limit=100)
    return job_id


def test_spec_opens_the_same_store_in_another_process_and_the_claim_has_one_winner(tmp_path):
    spec: StoreSpec = SqliteStoreSpec(tmp_path)
    again = pickle.loads(pickle.dumps(spec))
    assert again == spec and "SQLite" in spec.describe()
    store = spec.open()
    job_id = _job(store)
    claimers = [subprocess.Popen([sys.executable, "-c", _CLAIM, str(tmp_path), job_id], stdout=subprocess.PIPE,
                                 text=True) for _ in range(4)]  # fmt: skip
    time.sleep(0.5)  # every claimer has opened its connection and waits at the line
    (tmp_path / "go").touch()
    answers = sorted(p.communicate(timeout=60)[0].strip() for p in claimers)
    assert answers == ["False", "False", "False", "True"]
    record = again.open().get(job_id)
    assert record.status == IN_PROGRESS and record.attempts == 1


def test_interrupt_requeues_with_the_attempt_counted_then_fails(tmp_path):
    store = SqliteStoreSpec(tmp_path).open()
    job_id = _job(store)
    assert store.interrupt(job_id, 2, time.time()) is None  # queued, not running: nothing to do
    assert store.start(job_id, time.time())
    store.set_progress(job_id, 40, "denoise")
    assert store.interrupt(job_id, 2, time.time()) == QUEUED
    record = store.get(job_id)
    assert (record.status, record.attempts, record.progress, record.stage) == (QUEUED, 1, 0, None)
    assert store.start(job_id, time.time())
    assert store.interrupt(job_id, 2, time.time()) == FAILED
    record = store.get(job_id)
    assert record.status == FAILED and record.error_code == INTERRUPTED and record.attempts == 2
    assert "--max-attempts" in record.error_message and "replica died" in record.error_message
    assert store.interrupt(job_id, 2, time.time()) is None  # ended: unchanged


def test_interrupt_of_a_job_with_a_cancel_asked_ends_it_cancelled(tmp_path):
    store = SqliteStoreSpec(tmp_path).open()
    job_id = _job(store)
    assert store.start(job_id, time.time())
    store.cancel(job_id, time.time())  # running: only asked
    assert store.interrupt(job_id, 3, time.time()) == CANCELLED
    assert store.get(job_id).status == CANCELLED
