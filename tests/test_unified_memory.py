"""Unified memory done right, on a fake integrated GPU (Jetson Thor): one pool, and no pinned host copy of a block.

On an integrated GPU CPU and GPU share one DRAM, so a pinned "host copy" of streamed blocks would be a second copy in
the same memory. The plan must never choose it (source tier "file", not "pinned"), must count no pinned bytes of
weights as host memory, must count FileSource's small staging ring inside the pool, and must say so in the stage's
technique; the loader must refuse the pinned tier there even if asked. No GPU is needed: the device is faked.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from ltx2_edge.calibrate import identity
from ltx2_edge.memory import runtime
from ltx2_edge.models import streamed_blocks
from ltx2_edge.plan.budget import Budget, GiB
from ltx2_edge.plan.plan_types import PlanRequest
from ltx2_edge.plan.planner import plan
from ltx2_edge.plan.profiles import THOR_T5000
from ltx2_edge.plan.stage_fit import MiB, file_staging_bytes
from ltx2_edge.plan.tile_plan import frames_bytes

W1 = dict(width=512, height=288, num_frames=97, frame_rate=24.0, num_inference_steps=20)
LONG = dict(width=768, height=512, num_frames=241, frame_rate=24.0, num_inference_steps=20)  # 10 s


@pytest.fixture
def thor(monkeypatch) -> torch.device:
    """torch sees one integrated GPU (a Jetson Thor: sm_110, one LPDDR5X pool)."""
    props = SimpleNamespace(name="NVIDIA Thor", major=11, minor=0, is_integrated=True, total_memory=122 << 30)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda _device=None: props)
    monkeypatch.setattr(identity, "driver_version", lambda: "580.00")
    monkeypatch.setenv("XDG_CACHE_HOME", "/nonexistent-ltx2-edge-test-cache")  # no calibrated profile
    return torch.device("cuda")


@pytest.mark.parametrize(("workload", "budget_gib"), [(W1, 12), (W1, 16), (W1, 24), (LONG, 16), (LONG, 32)])
def test_one_pool_never_pins_a_block_and_counts_the_staging_ring(full_headers, workload, budget_gib):
    request = PlanRequest(**workload, precision="fp8")
    budget = Budget.for_device(budget_gib * GiB, is_integrated=True)
    assert budget.unified and budget.host_bytes is None
    p = plan(*full_headers, request, budget, THOR_T5000)
    streamed = [s for s in p.stages if s.streamed_units]
    assert any(s.name == "denoise" for s in streamed) or budget_gib >= 24  # small budgets do stream the transformer
    for s in p.stages:
        assert s.source_tier in ("resident", "file"), s.name
        assert s.predicted_peak_bytes <= budget_gib * GiB, s.name
        if s.name == "decode":  # the decoded frames wait in anonymous host memory, inside the pool
            t = p.request
            assert s.host_bytes == frames_bytes((t.num_frames - 1) // 8 + 1, t.height // 32, t.width // 32)
        else:
            assert s.host_bytes == 0, s.name  # no pinned (or any) host copy of weights
    for s in streamed:
        ring = file_staging_bytes(s.slot_bytes)
        assert ring == 2 * min(64 * MiB, s.slot_bytes) and s.source_tier == "file"
        assert "one pool: no pinned host copy of a block" in s.technique
        assert f"through a {ring // MiB} MiB staging ring (counted)" in s.technique
        counted = s.weights_resident_bytes + s.n_slots * s.slot_bytes + s.activations_bytes
        assert s.predicted_peak_bytes - counted >= ring  # the ring is in the pool's peak, with slack and runtime
    for s in p.stages:
        if not s.streamed_units:
            assert "staging ring" not in s.technique, s.name


def test_the_same_budget_on_a_discrete_gpu_pins_the_blocks_the_pool_reads_from_the_file(full_headers):
    request = PlanRequest(**W1, precision="fp8")
    discrete = plan(*full_headers, request, Budget.for_device(16 * GiB, is_integrated=False,
                                                               host_available_bytes=200 * GiB), THOR_T5000)  # fmt: skip
    pool = plan(*full_headers, request, Budget.for_device(16 * GiB, is_integrated=True), THOR_T5000)
    d, u = discrete.stage("denoise"), pool.stage("denoise")
    assert d.source_tier == "pinned" and d.host_bytes >= d.weights_streamed_bytes
    assert u.source_tier == "file" and u.host_bytes == 0
    assert "no pinned host copy" not in d.technique and "no pinned host copy" in u.technique


def test_a_fake_integrated_gpu_gets_one_pool_the_thor_profile_and_no_pinned_tier(thor):
    assert runtime.is_integrated(thor) and streamed_blocks.is_integrated_device(thor)
    budget = runtime.budget_for(thor, 32 * GiB, "auto", unified=False)
    assert budget.unified and budget.host_bytes is None and budget.device_bytes == 32 * GiB
    profile, note = runtime.device_profile(thor)
    assert profile.name == "thor-t5000" and profile.unified and "published figures" in note
    with pytest.raises(ValueError, match="integrated GPU: blocks stream from the file there"):
        streamed_blocks.load_streamed(None, streamed_blocks.BlockNames("transformer_blocks", "x.{i}."), [], None,
                                      thor, torch.bfloat16, None, 0, "pinned", 2)  # fmt: skip
