"""Every call the service makes into the generator, in this one file: admission, plans and the runs of a batch.

``Engine`` holds two ``Generator``s made from the same files and settings: the *worker*, which the scheduler's
one thread drives through ``run_batch``, and the *planner*, on which HTTP threads call ``prepare`` for admission
and ``GET /v1/plan`` (it never loads a weight). Two, because a Hugging Face fast tokenizer must not be used from
two threads at once ("Already borrowed"): admission never touches the worker's.

The batching seam is ``run_batch(jobs, on_event, is_cancelled)``. It receives the jobs the scheduler picked (in
queue order, each with its validated ``GenerationRequest`` and the output path to write) and reports everything
through ``on_event(job_id, kind, data)``, from any thread:

- ``started`` ``{}``: the job's first phase begins (the store marks it in_progress; one more attempt);
- ``stage`` ``{stage, detail, progress}``, ``stage_done`` ``{stage, seconds, progress}``, ``note`` ``{text}``;
- ``step`` ``{stage, step, total, seconds, elapsed, eta_seconds, progress}`` after every denoising step;
- exactly one terminal event per job: ``completed`` ``{report, table}`` (the MP4 and its report are in place),
  ``failed`` ``{code, message}`` or ``cancelled`` ``{}`` (nothing of it is left on disk).

``waiting()``, when given, returns the requests still queued behind the batch (the scheduler's durable queue, a
replica's own): ``--compile auto`` counts those of a clip's shapes with the batch's, since a block compiled now
stays compiled for them in this process (asked as the batch is prepared and again as its denoising begins).

``is_cancelled(job_id)`` is asked before a job starts and after every denoising step; when it says yes, the job
stops there (``JobCancelled`` raised from the step hook unwinds the run; the MP4 is written through
``ltx2_edge.atomic``, so no partial file survives) and gets ``cancelled``. It also says yes when the server shuts
down: the scheduler then puts the job back in the queue instead.

``run_batch`` runs the batch phase by phase (``ltx2_edge.phased``): every prompt encoded with Gemma loaded once
(``prompt_cache`` hits encode nothing), then every denoise with the transformer held, each clip's MP4 written while
the next one denoises, as far as the plans and the budget allow (``engine.batch_plan``; each report's ``batch``
block says what was held and why).

This module must never touch the job store, the event hub or HTTP: it reports through ``on_event`` only.
"""

from __future__ import annotations

import logging
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ltx2_edge.engine.run_plan import denoise_passes
from ltx2_edge.errors import BudgetError, CheckpointError, Ltx2EdgeError, RequestError
from ltx2_edge.memory.heap import freeze_long_lived
from ltx2_edge.phased import PhasedJob, run_phased
from ltx2_edge.pipeline import Generator, Result, RunPlan, RunSettings
from ltx2_edge.plan.plan_text import format_plan, plan_to_json
from ltx2_edge.progress import Progress
from ltx2_edge.request import GenerationRequest
from ltx2_edge.service.prompt_cache import PromptCache, PromptKey, encoder_identity

log = logging.getLogger("ltx2_edge.service")

OnEvent = Callable[[str, str, dict[str, Any]], None]
IsCancelled = Callable[[str], bool]
Waiting = Callable[[], Sequence[GenerationRequest]]

# How far along a job is, in percent, at each point of its run (the denoising steps fill the span between).
_AFTER_TEXT, _AFTER_DENOISE = 10, 90


class JobCancelled(BaseException):
    """Raised from the step hook to stop a run between denoising steps.

    A ``BaseException`` (as ``KeyboardInterrupt``) so no ``except Exception`` on the way swallows it, while every
    cleanup (``finally``, the atomic output's temporary file, the model cache's release) still runs.
    """


@dataclass(frozen=True)
class EngineConfig:
    """The model files and run settings of the service's generator (``ltx2-edge serve``'s flags)."""

    checkpoint_path: Path
    gemma_root: Path
    settings: RunSettings
    model_name: str = "ltx-2"


@dataclass(frozen=True)
class BatchJob:
    """One job handed to ``run_batch``: its id, what to generate, where its MP4 goes."""

    job_id: str
    request: GenerationRequest
    output_path: Path


def _total_steps(plan: RunPlan) -> int:
    return sum(p.run.steps for p in plan.passes)


