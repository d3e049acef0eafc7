"""How many generation replicas a fleet runs: a fixed count (``--replicas N``) or Ray Serve's autoscaler between
two bounds (``--autoscale MIN..MAX``), and the one-line refusals of bad values. Plain data: no Ray, no torch, so
``ltx2-edge serve`` checks these flags before anything starts.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ltx2_edge.errors import RequestError

_RANGE = re.compile(r"^\s*(\d+)\s*\.\.\s*(\d+)\s*$")
MAX_REPLICAS = 1024
# Jobs a replica may hold (one running batch and the next) before the autoscaler adds a replica.
TARGET_JOBS_PER_REPLICA = 2


@dataclass(frozen=True)
class FleetScale:
    """``replicas`` fixed, or ``autoscale`` (min, max)."""

    replicas: int = 1
    autoscale: tuple[int, int] | None = None

    def describe(self) -> str:
        if self.autoscale is not None:
            return f"{self.autoscale[0]} to {self.autoscale[1]} replicas (autoscaled)"
        return f"{self.replicas} replica{'s' if self.replicas != 1 else ''}"

    def serve_options(self) -> dict:
        """The deployment options Ray Serve takes for this scale."""
        if self.autoscale is None:
            return {"num_replicas": self.replicas}
        low, high = self.autoscale
        return {"autoscaling_config": {"min_replicas": low, "max_replicas": high,
                                       "initial_replicas": low,
                                       "target_ongoing_requests": TARGET_JOBS_PER_REPLICA}}  # fmt: skip


def parse_scale(replicas: int | None, autoscale: str | None) -> FleetScale:
    """The scale from ``--replicas`` and ``--autoscale`` (at most one of them; neither: one replica)."""
    if replicas is not None and autoscale is not None:
        raise RequestError("autoscale", autoscale, "not with --replicas: a fixed count or a range, not both")
    if autoscale is not None:
        match = _RANGE.match(autoscale)
        low, high = (int(match.group(1)), int(match.group(2))) if match else (0, -1)
        if match is None or not 1 <= low <= high <= MAX_REPLICAS:
            raise RequestError(
                "autoscale",
                autoscale,
                f"MIN..MAX with 1 <= MIN <= MAX <= {MAX_REPLICAS}, e.g. 1..4 (at least one replica stays up: "
                "admission plans on a replica)",
            )
        return FleetScale(low, (low, high))
    if replicas is not None and not 1 <= replicas <= MAX_REPLICAS:
        raise RequestError("replicas", replicas, f"an integer from 1 to {MAX_REPLICAS}")
    return FleetScale(replicas or 1)
