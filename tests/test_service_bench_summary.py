"""bench/service_bench.py's summary of a `serve` run's largest batch: the steady per-clip time after the batch's
first clip when decodes interleave, and the per-clip time from the previous batch's end either way."""

from __future__ import annotations

import pytest

from conftest import load_bench


def _row(completed: float, jobs: int, interleave: bool = True) -> dict:
    return {"status": "completed", "completed_s": completed, "batch": {"jobs": jobs, "interleave_decode": interleave}}


def test_largest_batch_separates_its_first_clip_from_the_steady_ones():
    bench = load_bench("service_bench")
    # A job alone (done at 17 s), then a batch of 4 whose first clip carries the loads (done at 30 s), then every 4 s.
    rows = [_row(17.0, 1), _row(30.0, 4), _row(34.0, 4), _row(38.0, 4), _row(42.0, 4)]
    summary = bench._largest_batch(rows)
    assert summary["jobs"] == 4 and summary["after_first_per_clip_s"] == 4.0
    assert summary["per_clip_s"] == (42.0 - 17.0) / 4 and summary["interleave_decode"] is True
    # Decodes after the denoise phase: the MP4s land together, only per_clip_s means a clip's cost.
    bunched = [_row(17.0, 1, False), *(_row(60.0 + 0.5 * i, 3, False) for i in range(3))]
    summary = bench._largest_batch(bunched)
    assert summary["interleave_decode"] is False and summary["per_clip_s"] == pytest.approx((61.0 - 17.0) / 3, abs=1e-3)
    assert bench._largest_batch([{"status": "failed", "completed_s": 1.0, "batch": None}]) is None