class _JobProgress(Progress):
    """Routes the worker generator's progress lines to the job it is running (``bind``) as events."""

    def __init__(self) -> None:
        super().__init__(quiet=True)
        self._lock = threading.Lock()
        self._job: str | None = None
        self._on_event: OnEvent | None = None
        self._saved: dict[str, tuple[int, int, int]] = {}  # progress of the batch's other jobs, by id
        self._steps_before = 0  # denoising steps of the passes already done (two-stage pipelines)
        self._total = 1
        self._progress = 0

    def bind(self, job_id: str | None, on_event: OnEvent | None, total_steps: int = 1) -> None:
        """The lines that follow belong to ``job_id``. A job met again (the phases of a batch take turns) carries on
        from where its progress stood; ``forget`` drops that memory when the job has ended."""
        with self._lock:
            if self._job is not None:
                self._saved[self._job] = (self._steps_before, self._total, self._progress)
            self._job, self._on_event = job_id, on_event
            saved = self._saved.get(job_id) if job_id is not None else None
            self._steps_before, self._total, self._progress = saved or (0, max(1, total_steps), 0)

    def forget(self, job_id: str) -> None:
        with self._lock:
            self._saved.pop(job_id, None)

    def _emit(self, kind: str, data: dict[str, Any]) -> None:
        with self._lock:
            job, on_event = self._job, self._on_event
            data = {**data, "progress": self._progress}
        if job is None or on_event is None:
            log.info("%s %s", kind, data)
            return
        on_event(job, kind, data)

    def _advance(self, percent: int) -> None:
        with self._lock:
            self._progress = max(self._progress, min(99, percent))

    def stage(self, name: str, detail: str = "") -> None:
        if name == "decode":
            self._advance(_AFTER_DENOISE)
        self._emit("stage", {"stage": name, "detail": detail})

    def done(self, name: str, seconds: float) -> None:
        if name == "text_encode":
            self._advance(_AFTER_TEXT)
        self._emit("stage_done", {"stage": name, "seconds": round(seconds, 3)})

    def step(self, index: int, total: int, seconds: float, elapsed: float, stage: str = "denoise") -> None:
        done = index + 1
        with self._lock:
            before = self._steps_before
            if done == total:
                self._steps_before += total
        self._advance(_AFTER_TEXT + (_AFTER_DENOISE - _AFTER_TEXT) * (before + done) // self._total)
        eta = elapsed / done * (total - done)
        self._emit(
            "step",
            {
                "stage": stage,
                "step": done,
                "total": total,
                "seconds": round(seconds, 4),
                "elapsed": round(elapsed, 3),
                "eta_seconds": round(eta, 2),
            },
        )

    def note(self, text: str) -> None:
        self._emit("note", {"text": text})


def _failure(exc: BaseException) -> tuple[str, str]:
    """(code, one-line message) of a run that failed."""
    if isinstance(exc, RequestError):
        return "invalid_request", str(exc)
    if isinstance(exc, BudgetError):
        return "budget", str(exc)
    if isinstance(exc, CheckpointError):
        return "checkpoint", str(exc)
    if isinstance(exc, Ltx2EdgeError):
        return "generation_failed", str(exc)
    return "internal_error", f"{type(exc).__name__}: {exc} (the server's log has the traceback)"


class _Hooks:
    """``run_phased``'s hooks for one batch: progress and events per job, cancellation, the prompt cache."""

    def __init__(self, engine: Engine, on_event: OnEvent, is_cancelled: IsCancelled) -> None:
        self.engine, self.on_event, self.is_cancelled = engine, on_event, is_cancelled
        self.started: dict[str, float] = {}  # when each job's first phase began

    def bind(self, job: PhasedJob) -> None:
        self.engine._progress.bind(job.job_id, self.on_event, _request_steps(job.request))
        self.started.setdefault(job.job_id, time.perf_counter())

    def on_step(self, job: PhasedJob) -> Callable[[int, int, float], None]:
        def hook(_index: int, _total: int, _seconds: float) -> None:
            if self.is_cancelled(job.job_id):
                raise JobCancelled(job.job_id)

        return hook

    def cached(self, job: PhasedJob) -> Any:
        return self.engine.prompt_cache.get(self.engine.prompt_key(job.request))

    def encoded(self, job: PhasedJob, contexts: Any) -> None:
        self.engine.prompt_cache.put(self.engine.prompt_key(job.request), contexts)

    def completed(self, job: PhasedJob, result: Result) -> None:
        report = result.report.to_json()
        wall = time.perf_counter() - self.started.get(job.job_id, time.perf_counter())
        report["service"] = {"job_id": job.job_id, "wall_seconds": round(wall, 3)}
        self.on_event(job.job_id, "completed", {"report": report, "table": result.report.table()})

    def failed(self, job: PhasedJob, error: BaseException) -> None:
        if isinstance(error, JobCancelled):
            self.on_event(job.job_id, "cancelled", {})
            return
        code, message = _failure(error)
        if code == "internal_error":
            log.error("job %s failed:\n%s", job.job_id, "".join(traceback.format_exception(error)))
        self.on_event(job.job_id, "failed", {"code": code, "message": message})


def _request_steps(request: GenerationRequest) -> int:
    """Denoising steps of ``request`` over its passes (stage 2 of the two-stage pipelines has its own 3)."""
    return sum(p.steps for p in denoise_passes(request, "batched"))


class Engine:
    """The generator as the service sees it. ``run_batch`` is called from one thread only."""

    def __init__(self, config: EngineConfig, prompt_cache: PromptCache | None = None) -> None:
        self.config = config
        self._progress = _JobProgress()
        self._worker = Generator(config.checkpoint_path, config.gemma_root, config.settings, self._progress)
        self._planner = Generator(config.checkpoint_path, config.gemma_root, config.settings, Progress(quiet=True))
        self._planner_lock = threading.Lock()
        freeze_long_lived()  # the service's imports and generators live as long as it does (memory/heap.py)
        self.prompt_cache = prompt_cache if prompt_cache is not None else PromptCache()
        setup = self._worker.setup
        # Gemma's weights and tokenizer, and the checkpoint (it holds the embeddings connectors).
        gemma = [
            p
            for p in Path(setup.gemma.root).rglob("*")
            if p.is_file() and (p.suffix == ".safetensors" or p.name.startswith("tokenizer"))
        ]
        self.encoder_id = encoder_identity([*gemma, setup.checkpoint.path])

    @property
    def model(self) -> str:
        """What the API calls the model (``model`` in every video object)."""
        return self.config.model_name

    def prompt_key(self, request: GenerationRequest) -> PromptKey:
        """The prompt cache's key of ``request``'s embeddings."""
        return PromptKey(request.prompt, request.negative_prompt or "", self.encoder_id)

    def _prepare(self, request: GenerationRequest) -> RunPlan:
        with self._planner_lock:
            return self._planner.prepare(request)

    def admit(self, request: GenerationRequest) -> dict[str, Any]:
        """The plan's summary for ``request`` (stored with the job); ``RequestError`` / ``BudgetError`` (with the
        smallest budget that works) when it cannot run. Reads headers only."""
        plan = self._prepare(request)
        stages = [
            {
                "stage": s.name,
                "predicted_peak_bytes": s.predicted_peak_bytes,
                "predicted_seconds": round(s.predicted_seconds, 3),
            }
            for s in plan.memory.stages
        ]
        return {
            "budget": plan.memory.budget.describe(),
            "predicted_peak_bytes": max(s["predicted_peak_bytes"] for s in stages),
            "predicted_seconds": round(sum(s["predicted_seconds"] for s in stages), 3),
            "denoise_steps": _total_steps(plan),
            "stages": stages,
        }

    def plan(self, request: GenerationRequest) -> dict[str, Any]:
        """What ``ltx2-edge plan`` prints for ``request`` (``text``) and the plan as JSON (``plan``)."""
        plan = self._prepare(request)
        lines = [
            format_plan(plan.memory),
            *plan.forwards_lines(),
            "quantization: " + "; ".join(self._planner.setup.policy.describe()[:1]),
        ]
        return {"text": "\n".join(lines), "plan": plan_to_json(plan.memory)}

    def run_batch(
        self, jobs: Sequence[BatchJob], on_event: OnEvent, is_cancelled: IsCancelled, waiting: Waiting | None = None
    ) -> None:
        """Run ``jobs`` phase by phase (``ltx2_edge.phased``: every prompt with Gemma loaded once, a cached prompt
        encoding nothing, every denoise with the transformer held, each MP4 written while the next clip denoises,
        as far as the jobs' plans and the budget allow) and report each job's events and outcome through
        ``on_event``; ``waiting``: the requests queued behind the batch (see the module docstring)."""
        live = []
        for job in jobs:
            if is_cancelled(job.job_id):
                on_event(job.job_id, "cancelled", {})
            else:
                on_event(job.job_id, "started", {})
                live.append(PhasedJob(job.job_id, job.request, job.output_path))
        if live:
            try:
                run_phased(self._worker, live, _Hooks(self, on_event, is_cancelled), waiting)
            finally:
                self._progress.bind(None, None)
                for job in live:
                    self._progress.forget(job.job_id)

    def close(self) -> None:
        """Release every loaded part."""
        self._worker.close()
        self._planner.close()
