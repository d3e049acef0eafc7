"""Sigma schedules by name: our copies equal ltx-pipelines 1.0.0's constants, fixed lengths are enforced."""

from __future__ import annotations

import pytest
import torch
from ltx_core.components.schedulers import LTX2Scheduler
from ltx_pipelines.utils import constants

import ltx2_edge  # noqa: F401  (torchaudio placeholder before ltx_core)
from ltx2_edge.errors import RequestError
from ltx2_edge.stages.schedules import (
    DISTILLED_SIGMA_VALUES,
    SCHEDULES,
    STAGE_2_DISTILLED_SIGMA_VALUES,
    schedule_sigmas,
    schedule_steps,
)

CPU = torch.device("cpu")


def test_copied_constants_equal_the_official_ones():
    assert list(DISTILLED_SIGMA_VALUES) == constants.DISTILLED_SIGMA_VALUES
    assert list(STAGE_2_DISTILLED_SIGMA_VALUES) == constants.STAGE_2_DISTILLED_SIGMA_VALUES


@pytest.mark.parametrize(
    ("name", "official", "steps"),
    [
        ("distilled", constants.DISTILLED_SIGMA_VALUES, 8),
        ("distilled-stage-2", constants.STAGE_2_DISTILLED_SIGMA_VALUES, 3),
    ],
)
def test_fixed_schedules_are_the_official_tensors(name, official, steps):
    sigmas = schedule_sigmas(name, CPU)
    # The official pipelines build them with torch.Tensor(values): float32, the same bits.
    expected = torch.Tensor(official)
    assert sigmas.dtype == torch.float32 and sigmas.shape == (steps + 1,)
    assert torch.equal(sigmas, expected)
    assert schedule_steps(name) == steps == schedule_steps(name, steps)
    assert torch.equal(schedule_sigmas(name, CPU, steps), expected)
    assert sigmas[-1] == 0.0 and bool((sigmas[1:] < sigmas[:-1]).all())


@pytest.mark.parametrize("steps", [1, 8, 20])
def test_one_stage_is_the_ltx2_scheduler(steps):
    sigmas = schedule_sigmas("one-stage", CPU, steps)
    assert torch.equal(sigmas, LTX2Scheduler().execute(steps=steps).to(torch.float32))
    assert sigmas.shape == (steps + 1,) and schedule_steps("one-stage", steps) == steps


def test_stage_2_starts_where_the_distilled_schedule_has_three_steps_left():
    assert DISTILLED_SIGMA_VALUES[-4:] == STAGE_2_DISTILLED_SIGMA_VALUES
    assert SCHEDULES == ("one-stage", "distilled", "distilled-stage-2")


@pytest.mark.parametrize(
    ("name", "steps", "field", "allowed"),
    [
        ("distilled", 20, "--num-inference-steps=20", "8 (the distilled schedule is fixed)"),
        ("distilled-stage-2", 8, "--num-inference-steps=8", "3 (the distilled-stage-2 schedule is fixed)"),
        ("one-stage", None, "--num-inference-steps=None", "at least 1"),
        ("one-stage", 0, "--num-inference-steps=0", "at least 1"),
        ("cosine", None, "--schedule='cosine'", "one-stage or distilled or distilled-stage-2"),
    ],
)
def test_bad_requests_name_the_field_and_what_is_allowed(name, steps, field, allowed):
    with pytest.raises(RequestError) as err:
        schedule_sigmas(name, CPU, steps)
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith(field + " is not allowed: ")
    assert allowed in message
