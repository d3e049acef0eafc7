"""Routing for the Ray fleet as pure functions: only replicas whose plan admits a job (same checkpoint, budget at
least the job's smallest), the least loaded first, a warm transformer preferred only among the least loaded;
admission planned on the largest budget; the report round-trips through Serve's routing-stats dict; the replica
count flags refuse bad values in one line."""

from __future__ import annotations

import pytest

from ltx2_edge.errors import RequestError
from ltx2_edge.service.ray.routing import (
    JobNeeds,
    ReplicaReport,
    admission_ranks,
    admits,
    route,
    transformer_key,
)
from ltx2_edge.service.ray.scale import FleetScale, parse_scale

GIB = 2**30
CKPT = "/models/ltx-2-19b.safetensors"
WARM = transformer_key(CKPT)


def _replica(rid: str, budget: int | None = 32 * GIB, queue: int = 0, resident=(), checkpoint: str = CKPT):
    return ReplicaReport(rid, checkpoint, budget, queue, tuple(resident))


def _needs(min_budget: int = 20 * GIB, transformer: str = WARM, checkpoint: str = CKPT) -> JobNeeds:
    return JobNeeds("video_1", checkpoint, min_budget, transformer)


def test_only_replicas_whose_plan_admits_the_job():
    fleet = [_replica("small", 16 * GIB), _replica("big", 80 * GIB), _replica("other", 80 * GIB, checkpoint="/x")]
    assert route(_needs(20 * GIB), fleet) == [["big"]]
    assert route(_needs(100 * GIB), fleet) == []  # nobody can: the router waits rather than overload a device
    assert route(_needs(8 * GIB), fleet) == [["big", "small"]]  # equal load: by id, Serve picks the shorter queue
    assert admits(_replica("unlimited", None), _needs(10**15))
    assert admits(_replica("exact", 20 * GIB), _needs(20 * GIB))
    assert not admits(_replica("short", 20 * GIB - 1), _needs(20 * GIB))


def test_least_loaded_first_and_warm_transformer_breaks_ties():
    fleet = [_replica("a", queue=3, resident=[WARM]), _replica("b", queue=1), _replica("c", queue=1, resident=[WARM])]
    assert route(_needs(), fleet) == [["c"], ["b", "a"]]
    # warm but busier than the least loaded: it does not jump the queue
    fleet = [_replica("a", queue=2, resident=[WARM]), _replica("b", queue=0)]
    assert route(_needs(), fleet) == [["b", "a"]]
    # a transformer with other LoRAs fused is another transformer
    other = transformer_key(CKPT, [("/loras/style.safetensors", 0.8)])
    assert other != WARM
    assert route(_needs(transformer=other), [_replica("a", resident=[WARM]), _replica("b")]) == [["a", "b"]]


def test_admission_plans_on_the_largest_budget_first():
    fleet = [_replica("s", 16 * GIB), _replica("m", 48 * GIB), _replica("u", None), _replica("m2", 48 * GIB)]
    assert admission_ranks(fleet, unreported=["new"]) == [["u"], ["m", "m2"], ["s"], ["new"]]
    assert admission_ranks([], unreported=["b", "a"]) == [["a", "b"]]


def test_report_round_trips_through_routing_stats():
    report = ReplicaReport("r1", CKPT, 24 * GIB, 2, (WARM,), ("video_a",), "cuda:0", 4242, "node-1", 7)
    assert ReplicaReport.from_stats("r1", report.to_stats()) == report
    assert ReplicaReport.from_stats("r1", {}) is None  # not reported yet
    assert report.with_queue(5).queue_length == 5 and report.with_queue(None) is report


def test_scale_flags():
    assert parse_scale(None, None) == FleetScale(1)
    assert parse_scale(3, None).serve_options() == {"num_replicas": 3}
    auto = parse_scale(None, "1..4").serve_options()["autoscaling_config"]
    assert (auto["min_replicas"], auto["max_replicas"]) == (1, 4)
    for replicas, autoscale, flag in [(0, None, "--replicas"), (None, "4..1", "--autoscale"),
                                      (None, "0..2", "--autoscale"), (None, "two", "--autoscale"),
                                      (2, "1..2", "--autoscale")]:  # fmt: skip
        with pytest.raises(RequestError) as err:
            parse_scale(replicas, autoscale)
        assert str(err.value).startswith(flag) and "\n" not in str(err.value)
