"""Which of a model's repeated blocks stay resident when only ``k`` of ``n`` fit: the streamed ones spread evenly
between them, not gathered after them.

A streamed block waits for its copy; the copy engine can only run ahead by the number of slots. With the resident
blocks first and the streamed ones after (the order before 2026-12-03), every streamed block after the first few
waited on a copy the resident blocks' compute could not hide: on the H200 at W1, 16 GiB (30 resident + 18 streamed,
3 slots), 0.34 s a step against 0.193 s resident. Spread out, each streamed block's copy runs while the resident
blocks before it compute, so a step costs max(compute, copies) instead of compute plus most of the copies. The
streamer accepts any resident set (``streaming.streamer``); the planner's step model runs the same order
(``plan.step_time.pipeline_steps``). Pure arithmetic, never imports torch.
"""

from __future__ import annotations


def streamed_positions(n: int, k: int) -> tuple[int, ...]:
    """The ``n - k`` streamed block indices, in run order: the middle of each of ``n - k`` equal stretches of the
    ``n`` blocks. The spacing holds across the step boundary too (half a stretch before the first, half after the
    last), since the copy of a step's first streamed block runs behind the previous step's last blocks."""
    if not 0 <= k <= n:
        raise ValueError(f"k={k}: between 0 and n={n} blocks resident")
    s = n - k
    return tuple((2 * j + 1) * n // (2 * s) for j in range(s))


def resident_positions(n: int, k: int) -> tuple[int, ...]:
    """The ``k`` resident block indices (every block ``streamed_positions`` leaves)."""
    streamed = set(streamed_positions(n, k))
    return tuple(i for i in range(n) if i not in streamed)


def run_order(n: int, k: int) -> tuple[bool, ...]:
    """For each block in run order, whether it streams."""
    streamed = set(streamed_positions(n, k))
    return tuple(i in streamed for i in range(n))
