"""The ingress's dispatcher against a fake fleet that keeps the replicas' contract (an ``assigned`` report, then
the engine's events; a dead replica's stream raises, as Ray raises ``ActorDiedError``): a job whose replica dies
mid-job runs again on another one with its attempt counted, the dead writer's temporaries gone; one that kills
every replica fails ``interrupted`` after --max-attempts with nothing left; a cancel goes to the replica holding
the job; each job carries its plan's smallest budget and its transformer to routing; /health lists the replicas."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

from ltx2_edge.atomic import temp_path
from ltx2_edge.pipeline import RunSettings
from ltx2_edge.service.config import ServiceConfig
from ltx2_edge.service.engine import EngineConfig
from ltx2_edge.service.ray.fleet import FleetEngine
from ltx2_edge.service.ray.ingress import FleetService
from ltx2_edge.service.ray.routing import ReplicaReport, transformer_key

MIN_BUDGET = 123 * 2**20


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


class FakeFleet:
    """``deaths[prompt]``: how many of that job's runs die after their first step. ``hold``: runs wait for a
    cancel."""

    def __init__(self, deaths: dict[str, int] | None = None, hold: bool = False) -> None:
        self.deaths, self.hold = deaths or {}, hold
        self.runs: list[tuple[str, str, object]] = []  # (job id, replica, needs)
        self.cancels: list[tuple[str, str]] = []
        self.cancelled = threading.Event()

    def admit(self, request) -> dict:
        return {"predicted_peak_bytes": 1, "fleet": {"min_budget_bytes": MIN_BUDGET, "budget_bytes": 2**30}}

    def plan(self, request) -> dict:
        return {"text": "", "plan": {}}

    def cancel(self, job_id: str, replica_id: str) -> bool:
        self.cancels.append((job_id, replica_id))
        self.cancelled.set()
        return True

    def generate(self, ticket, needs):
        n = sum(1 for r in self.runs if r[0] == ticket.job_id)
        replica = f"replica-{n}"
        self.runs.append((ticket.job_id, replica, needs))
        report = ReplicaReport(replica, needs.checkpoint, 2**30, 1, pid=1000 + n)
        yield "assigned", {"replica_id": replica, **report.to_stats()}
        yield "started", {}
        yield "step", {"stage": "denoise", "step": 1, "total": 2, "progress": 50}
        if self.hold:
            assert self.cancelled.wait(30)
            yield "cancelled", {}
            return
        if n < self.deaths.get(ticket.request.prompt, 0):
            stale = temp_path(ticket.output_path)  # what a writer killed mid-MP4 leaves: its pid is gone
            stale = stale.with_name(stale.name.replace(f".{_os_pid()}-", f".{_dead_pid()}-"))
            stale.write_bytes(b"half an mp4")
            raise RuntimeError("The actor died unexpectedly before finishing this task.")
        ticket.output_path.write_bytes(b"mp4")
        yield "completed", {"report": {"stages": [], "service": {"replica": replica}}, "table": ""}


def _os_pid() -> int:
    import os

    return os.getpid()


def _service(tmp_path: Path, fleet: FakeFleet, max_attempts: int = 3) -> FleetService:
    service = FleetService(ServiceConfig(tmp_path / "data", max_attempts=max_attempts))
    ckpt = tmp_path / "ltx2.safetensors"
    service.attach_engine(FleetEngine(fleet, EngineConfig(ckpt, tmp_path / "gemma", RunSettings()), max_attempts))
    return service


def _wait(service: FleetService, job_id: str, statuses: tuple[str, ...], timeout: float = 30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        record = service.store.get(job_id)
        if record.status in statuses:
            return record
        time.sleep(0.01)
    raise AssertionError(f"{job_id} still {record.status}")


def _ended_events(service: FleetService, job_id: str, timeout: float = 10.0) -> list[str]:
    """The job's event kinds once its terminal event is out (the store records the end just before it)."""
    deadline = time.monotonic() + timeout
    while service.hub.last_kind(job_id) not in ("completed", "failed", "cancelled") and time.monotonic() < deadline:
        time.sleep(0.01)
    return [e.kind for e in service.hub._channels[job_id].events]


def _post(service: FleetService, prompt: str) -> str:
    record, _ = service.create({"prompt": prompt, "size": "64x64", "num_frames": 9}, {}, None)
    return record.id


def _temporaries(service: FleetService) -> list[str]:
    return [p.name for p in service.files.outputs.iterdir() if ".partial-" in p.name]


def test_a_replica_dying_mid_job_reruns_it_elsewhere(tmp_path):
    fleet = FakeFleet(deaths={"dies once": 1})
    service = _service(tmp_path, fleet)
    try:
        job_id = _post(service, "dies once")
        record = _wait(service, job_id, ("completed", "failed"))
        assert record.status == "completed" and record.attempts == 2  # the lost run counted
        assert [r[1] for r in fleet.runs] == ["replica-0", "replica-1"]
        assert record.report["service"]["replica"] == "replica-1"
        assert service.files.output_path(job_id).read_bytes() == b"mp4" and _temporaries(service) == []
        kinds = _ended_events(service, job_id)
        assert kinds.count("started") == 2 and "queued" in kinds[1:] and kinds[-1] == "completed"
        needs = fleet.runs[0][2]
        assert needs.min_budget_bytes == MIN_BUDGET and needs.job_id == job_id
        assert needs.transformer == transformer_key(str((tmp_path / "ltx2.safetensors").resolve()))
    finally:
        service.close()


def test_a_job_that_kills_every_replica_fails_after_max_attempts(tmp_path):
    fleet = FakeFleet(deaths={"poison": 99})
    service = _service(tmp_path, fleet, max_attempts=2)
    try:
        job_id = _post(service, "poison")
        record = _wait(service, job_id, ("completed", "failed"))
        assert record.status == "failed" and record.error_code == "interrupted" and record.attempts == 2
        assert len(fleet.runs) == 2
        assert not service.files.output_path(job_id).exists() and _temporaries(service) == []
    finally:
        service.close()


def test_cancel_goes_to_the_replica_holding_the_job_and_health_lists_it(tmp_path):
    fleet = FakeFleet(hold=True)
    service = _service(tmp_path, fleet)
    try:
        job_id = _post(service, "held")
        _wait(service, job_id, ("in_progress",))
        deadline = time.monotonic() + 10
        while not service.health()["replicas"] and time.monotonic() < deadline:
            time.sleep(0.01)
        (replica,) = service.health()["replicas"]
        assert replica["id"] == "replica-0" and replica["jobs"] == [job_id] and replica["pid"] == 1000
        service.cancel(job_id)
        record = _wait(service, job_id, ("cancelled",))
        assert record.status == "cancelled" and fleet.cancels == [(job_id, "replica-0")]
        deadline = time.monotonic() + 10  # the relay lets go of the job right after its terminal event
        while service.health()["replicas"][0]["jobs"] and time.monotonic() < deadline:
            time.sleep(0.01)
        assert service.health()["replicas"][0]["jobs"] == []
    finally:
        service.close()
