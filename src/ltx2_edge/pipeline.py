"""Runs one generation as a recipe: prepare -> text encode -> [encode images] -> denoise -> [upsample -> denoise 2]
-> decode into the MP4, each stage inside one ``stage_scope`` (progress lines, measurement, release, memory check).
The bracketed pair is the two-stage pipelines' (two-stage, distilled): stage 1 at half the output size, the latent
upsampler x2, stage 2 at the output size.

``Generator`` is long-lived: its files are checked once (headers only), every request is prepared into a
``RunPlan`` before anything loads (refusing an impossible budget with the smallest budget that works), and the
stages run the way that plan says, on modules from the generator's one ``ModelCache``. What to run comes in as a
``GenerationRequest``, how to run it as ``RunSettings``; this module decides nothing itself and must never load
weights outside a stage scope.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ltx2_edge.accel.compile_choice import ClipsAhead
from ltx2_edge.atomic import OutputUnit
from ltx2_edge.engine import describe
from ltx2_edge.engine.decode_runner import DecodeRunner, decoded_frames
from ltx2_edge.engine.run_plan import PassPlan, RunPlan, compile_shapes, prepare_run, with_clips_ahead
from ltx2_edge.engine.runner import StageRunner
from ltx2_edge.engine.settings import RunSettings
from ltx2_edge.engine.setup import EngineSetup
from ltx2_edge.engine.stage_scope import StageScopes
from ltx2_edge.models.model_cache import ModelCache
from ltx2_edge.mp4.mux import mp4_metadata, write_mp4
from ltx2_edge.progress import Progress
from ltx2_edge.report import RunReport
from ltx2_edge.request import GenerationRequest
from ltx2_edge.run_types import DenoisePass, Latents, Result, default_device, default_dtype
from ltx2_edge.stages.denoise import Contexts
from ltx2_edge.stages.latents import video_token_count
from ltx2_edge.stages.text_encode import HiddenStates, TextEncoder
from ltx2_edge.video_output import check_video_output, report_path, video_unit

__all__ = ["DenoisePass", "Generator", "Latents", "Result", "RunPlan", "RunSettings", "default_device",
           "default_dtype"]  # fmt: skip

StepHook = Callable[[int, int, float], None]


@dataclass
class Run:
    """One request on its way through the phases (``Generator.start`` makes it): what flows from stage to stage."""

    plan: RunPlan
    output: Path
    overwrite: bool
    report: RunReport
    scopes: StageScopes
    unit: OutputUnit  # the MP4 and its report: written under temporary names, landed together by ``finish``
    on_step: StepHook | None = None
    started: float = field(default_factory=time.perf_counter)
    contexts: Contexts | None = None
    hidden: HiddenStates | None = None  # between encode_gemma and encode_connectors, in host memory
    latents: Latents | None = None


class Generator:
    """Keeps the model files, the run settings and the loaded parts (``cache``) for many clips."""

    def __init__(
        self,
        checkpoint_path: str | Path,
        gemma_root: str | Path,
        settings: RunSettings | None = None,
        progress: Progress | None = None,
    ) -> None:
        self.settings = settings if settings is not None else RunSettings()
        self.progress = progress if progress is not None else Progress()
        self.setup = EngineSetup.resolve(Path(checkpoint_path), Path(gemma_root), self.settings)
        for line in self.setup.notes:
            self.progress.note(line)
        s = self.setup
        self.cache = ModelCache(s.device)
        self.text = TextEncoder(s.gemma.root, s.checkpoint.path, s.device, s.dtype, policy=s.policy, cache=self.cache)
        self.runner = StageRunner(s, self.cache, self.text, self.progress)
        self.decoders = DecodeRunner(s, self.cache, self.progress)

    def prepare(self, request: GenerationRequest, runs_ahead: int | ClipsAhead = 1) -> RunPlan:
        """Every decision about ``request`` (``RunPlan``), from headers, before any weight loads; ``RequestError`` or
        ``BudgetError`` (with the smallest budget that works) when it cannot run. ``runs_ahead``: clips of the same
        shapes to be run back to back, or a ``ClipsAhead`` (a service's batch and queue), which ``--compile auto``
        counts: a long-lived caller that knows more clips follow gets the compiled step without ``--compile on``."""
        return prepare_run(self.setup, self.text.tokenizer, request, runs_ahead)

    def compile_shapes(self, request: GenerationRequest) -> tuple[tuple, ...]:
        """What ``request``'s compiled blocks are specialised on (no file read): equal keys, same compiled code."""
        return compile_shapes(self.setup, request)

    def count_ahead(self, run: Run, runs_ahead: int | ClipsAhead) -> None:
        """Weigh ``--compile auto`` for ``run`` again over ``runs_ahead`` (before its denoise: the compile lever alone
        may change, ``run_plan.with_clips_ahead``)."""
        run.plan = with_clips_ahead(self.setup, run.plan, runs_ahead)

    def check(self, request: GenerationRequest, output_path: Path | None, overwrite: bool) -> RunPlan:
        """``prepare``, after refusing an output pair (the MP4 and its report) that exists (without ``overwrite``),
        cannot be written, or is one of the run's inputs."""
        if output_path is not None:
            check_video_output(Path(output_path), overwrite, self.inputs(request))
        return self.prepare(request)

    def inputs(self, request: GenerationRequest) -> tuple[Path, ...]:
        """Every file (or folder) a run of ``request`` reads: an output may never be one of them."""
        s = self.setup
        loras = [spec.path for spec in (*request.loras, request.distilled_lora) if spec is not None]
        upsampler = (s.upsampler.path,) if s.upsampler is not None and request.two_stage else ()
        return (s.checkpoint.path, s.gemma.root, *upsampler, *loras, *(image.path for image in request.images))

    def generate(
        self,
        request: GenerationRequest,
        output_path: str | Path,
        overwrite: bool = False,
        plan: RunPlan | None = None,
        on_step: StepHook | None = None,
    ) -> Result:
        """Generate one clip into ``output_path`` (MP4, written atomically) and its ``.report.json``.

        ``plan``: this request's ``prepare`` result when the caller already has it (the service's admission);
        ``on_step(i, total, seconds)`` runs after every denoising step (raise from it to stop the run: nothing is
        left half-written)."""
        run = self.start(request, output_path, overwrite, plan, on_step)
        try:
            self.encode_text(run)
            self.denoise(run)
            self.decode(run)
            return self.finish(run)
        except BaseException:
            self.abandon(run)
            raise

    # ---- the phases of a run, which a scheduler may interleave across runs ----
    def start(
        self,
        request: GenerationRequest,
        output_path: str | Path,
        overwrite: bool = False,
        plan: RunPlan | None = None,
        on_step: StepHook | None = None,
    ) -> Run:
        """A run of ``request`` ready for its stages: checked, planned (unless ``plan`` is given), its report begun,
        its MP4 and report held as one output unit (both land in ``finish``, or neither: ``abandon``)."""
        out = Path(output_path)
        unit = video_unit(out, overwrite, self.inputs(request))  # checks the pair before anything is planned
        try:
            plan = plan if plan is not None else self.prepare(request)
            if plan.request != request:
                raise ValueError("plan was prepared for another request")
        except BaseException:
            unit.discard()
            raise
        report = describe.new_report(self.setup, plan, out)
        scopes = StageScopes(self.setup, self.cache, report, self.progress)
        return Run(plan, out, overwrite, report, scopes, unit, on_step)

    def encode_text(self, run: Run, contexts: Contexts | None = None) -> Contexts:
        """The text stage: prompt (and negative prompt) -> contexts. ``contexts`` given (a prompt-embedding cache's
        hit): nothing loads, and the report's row says so."""
        plan, setup = run.plan, self.setup
        detail, technique = describe.text_encode(setup, plan)
        if contexts is not None:
            detail, technique = "prompt embeddings from the cache", "cached: same prompt, same encoder files"
        with run.scopes.stage("text_encode", detail, technique, plan.predicted_peak_bytes("text_encode"),
                              plan.keep("text_encode")) as rec:  # fmt: skip
            if contexts is None:
                contexts, details = self.runner.encode_text(plan)
                rec.details.update(details)
            else:
                rec.details["cached"] = True
        run.contexts = contexts
        return contexts

    def encode_gemma(self, run: Run) -> HiddenStates:
        """The text stage's first part alone, for a batch that runs every prompt through Gemma before loading the
        connectors (``phased``): its hidden states go to host memory, in ``run.hidden``, until ``encode_connectors``.
        The report's ``text_encode`` row then covers Gemma only; the connectors get an ``embeddings`` row."""
        plan = run.plan
        with run.scopes.stage("text_encode", *describe.text_gemma_only(self.setup, plan),
                              plan.memory.stage("text_encode").predicted_peak_bytes,
                              plan.keep("text_encode")) as rec:  # fmt: skip
            hidden, details = self.runner.gemma_states(plan)
            run.hidden = hidden.to("cpu")
            del hidden  # the device copy goes before the stage's end measures what it left behind
            rec.details.update(details, hidden_states_host_bytes=run.hidden.nbytes)
        return run.hidden

    def encode_connectors(self, run: Run) -> Contexts:
        """The text stage's second part, after ``encode_gemma``: ``run.hidden`` -> the run's contexts."""
        plan = run.plan
        if run.hidden is None:
            raise ValueError("encode_connectors before encode_gemma")
        with run.scopes.stage("embeddings", *describe.text_connectors(plan),
                              plan.memory.stage("embeddings").predicted_peak_bytes,
                              plan.keep("text_encode")) as rec:  # fmt: skip
            contexts, details = self.runner.connect(plan, run.hidden)
            rec.details.update(details)
        run.hidden, run.contexts = None, contexts
        return contexts

    def denoise(self, run: Run) -> Latents:
        """[encode images] -> denoise -> [upsample -> denoise 2]: the final latents of ``run``."""
        plan, request, runner = run.plan, run.plan.request, self.runner
        if run.contexts is None:
            raise ValueError("denoise before encode_text")
        first, *rest = plan.passes
        items: list = []
        if request.images:
            width, height = first.run.width, first.run.height
            peak = plan.predicted_peak_bytes("encode_image")
            with run.scopes.stage("encode_image", *describe.encode_image(plan, width, height), peak,
                                  plan.keep("encode_image")) as rec:  # fmt: skip
                items, details = runner.encode_images(request.images, width, height)
                rec.details.update(details, images=[s.describe() for s in request.images], size=f"{width}x{height}")

        latents = self._denoise(run, first, items, None)
        if rest:  # stage 2 of the two-stage pipelines starts from stage 1's latent, upsampled
            with run.scopes.stage("upsample", *describe.upsample(plan), plan.predicted_peak_bytes("upsample"),
                                  plan.keep("upsample")) as rec:  # fmt: skip
                start, items, details = runner.upsample(plan, latents)
                rec.details.update(details)
            latents = self._denoise(run, rest[0], items, start)
        run.contexts, run.latents = None, latents  # the contexts are done with
        return latents

    def decode(self, run: Run) -> None:
        """Both decoders at once into the MP4 (written atomically)."""
        plan, request, setup = run.plan, run.plan.request, self.setup
        if run.latents is None:
            raise ValueError("decode before denoise")
        metadata = mp4_metadata({**request.to_dict(), "guidance": plan.guidance.describe()},
                                setup.checkpoint.model_version)  # fmt: skip
        with run.scopes.stage("decode", *describe.decode(plan, setup.device.type), plan.predicted_peak_bytes("decode"),
                              plan.keep("decode")) as rec:  # fmt: skip
            _, details = self.decoders.decode_into(run.latents, plan.memory, request.frame_rate, request.audio_channels,
                                                   run.unit.temps[0], metadata, True,
                                                   tuple(plan.keep("decode")))  # fmt: skip
            rec.details.update(details)

    def decode_deferred(self, run: Run) -> Callable[[], Result]:
        """The decode stage's device part now (both decoders, frames and waveform into host memory), and the rest
        as a function to call later, from any thread: the MP4 encoded and written (atomically), then ``finish``.
        The service calls it while the device denoises the next clip; the MP4 seconds join the decode row."""
        plan, request, setup = run.plan, run.plan.request, self.setup
        if run.latents is None:
            raise ValueError("decode before denoise")
        detail, technique = describe.decode(plan, setup.device.type)
        with run.scopes.stage("decode", detail, technique.replace("encoded on a writer thread", "encoded after, "
                              "beside the next clip"), plan.predicted_peak_bytes("decode"),
                              plan.keep("decode")) as rec:  # fmt: skip
            frames, waveform, rate, details = decoded_frames(self.decoders, run.latents, plan.memory,
                                                             tuple(plan.keep("decode")))  # fmt: skip
            rec.details.update(details)
        metadata = mp4_metadata({**request.to_dict(), "guidance": plan.guidance.describe()},
                                setup.checkpoint.model_version)  # fmt: skip

        def write() -> Result:
            try:
                return finish_writing()
            except BaseException:
                self.abandon(run)
                raise

        def finish_writing() -> Result:
            started = time.perf_counter()
            stats = write_mp4(run.unit.temps[0], frames, waveform, rate, request.frame_rate, request.audio_channels,
                              metadata, True, video_encoder=setup.video_encoder)  # fmt: skip
            seconds = round(time.perf_counter() - started, 4)
            rec.details.update(asdict(stats), channels=request.audio_channels, mp4_write_seconds=seconds)
            rec.details.setdefault("sub_rows", []).append(("mp4 encode + write", seconds, "after the decode, beside "
                                                           "the next clip's denoising"))  # fmt: skip
            return self.finish(run)

        return write

    def finish(self, run: Run) -> Result:
        """The report beside the MP4, and the run's result."""
        if run.latents is None:
            raise ValueError("finish before denoise")
        run.report.total_seconds = time.perf_counter() - run.started
        try:
            run.report.write(run.unit.temps[1])
        except OSError as exc:  # disk full, say: neither the MP4 nor the report lands
            failure = run.unit.failure(exc)
            run.unit.discard()
            raise failure from exc
        run.unit.commit()  # both files land, or neither (an OutputError line)
        return Result(output_path=run.output, report_path=report_path(run.output), report=run.report,
                      latents=run.latents)  # fmt: skip

    def abandon(self, run: Run) -> None:
        """A run that will not finish: nothing of its output is left (its temporaries removed), nothing of it held."""
        run.unit.discard()
        run.hidden = run.contexts = run.latents = None

    def _denoise(self, run: Run, pass_plan: PassPlan, items: list, start: Latents | None) -> Latents:
        """One denoising stage in its scope: weights loaded (LoRAs fused), every step, released unless kept."""
        plan, step, name = run.plan, pass_plan.run, pass_plan.run.stage
        with run.scopes.stage(name, *describe.denoise(self.setup, plan, pass_plan), plan.predicted_peak_bytes(name),
                              plan.keep(name)) as rec:  # fmt: skip
            latents, details = self.runner.denoise(pass_plan, plan.request.seed, run.contexts, items, start,
                                                   run.on_step)  # type: ignore[arg-type]  # fmt: skip
            rec.details.update(
                details,
                steps=step.steps,
                schedule=step.schedule,
                size=f"{step.width}x{step.height}",
                video_tokens=video_token_count(step.width, step.height, step.num_frames),
                keyframe_tokens=pass_plan.keyframe_tokens,
                passes=list(step.guidance.passes()),
            )
            if "accel_summary" in details:
                rec.technique += f"; {details['accel_summary']}"
        return latents

    def close(self) -> None:
        """Release every loaded part, held ones included."""
        self.cache.clear()
