"""The official sigma schedules, by name: what each pipeline's denoising stage steps through.

* ``one-stage``: ``LTX2Scheduler`` over any number of steps (``stages.denoise.official_sigmas``, reused here).
* ``distilled``: the distilled model's 8 fixed sigmas (stage 1 of ``DistilledPipeline``, and our own
  ``distilled-one-stage`` at the target resolution).
* ``distilled-stage-2``: the 3 fixed sigmas that refine the upsampled latent (stage 2 of the two-stage and
  distilled pipelines); that stage starts from the upsampled latent noised to its first sigma.

The numbers are copied from ``ltx_pipelines.utils.constants`` (ltx-pipelines 1.0.0) because ltx-pipelines is
never a runtime dependency; ``tests/test_schedules.py`` checks they still equal the official constants. This
module only names schedules: it never picks one for a pipeline and never changes a fixed schedule's length.
"""

from __future__ import annotations

import torch

from ltx2_edge.errors import RequestError
from ltx2_edge.stages.denoise import official_sigmas

# ltx_pipelines.utils.constants.DISTILLED_SIGMA_VALUES (8 steps) and STAGE_2_DISTILLED_SIGMA_VALUES (3 steps).
DISTILLED_SIGMA_VALUES: tuple[float, ...] = (1.0, 0.99375, 0.9875, 0.98125, 0.975, 0.909375, 0.725, 0.421875, 0.0)
STAGE_2_DISTILLED_SIGMA_VALUES: tuple[float, ...] = (0.909375, 0.725, 0.421875, 0.0)

_FIXED: dict[str, tuple[float, ...]] = {
    "distilled": DISTILLED_SIGMA_VALUES,
    "distilled-stage-2": STAGE_2_DISTILLED_SIGMA_VALUES,
}
SCHEDULES: tuple[str, ...] = ("one-stage", *_FIXED)


def schedule_steps(name: str, steps: int | None = None) -> int:
    """Euler steps (transformer forwards per guidance pass) the schedule ``name`` runs: what the planner counts.

    ``steps`` is the request's step count: required for ``one-stage``; for a fixed schedule it must be None or
    equal to the schedule's own length (a fixed schedule is never stretched or cut).
    """
    if name == "one-stage":
        if steps is None or isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
            raise RequestError("num_inference_steps", steps, "an integer of at least 1 for the one-stage schedule")
        return steps
    if name not in _FIXED:
        raise RequestError("schedule", name, " or ".join(SCHEDULES))
    fixed = len(_FIXED[name]) - 1
    if steps is not None and steps != fixed:
        raise RequestError(
            "num_inference_steps", steps, f"{fixed} (the {name} schedule is fixed); leave it unset for this pipeline"
        )
    return fixed


def schedule_sigmas(name: str, device: torch.device, steps: int | None = None) -> torch.Tensor:
    """The sigmas of schedule ``name`` as a float32 tensor on ``device``: ``steps + 1`` values ending at 0.

    Same values and dtype as the official pipelines build them (``torch.Tensor(DISTILLED_SIGMA_VALUES)`` is
    float32; ``LTX2Scheduler`` output is cast to float32), so denoising with them is bit-identical.
    """
    n = schedule_steps(name, steps)
    if name == "one-stage":
        return official_sigmas(n, device)
    return torch.tensor(_FIXED[name], dtype=torch.float32, device=device)
