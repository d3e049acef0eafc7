"""The worker loop and the job lifecycle against a fake engine that keeps ``Engine.run_batch``'s contract: batches
are what waited when the worker became free (so no job waits behind more than one batch), every job ends once,
an engine that raises fails its jobs, a shutdown puts the running job back in the queue, and outputs expire."""

from __future__ import annotations

import threading
import time

import pytest

from ltx2_edge.service.core import ApiError, ServiceConfig, VideoService


class FakeEngine:
    """Records each batch; the first batch blocks until ``release`` is set. ``mode``: complete, raise, or wait for
    a cancel (stopping like the real engine after a step)."""

    model = "ltx-2"

    def __init__(self, mode: str = "complete") -> None:
        self.mode, self.batches = mode, []
        self.release, self.running = threading.Event(), threading.Event()
        self.waiting_seen: list[list[str]] = []  # the prompts queued behind each job as it completed

    def admit(self, request) -> dict:
        return {"predicted_peak_bytes": 1}

    def run_batch(self, jobs, on_event, is_cancelled, waiting=None) -> None:
        self.batches.append([j.job_id for j in jobs])
        for job in jobs:
            if is_cancelled(job.job_id):
                on_event(job.job_id, "cancelled", {})
                continue
            on_event(job.job_id, "started", {})
            self.running.set()
            if self.mode == "raise":
                raise RuntimeError("engine bug")
            for i in range(1000):
                on_event(job.job_id, "step", {"stage": "denoise", "step": i + 1, "total": 1000, "progress": 50})
                if is_cancelled(job.job_id):
                    on_event(job.job_id, "cancelled", {})
                    break
                if self.mode == "complete" and (len(self.batches) > 1 or self.release.wait(0.01)):
                    self.waiting_seen.append([r.prompt for r in waiting()])
                    job.output_path.write_bytes(b"mp4")
                    on_event(job.job_id, "completed", {"report": {"stages": []}})
                    break
                time.sleep(0.005)

    def close(self) -> None:
        pass


def _service(tmp_path, engine, **cfg) -> VideoService:
    service = VideoService(ServiceConfig(tmp_path / "data", **cfg))
    service.attach_engine(engine)
    return service


def _post(service: VideoService, prompt: str) -> str:
    record, _ = service.create({"prompt": prompt, "size": "64x64", "num_frames": 9}, {}, None)
    return record.id


def _wait(predicate, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_a_job_waits_behind_at_most_one_batch(tmp_path):
    engine = FakeEngine()
    service = _service(tmp_path, engine, queue_limit=8)
    try:
        first = _post(service, "first")
        _wait(engine.running.is_set)  # batch 1 = [first], running
        later = [_post(service, f"later {i}") for i in range(3)]  # they arrive while batch 1 runs
        engine.release.set()
        _wait(lambda: all(service.store.get(j).status == "completed" for j in [first, *later]))
        assert engine.batches == [[first], later]  # all three in the very next batch, in arrival order
        record = service.store.get(first)
        assert record.progress == 100 and record.attempts == 1 and record.expires_at is not None
        assert service.files.output_path(first).read_bytes() == b"mp4"
    finally:
        service.close()


def test_the_engine_is_told_what_waits_behind_its_batch(tmp_path):
    # What --compile auto counts beyond the batch: the durable queue's requests, the running batch's own left out.
    engine = FakeEngine()
    service = _service(tmp_path, engine, queue_limit=8)
    try:
        first = _post(service, "first")
        _wait(engine.running.is_set)
        later = [_post(service, f"later {i}") for i in range(3)]
        service.cancel(later[1])  # a cancelled job waits for nothing: not counted
        engine.release.set()
        _wait(lambda: all(service.store.get(j).terminal for j in [first, *later]))
        assert engine.waiting_seen[0] == ["later 0", "later 2"]  # asked while batch 1 ran
        assert engine.waiting_seen[1:] == [[], []]  # batch 2 is everything that waited: nothing behind it
    finally:
        service.close()


def test_an_engine_that_raises_fails_its_jobs_and_the_worker_goes_on(tmp_path):
    engine = FakeEngine("raise")
    service = _service(tmp_path, engine)
    try:
        job = _post(service, "boom")
        _wait(lambda: service.store.get(job).terminal)
        record = service.store.get(job)
        assert record.status == "failed" and record.error_code == "internal_error"
        assert "RuntimeError: engine bug" in record.error_message
        engine.mode = "complete"
        engine.release.set()
        again = _post(service, "fine")
        _wait(lambda: service.store.get(again).status == "completed")
    finally:
        service.close()


def test_cancel_and_delete_while_running_leave_no_files(tmp_path):
    engine = FakeEngine("wait")
    service = _service(tmp_path, engine)
    try:
        job = _post(service, "long")
        _wait(engine.running.is_set)
        assert service.cancel(job).cancel_requested
        _wait(lambda: service.store.get(job).status == "cancelled")
        engine.running.clear()
        doomed = _post(service, "deleted while it runs")
        _wait(engine.running.is_set)
        service.delete(doomed)
        _wait(lambda: not service.scheduler.busy)
        assert service.store.get(doomed) is None
        assert list(service.files.outputs.iterdir()) == [] and list(service.files.uploads.iterdir()) == []
    finally:
        service.close()


def test_shutdown_puts_the_running_job_back_without_counting_the_attempt(tmp_path):
    engine = FakeEngine("wait")
    service = _service(tmp_path, engine)
    job = _post(service, "interrupted by a restart")
    _wait(engine.running.is_set)
    service.close()  # as SIGTERM: stop at the next step
    again = VideoService(ServiceConfig(tmp_path / "data"))
    try:
        record = again.store.get(job)
        assert record.status == "queued" and record.attempts == 0
    finally:
        again.close()


def test_outputs_expire_after_the_ttl(tmp_path):
    engine = FakeEngine()
    engine.release.set()
    service = _service(tmp_path, engine, ttl_seconds=0.3)
    try:
        job = _post(service, "short-lived")
        _wait(lambda: service.store.get(job).status == "completed")
        assert service.content_path(job, None).is_file()
        # The janitor marks the record expired, then deletes the files (a crash between the two leaves a record that
        # says expired over a file still there, never the other way round): both happen within one sweep.
        _wait(lambda: service.store.get(job).expired and not service.files.output_path(job).exists(), timeout=5)
        with pytest.raises(ApiError) as gone:
            service.content_path(job, None)
        assert gone.value.status == 410 and "--ttl" in gone.value.message
        assert service.store.get(job).status == "completed"  # the record and its report stay
    finally:
        service.close()
