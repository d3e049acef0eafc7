"""Starts the ranks of one CFG-parallel clip and collects what they did: ``run_cfg_parallel``.

The launcher plays torchrun's agent: it hosts the rendezvous store on a port the OS picks (no port is guessed, so
two launches never collide), starts one spawned process per rank with torchrun's variables and NVLink multicast
off in its environment (``env``), and waits. When a rank fails, the first failure is the cause (the others then
fail on the broken collective): its one line and exit status are raised as ``RankFailure``, after the other ranks
are stopped (SIGTERM, which unwinds them, then SIGKILL for one stuck in a collective). It never touches a device.
"""

from __future__ import annotations

import multiprocessing
import queue as queue_module
import time
from multiprocessing.process import BaseProcess
from typing import Any

from torch.distributed import TCPStore

from ltx2_edge.errors import Ltx2EdgeError
from ltx2_edge.parallel import env
from ltx2_edge.parallel.ranks import RankLayout
from ltx2_edge.parallel.worker import CfgJob, run_rank

_POLL_S = 0.2
_GRACE_S = 20.0  # SIGTERM to SIGKILL: a rank unwinding frees its device memory and removes its temporaries


class RankFailure(Ltx2EdgeError):
    """A rank stopped: ``rank``, its one line, and the exit status the command takes (the rank's own)."""

    def __init__(self, rank: int, message: str, exit_code: int) -> None:
        super().__init__(f"rank {rank} of the --cfg-parallel run: {message}")
        self.rank, self.exit_code = rank, exit_code


def run_cfg_parallel(job: CfgJob, layout: RankLayout) -> list[dict[str, Any]]:
    """Run ``job`` on ``layout.ranks`` processes; every rank's summary, in rank order (rank 0's has the MP4)."""
    store = TCPStore(env.MASTER_ADDR, 0, is_master=True, wait_for_workers=False)
    ctx = multiprocessing.get_context("spawn")  # CUDA cannot be forked; a fresh interpreter per rank
    messages = ctx.Queue()
    procs: list[BaseProcess] = []
    try:
        for rank in range(layout.ranks):
            with env.patched(env.rank_environment(rank, layout.ranks, store.port)):
                proc = ctx.Process(target=run_rank, args=(job, layout, messages), name=f"ltx2-edge-rank{rank}")
                proc.start()
            procs.append(proc)
        return _collect(procs, messages, layout.ranks)
    finally:
        _stop(procs)
        messages.close()
        del store  # the store outlives every rank: they read it until their process group is destroyed


def _collect(procs: list[BaseProcess], messages: Any, ranks: int) -> list[dict[str, Any]]:
    done: dict[int, dict[str, Any]] = {}
    while len(done) < ranks:
        message = _next(messages)
        if message is None:
            gone = [r for r, p in enumerate(procs) if r not in done and p.exitcode is not None]
            # A rank's last message reaches the pipe before its exit status is set: read once more before
            # calling an exited rank silent.
            message = _next(messages) if gone else None
            if message is None and gone:
                raise RankFailure(gone[0], f"exited with status {procs[gone[0]].exitcode} without a result", 1)
            if message is None:
                continue
        kind, rank, *rest = message
        if kind == "failed":
            raise RankFailure(rank, rest[0], rest[1])
        done[rank] = rest[0]
    for proc in procs:
        proc.join()
    return [done[r] for r in range(ranks)]


def _next(messages: Any) -> tuple | None:
    try:
        return messages.get(timeout=_POLL_S)
    except queue_module.Empty:
        return None


def _stop(procs: list[BaseProcess]) -> None:
    """Every rank still running is stopped: SIGTERM first, SIGKILL after the grace period."""
    alive = [p for p in procs if p.is_alive()]
    for p in alive:
        p.terminate()
    deadline = time.monotonic() + _GRACE_S
    for p in alive:
        p.join(max(0.0, deadline - time.monotonic()))
        if p.is_alive():
            p.kill()
            p.join()
