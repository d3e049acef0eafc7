"""Several requests run phase by phase on one ``Generator``: every text stage (Gemma loaded once when the batch
plan holds it, or Gemma over every prompt then the connectors over all when the two do not fit together; a
prompt-embedding cache's hits encoding nothing), then every denoise with the transformer held (a
streamed one with its slots and pinned copies, when every clip streams alike), each clip's decode right after its
denoise when the decoders fit beside the transformer (else all the decodes after all the denoising).

What may be held comes from ``plan_batch`` over the requests' own ``RunPlan``s; every stage still runs in its scope
and is measured and checked against its prediction, and each report records the batch's holds and their reasons.
One request's failure (or cancellation, raised from its step hook) ends that request only.

``--compile auto`` is told how many clips of each clip's shapes this process will run (``ClipsAhead.among``): those of
the batch, and those waiting behind it in the caller's queue (``queued``), for which a block compiled now stays
compiled. It counts when the batch is prepared and once more when its denoising begins, when jobs posted during
the text phase have joined the queue. This module decides nothing about a clip and never touches a job store: what
it learns goes to ``PhaseHooks``, what it is told of the queue comes from ``queued``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Protocol

import torch

from ltx2_edge.accel.compile_choice import ClipsAhead
from ltx2_edge.accel.engine import EngineSlot
from ltx2_edge.engine.batch_plan import BatchPlan, plan_batch
from ltx2_edge.engine.streamed_hold import StreamedHold
from ltx2_edge.errors import Ltx2EdgeError
from ltx2_edge.pipeline import Generator, Result, Run, StepHook
from ltx2_edge.request import GenerationRequest
from ltx2_edge.stages.denoise import Contexts

log = logging.getLogger(__name__)
QueuedRequests = Callable[[], Sequence[GenerationRequest]]
TEXT_PARTS = ("gemma", "embeddings")
# Host memory a split text phase stages at most before running the connectors (W1: ~0.8 GB of hidden states a clip,
# so 10 clips a round): bounds what a long queue can pile up outside the budget.
HIDDEN_HOST_CAP = 8 << 30
DECODER_PARTS = ("video_decoder", "audio_decoder", "vocoder")


@dataclass(frozen=True)
class PhasedJob:
    """One request of a batch: an id the hooks know it by, what to generate, where its MP4 goes."""

    job_id: str
    request: GenerationRequest
    output_path: Path


class PhaseHooks(Protocol):
    """What the caller (the service's engine) learns and supplies while a batch runs."""

    def bind(self, job: PhasedJob) -> None:
        """The stages that follow belong to ``job`` (progress lines, events)."""

    def on_step(self, job: PhasedJob) -> StepHook | None:
        """The step hook of ``job``'s denoising (raise from it to cancel the job)."""

    def cached(self, job: PhasedJob) -> Contexts | None:
        """``job``'s prompt embeddings when a cache has them (host memory), else None."""

    def encoded(self, job: PhasedJob, contexts: Contexts) -> None:
        """``job``'s prompt embeddings were computed (host memory copy), for the cache."""

    def completed(self, job: PhasedJob, result: Result) -> None:
        """``job``'s MP4 and report are in place."""

    def failed(self, job: PhasedJob, error: BaseException) -> None:
        """``job`` ended with ``error`` (its cancellation included); nothing of it is left on disk."""


def contexts_to(contexts: Contexts, device: torch.device) -> Contexts:
    """The same contexts on ``device`` (host memory for a cache; the run's device to use them)."""
    return replace(contexts, **{f.name: getattr(contexts, f.name).to(device) for f in fields(contexts)})


def run_phased(
    gen: Generator, jobs: Sequence[PhasedJob], hooks: PhaseHooks, queued: QueuedRequests | None = None
) -> BatchPlan | None:
    """Run ``jobs`` phase by phase; returns the batch plan the holds came from (None when no job could start).
    ``queued``: the requests waiting behind this batch in the caller's queue (asked twice, see the module docstring)."""
    runs: list[tuple[PhasedJob, Run]] = []
    shapes = {job.job_id: _shapes(gen, job.request) for job in jobs}
    behind = _queued_shapes(gen, queued)
    for job in jobs:
        hooks.bind(job)

        def start(j: PhasedJob = job) -> Run:
            # Compiling once pays across every clip of these shapes, in the batch and behind it.
            ahead = ClipsAhead.among(shapes[j.job_id], list(shapes.values()), behind)
            plan = gen.prepare(j.request, runs_ahead=ahead)
            return gen.start(j.request, j.output_path, overwrite=True, plan=plan, on_step=hooks.on_step(j))

        run = _guarded(hooks, job, start)
        if run is not None:
            runs.append((job, run))
    if not runs:
        return None
    budget = gen.setup.budget
    batch = plan_batch([run.plan for _, run in runs], budget.device_bytes, host_staging=not budget.unified)
    for _, run in runs:
        run.report.extra["batch"] = {"jobs": len(runs), "hold_text": batch.hold_text,
                                     "hold_transformer": batch.hold_transformer,
                                     "interleave_decode": batch.interleave_decode,
                                     "hold_decoders": batch.hold_decoders,
                                     "hold_step_graph": batch.hold_step_graph,
                                     "hold_streamed": batch.hold_streamed,
                                     "split_text": batch.split_text,
                                     "reasons": list(batch.reasons)}  # fmt: skip

    if batch.split_text:
        runs = _text_split(gen, hooks, runs)
    else:
        with _holding(gen, TEXT_PARTS if batch.hold_text else ()):
            runs = [
                (job, run)
                for job, run in runs
                if _guarded(hooks, job, lambda j=job, r=run: _text(gen, hooks, j, r), gen, run)
            ]
    runs = _count_again(gen, hooks, runs, shapes, queued)
    decoded: list[tuple[PhasedJob, Run]] = []
    # One writer thread: a clip's MP4 is encoded while the device denoises the next clip (x264 takes ~2.5 s of
    # W1's 4 s decode stage on the CPU); one at a time, so encoders never pile up beside the denoising.
    with ThreadPoolExecutor(1, thread_name_prefix="ltx2-edge-mp4-batch") as writer:
        beside = DECODER_PARTS if batch.hold_decoders and batch.interleave_decode else ()
        held = (*(("transformer",) if batch.hold_transformer else ()), *beside)
        with _holding(gen, held), _step_graph_slot(gen, batch.hold_step_graph, runs), _streamed(gen, batch):
            for job, run in runs:
                if _guarded(hooks, job, lambda r=run: _denoise(gen, r), gen, run) is None:
                    continue
                if batch.interleave_decode:
                    write = _guarded(hooks, job, lambda r=run: gen.decode_deferred(r), gen, run)
                    if write is not None:
                        writer.submit(_write, hooks, job, write)
                else:
                    decoded.append((job, run))
        with _holding(gen, DECODER_PARTS if batch.hold_decoders and decoded else ()):
            for job, run in decoded:
                write = _guarded(hooks, job, lambda r=run: gen.decode_deferred(r), gen, run)
                if write is not None:
                    writer.submit(_write, hooks, job, write)
    return batch


def _shapes(gen: Generator, request: GenerationRequest) -> tuple | None:
    try:
        return gen.compile_shapes(request)
    except (Ltx2EdgeError, ValueError):  # the job's own prepare raises it again, inside its guard, and fails it
        return None


def _queued_shapes(gen: Generator, queued: QueuedRequests | None) -> list[tuple | None]:
    if queued is None:
        return []
    try:
        requests = list(queued())
    except Exception as exc:  # noqa: BLE001  (the count only tunes --compile auto: a queue it cannot read counts 0)
        log.warning("the queue behind this batch could not be read (%s: %s); --compile auto counts the batch only",
                    type(exc).__name__, exc)  # fmt: skip
        return []
    return [_shapes(gen, r) for r in requests]


def _count_again(
    gen: Generator, hooks: PhaseHooks, runs: list[tuple[PhasedJob, Run]], shapes: dict[str, tuple | None],
    queued: QueuedRequests | None,
) -> list[tuple[PhasedJob, Run]]:  # fmt: skip
    """Before the denoising: each run's ``--compile auto`` weighed over the clips now known. A burst of POSTs lands
    after the worker took the first job, during its text phase; they are in the queue by now. Only the compile lever
    may change (``Generator.count_ahead``), and all clips of one shape get the same count: a batch that keeps its
    step graph replays it only for clips with the same settings."""
    batch, behind = [shapes[job.job_id] for job, _ in runs], _queued_shapes(gen, queued)

    def recount(job: PhasedJob, run: Run) -> bool:
        gen.count_ahead(run, ClipsAhead.among(shapes[job.job_id], batch, behind))
        return True

    return [(job, run) for job, run in runs if _guarded(hooks, job, lambda j=job, r=run: recount(j, r), gen, run)]


def _text(gen: Generator, hooks: PhaseHooks, job: PhasedJob, run: Run) -> bool:
    cached = hooks.cached(job)
    contexts = gen.encode_text(run, contexts_to(cached, gen.setup.device) if cached is not None else None)
    _wait_on_host(hooks, job, run, contexts, encoded=cached is None)
    return True


def _wait_on_host(hooks: PhaseHooks, job: PhasedJob, run: Run, contexts: Contexts, encoded: bool) -> None:
    on_host = contexts_to(contexts, torch.device("cpu"))
    if encoded:
        hooks.encoded(job, on_host)
    # Until its denoise, a run's contexts wait in host memory: N of them on the device would sit beside every
    # later stage of the batch, which no stage's plan counts (measured: +25 MB a W1 clip).
    run.contexts = on_host


def _text_split(gen: Generator, hooks: PhaseHooks, runs: list[tuple[PhasedJob, Run]]) -> list[tuple[PhasedJob, Run]]:
    """The text phase in two halves, each with its part loaded once: Gemma over the prompts (hidden states to host
    memory), then the connectors over them; in rounds of at most ``HIDDEN_HOST_CAP`` bytes of hidden states, so a
    long batch never stages more than that. A cached prompt loads nothing; a prompt repeated inside a round is
    encoded once, its twin taking the same contexts after the connectors. The batch's order is kept."""
    ok: dict[str, bool] = {}
    todo = list(runs)
    while todo:
        staged, waiting, twins = 0, [], []
        first: dict[tuple[str, str], Run] = {}
        with _holding(gen, ("gemma",)):
            while todo and staged < HIDDEN_HOST_CAP:
                job, run = todo.pop(0)
                key = (job.request.prompt, job.request.negative_prompt)
                if hooks.cached(job) is not None or key in first:
                    twins.append((job, run, first.get(key)))
                    continue
                if _guarded(hooks, job, lambda r=run: gen.encode_gemma(r), gen, run) is None:
                    ok[job.job_id] = False
                    continue
                staged += run.hidden.nbytes if run.hidden is not None else 0
                waiting.append((job, run))
                first[key] = run
        with _holding(gen, ("embeddings",)):
            for job, run in waiting:

                def connect(j: PhasedJob = job, r: Run = run) -> bool:
                    _wait_on_host(hooks, j, r, gen.encode_connectors(r), encoded=True)
                    return True

                ok[job.job_id] = bool(_guarded(hooks, job, connect, gen, run))
        for job, run, twin in twins:
            same = twin.contexts if twin is not None else None  # on the host once its round connected

            def reuse(j: PhasedJob = job, r: Run = run, c: Contexts | None = same) -> bool:
                cached = hooks.cached(j) or c
                if cached is None:  # its twin failed: encode it alone
                    return _text(gen, hooks, j, r)
                _wait_on_host(hooks, j, r, gen.encode_text(r, contexts_to(cached, gen.setup.device)), encoded=False)
                return True

            ok[job.job_id] = bool(_guarded(hooks, job, reuse, gen, run))
    return [(job, run) for job, run in runs if ok.get(job.job_id)]


def _denoise(gen: Generator, run: Run) -> object:
    if run.contexts is not None:
        run.contexts = contexts_to(run.contexts, gen.setup.device)
    return gen.denoise(run)


def _write(hooks: PhaseHooks, job: PhasedJob, write: Callable[[], Result]) -> None:
    """On the writer thread: the MP4 and the report of ``job`` (hooks are not bound here: no stage runs)."""
    try:
        result = write()
    except BaseException as error:  # the thread must report, not die: the batch waits for it
        hooks.failed(job, error)
        return
    hooks.completed(job, result)


def _guarded(
    hooks: PhaseHooks, job: PhasedJob, work: Callable[[], object], gen: Generator | None = None, run: Run | None = None
) -> object | None:
    """``work()`` for ``job`` with the hooks bound to it; a failure ends this job only (None: its output abandoned),
    but an interrupt of the whole process (Ctrl-C, SIGTERM, exit) goes on up, after the same cleanup."""
    hooks.bind(job)
    try:
        return work()
    except (KeyboardInterrupt, SystemExit, GeneratorExit):
        if gen is not None and run is not None:
            gen.abandon(run)
        raise
    except BaseException as error:  # a job's cancellation is a BaseException too: it ends that job only
        if gen is not None and run is not None:
            gen.abandon(run)
        hooks.failed(job, error)
        return None


class _step_graph_slot:
    """The batch's one step graph: kept across its denoises when the batch plan says so; always released after.

    While kept, its memory counts as held in the cache, at the plan's figure (one forward's activations in the
    graph's pool plus the kept text K/V): what the batch plan set beside each decode."""

    def __init__(self, gen: Generator, hold: bool, runs: Sequence[tuple[PhasedJob, Run]]) -> None:
        self.gen, self.slot = gen, EngineSlot() if hold else None
        passes = [run.plan.passes[0] for _, run in runs]
        self.bytes = max((p.stage.activations_bytes + p.accel.extra_peak_bytes for p in passes), default=0)

    def __enter__(self) -> None:
        self.gen.runner.step_slot = self.slot
        if self.slot is not None:
            self.gen.cache.beside["step_graph"] = self.bytes

    def __exit__(self, *_exc: object) -> None:
        self.gen.runner.step_slot = None
        self.gen.cache.beside.pop("step_graph", None)
        if self.slot is not None:
            self.slot.close()


class _streamed:
    """The batch's streamed transformer, kept across its denoises when the batch plan says so; released after."""

    def __init__(self, gen: Generator, batch: BatchPlan) -> None:
        self.gen, self.hold = gen, StreamedHold(gen.cache) if batch.hold_streamed else None

    def __enter__(self) -> None:
        self.gen.runner.streamed_hold = self.hold

    def __exit__(self, *_exc: object) -> None:
        self.gen.runner.streamed_hold = None
        if self.hold is not None:
            self.hold.close()


class _holding:
    """Pin ``parts`` in the generator's cache for a phase; always unpinned after it."""

    def __init__(self, gen: Generator, parts: Sequence[str]) -> None:
        self.gen, self.parts = gen, tuple(parts)

    def __enter__(self) -> None:
        for part in self.parts:
            self.gen.cache.hold(part)

    def __exit__(self, *_exc: object) -> None:
        for part in self.parts:
            self.gen.cache.release(part)
