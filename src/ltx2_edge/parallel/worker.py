"""One CFG-parallel rank: its device, its share of every step's passes, the same latents as every other rank.

Every rank builds its own ``Generator`` on its own device under the per-GPU budget, plans for its share of the
passes (``prepare_run(guidance_ranks=...)``), checks everything, then waits at a barrier so that no rank loads a
weight before every rank has passed its checks. Each rank encodes both prompts itself (no contexts are sent) and
denoises with a ``CfgSplit``. Only rank 0 decodes and writes the MP4 and its report; the other ranks start their
run against a private scratch output that is never written (their ``Run`` needs one) and send rank 0 their stage
records, which rank 0's report holds under ``cfg_parallel``. What each rank did, or the one line that stopped it,
goes to the launcher's queue.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import traceback
from dataclasses import dataclass, replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from ltx2_edge.atomic import Terminated, install_signal_cleanup
from ltx2_edge.engine.run_plan import prepare_run
from ltx2_edge.engine.settings import RunSettings
from ltx2_edge.errors import Ltx2EdgeError
from ltx2_edge.memory.heap import freeze_long_lived
from ltx2_edge.parallel import env
from ltx2_edge.parallel.cfg_split import CfgSplit
from ltx2_edge.parallel.ranks import RankLayout
from ltx2_edge.pipeline import Generator
from ltx2_edge.progress import Progress
from ltx2_edge.request import GenerationRequest

# The first collective waits for every rank to have loaded its weights: a cold 19B read can take minutes.
_STARTUP_TIMEOUT = timedelta(minutes=30)


@dataclass(frozen=True)
class CfgJob:
    """One clip for every rank to run. ``settings.device`` is replaced by each rank's own device; ``budget`` and
    ``host_budget`` hold for each rank. ``latents_dir``: each rank saves its final latents there as
    ``rank{r}.pt`` (the tests and ``bench/multi_gpu.py`` compare them)."""

    checkpoint: Path
    gemma_root: Path
    settings: RunSettings
    request: GenerationRequest
    output: Path
    overwrite: bool = False
    quiet: bool = False
    latents_dir: Path | None = None


def _stage_rows(stages: list) -> list[dict[str, Any]]:
    keys = ("within_budget", "budget_bytes", "predicted_peak_bytes", "peak_reserved_bytes", "steps_seconds",
            "seconds_per_step", "seconds_per_step_steady", "step_seconds", "nvml_used_bytes_after")  # fmt: skip
    return [{"stage": s.stage, "seconds": round(s.seconds, 4), "peak_bytes": s.peak_bytes,
             **{k: s.details[k] for k in keys if k in s.details}} for s in stages]  # fmt: skip


def _run(job: CfgJob, layout: RankLayout, rank: int) -> dict[str, Any]:
    device = torch.device(layout.device(rank))
    if device.type == "cuda":
        torch.cuda.set_device(device)  # before the process group: NCCL binds this rank to its GPU
    dist.init_process_group(layout.backend, init_method="env://", rank=rank, world_size=layout.ranks,
                            timeout=_STARTUP_TIMEOUT, device_id=device if device.type == "cuda" else None)  # fmt: skip
    scratch = None
    try:
        progress = Progress(quiet=job.quiet or rank != 0)
        gen = Generator(job.checkpoint, job.gemma_root, replace(job.settings, device=str(device)), progress)
        freeze_long_lived()  # the rank's imports and setup outlive its run (memory/heap.py)
        plan = prepare_run(gen.setup, gen.text.tokenizer, job.request, guidance_ranks=layout.ranks)
        if rank == 0:  # start() checks the MP4 and its report before anything else
            output, overwrite = job.output, job.overwrite
        else:  # a Run needs an output unit; this one's temporaries live and die in a private folder
            scratch = Path(tempfile.mkdtemp(prefix=f"ltx2-edge-rank{rank}-"))
            output, overwrite = scratch / "unused.mp4", False
        run = gen.start(job.request, output, overwrite, plan)
        try:
            dist.barrier()  # every rank has passed its checks: only now does any weight load
            gen.runner.pass_split = CfgSplit(rank, layout.ranks)
            progress.note(layout.describe())
            gen.encode_text(run)
            latents = gen.denoise(run)
            if job.latents_dir is not None:
                torch.save({"video": latents.video.cpu(), "audio": latents.audio.cpu()},
                           job.latents_dir / f"rank{rank}.pt")  # fmt: skip
            rows: list[Any] = [None] * layout.ranks if rank == 0 else []
            mine = {"rank": rank, "device": str(device), "passes": list(layout.share(rank)),
                    "stages": _stage_rows(run.report.stages)}  # fmt: skip
            dist.gather_object(mine, rows if rank == 0 else None, dst=0)
            if rank != 0:
                gen.abandon(run)
                return mine
            run.report.extra["cfg_parallel"] = {"ranks": layout.ranks, "backend": layout.backend,
                                                "per_rank": rows}  # fmt: skip
            run.report.notes.append(layout.describe())
            gen.decode(run)
            result = gen.finish(run)
        except BaseException:
            gen.abandon(run)
            raise
        return {**mine, "per_rank": rows, "output_path": str(result.output_path),
                "report_path": str(result.report_path), "total_seconds": round(result.report.total_seconds, 4),
                "report_stages": _stage_rows(result.report.stages)}  # fmt: skip
    finally:
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)
        dist.destroy_process_group()


def run_rank(job: CfgJob, layout: RankLayout, queue: Any) -> None:
    """A spawned rank's body (the launcher set ``RANK`` and the rest in its environment): the run, then one
    message on ``queue``: ``("done", rank, summary)`` or ``("failed", rank, one-line message, exit status)``."""
    env.apply()
    rank = int(os.environ["RANK"])
    try:
        with install_signal_cleanup():  # SIGTERM from the launcher unwinds, so rank 0 removes its temporaries
            summary = _run(job, layout, rank)
    except Ltx2EdgeError as exc:
        queue.put(("failed", rank, str(exc), exc.exit_code))
        sys.exit(exc.exit_code)
    except Terminated as exc:
        queue.put(("failed", rank, "terminated", exc.exit_code))
        sys.exit(exc.exit_code)
    except BaseException as exc:
        traceback.print_exc()
        queue.put(("failed", rank, f"{type(exc).__name__}: {exc}", 1))
        sys.exit(1)
    queue.put(("done", rank, summary))
