"""``RunPlan``: every decision about one request, made once from headers and the request before any weight loads.

``prepare_run`` derives the denoising passes (one, or the two-stage pipelines' two), the memory ``Plan`` (or the
``BudgetError`` naming the smallest budget that works), each pass's acceleration choice with the bytes it adds to
its stage's peak, the LoRA files checked against the transformer and against where its weights come from, and
what stays loaded after each stage. ``plan``, ``check``, the report's predictions and the stage runs all read
the ``RunPlan``; nothing downstream decides again, except that a batch may weigh ``--compile auto`` once more over
the clips it has learnt of since (``with_clips_ahead``: the compile lever alone, which no memory figure depends on).

This module must never load a weight: it reads headers, image headers, the tokenizer and the machine's facts
already in ``EngineSetup``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace

from ltx2_edge.accel import for_run
from ltx2_edge.accel.compile_choice import ClipsAhead
from ltx2_edge.accel.settings import AccelChoice
from ltx2_edge.checkpoint import page_cache
from ltx2_edge.checkpoint.names import TRANSFORMER_PREFIX as CHECKPOINT_PREFIX
from ltx2_edge.checkpoint.upsampler_file import UpsamplerInfo
from ltx2_edge.engine.setup import EngineSetup
from ltx2_edge.errors import RequestError
from ltx2_edge.guidance import Guidance
from ltx2_edge.inputs import UNGUIDED_PRESET
from ltx2_edge.memory import runtime
from ltx2_edge.models.gemma import PromptTokenizer
from ltx2_edge.models.lora import LoraFile, LoraFuser, check_fusable
from ltx2_edge.models.lora import inspect_transformer_loras as inspect_loras
from ltx2_edge.models.model_cache import PARTS
from ltx2_edge.plan.plan_types import Plan, PlanRequest, SecondStage, StagePlan
from ltx2_edge.request import STAGE_2_SCHEDULE, GenerationRequest
from ltx2_edge.run_types import DenoisePass
from ltx2_edge.stages import conditioning
from ltx2_edge.stages.schedules import schedule_steps
from ltx2_edge.stages.upsample import upsample_flops, upsample_working_bytes


@dataclass(frozen=True)
class PassPlan:
    """One denoising stage as it will run: the pass, its stage plan, its accelerations, its LoRAs."""

    run: DenoisePass
    stage: StagePlan
    accel: AccelChoice
    loras: tuple[LoraFile, ...]
    shape_key: tuple  # what a compiled block is specialised on: same key, same compiled code

    @property
    def predicted_peak_bytes(self) -> int:
        """The stage's predicted peak with what its accelerations add (text K/V kept for the run)."""
        return self.stage.predicted_peak_bytes + self.accel.extra_peak_bytes

    @property
    def keyframe_tokens(self) -> int:
        """Video tokens the conditioning keyframes add to every forward of this pass."""
        return self.shape_key[3]

    @property
    def active_loras(self) -> tuple[LoraFile, ...]:
        """The LoRAs that change a weight (strength 0 fuses nothing)."""
        return tuple(f for f in self.loras if f.spec.strength != 0.0)


@dataclass(frozen=True)
class RunPlan:
    """Everything decided about one request. ``keep_after[stage]``: the model parts (``ModelCache`` names) that stay
    loaded when ``stage`` ends; a stage not named keeps nothing (staged release)."""

    request: GenerationRequest
    guidance: Guidance
    memory: Plan
    passes: tuple[PassPlan, ...]
    keep_after: Mapping[str, frozenset[str]] = field(default_factory=dict)

    def keep(self, stage: str) -> frozenset[str]:
        """The parts that stay loaded after ``stage``."""
        return self.keep_after.get(stage, frozenset())

    def predicted_peak_bytes(self, stage: str) -> int:
        """``stage``'s predicted peak as the report holds it against the measured one (a denoise stage's includes its
        accelerations; the text stage's covers Gemma and the connectors, which run inside it one after the other)."""
        for p in self.passes:
            if p.run.stage == stage:
                return p.predicted_peak_bytes
        if stage == "text_encode":
            return max(self.memory.stage("text_encode").predicted_peak_bytes,
                       self.memory.stage("embeddings").predicted_peak_bytes)  # fmt: skip
        return self.memory.stage(stage).predicted_peak_bytes

    @property
    def two_stage(self) -> bool:
        return len(self.passes) == 2

    def forwards_lines(self) -> list[str]:
        """A line per denoising stage: how its forwards run and why (``ltx2-edge plan`` prints them)."""
        lines = []
        for p in self.passes:
            extra = p.accel.extra_peak_bytes
            more = f" (+{extra / 2**30:.2f} GiB on its peak)" if extra else ""
            reasons = "; ".join(p.accel.settings.reasons)
            lines.append(f"{p.run.stage} forwards: {reasons}{more}; SDPA kernel measured at run time")
        return lines


def guidance_for(request: GenerationRequest, mode: str) -> Guidance:
    """The guidance passes ``request`` asks for, run batched or sequentially (distilled-one-stage: one unguided
    pass)."""
    if request.guidance == UNGUIDED_PRESET:
        return Guidance.unguided(mode=mode)  # type: ignore[arg-type]
    return Guidance.preset_named(request.guidance, mode=mode)  # type: ignore[arg-type]


def denoise_passes(request: GenerationRequest, mode: str) -> tuple[DenoisePass, ...]:
    """The denoising stages ``request`` runs: one, or the two-stage pipelines' stage 1 and stage 2."""
    first = request.stage_1() if request.two_stage else request
    passes = [DenoisePass("denoise", first.width, first.height, first.num_frames, first.frame_rate, first.schedule,
                          first.num_inference_steps, guidance_for(first, mode), first.loras, first.images)]  # fmt: skip
    if request.two_stage:
        extra = (request.distilled_lora,) if request.distilled_lora is not None else ()
        passes.append(DenoisePass("denoise_2", request.width, request.height, request.num_frames, request.frame_rate,
                                  STAGE_2_SCHEDULE, schedule_steps(STAGE_2_SCHEDULE),
                                  Guidance.unguided(mode=mode),  # type: ignore[arg-type]
                                  (*request.loras, *extra), request.images))  # fmt: skip
    return tuple(passes)


def prepare_run(
    setup: EngineSetup, tokenizer: PromptTokenizer, request: GenerationRequest, runs_ahead: int | ClipsAhead = 1,
    guidance_ranks: int = 1,
) -> RunPlan:  # fmt: skip
    """Every decision about ``request``, or the one-line error that refuses it, before any weight is read:
    ``RequestError`` for a prompt over the context, a missing or unreadable image, a missing upsampler, a LoRA that
    cannot be fused or a ``--compile on`` that cannot run; ``BudgetError`` for an impossible budget.
    ``runs_ahead``: clips of these shapes the caller will run back to back, or a ``ClipsAhead`` (a service's batch
    and the jobs of these shapes in its queue): ``--compile auto`` weighs its one-off cost against all of them.
    ``guidance_ranks``: the passes are shared among that many processes (CFG parallel, ``parallel/``), and the memory
    plan is one rank's, on its own device."""
    clips = ClipsAhead.of(runs_ahead)  # a bad count is refused before anything else is worked out
    guidance = guidance_for(request, setup.settings.guidance_mode)
    tokenizer.check(request.prompt, "prompt")
    if guidance.uses_negative_prompt:
        tokenizer.check(request.negative_prompt, "negative-prompt")
    runs = denoise_passes(request, setup.settings.guidance_mode)
    memory = memory_plan(setup, request, runs, guidance_ranks)
    passes = tuple(_pass_plan(setup, run, memory.stage(run.stage), clips) for run in runs)
    keep_after: dict[str, frozenset[str]] = {}
    if setup.keep_resident:  # no budget: a long-lived generator keeps every part it loads
        keep_after = {s.name: frozenset(PARTS) for s in memory.stages}
    elif len(passes) == 2 and memory.stage("upsample").keeps_transformer:
        keep_after = {"denoise": frozenset({"transformer"}), "upsample": frozenset({"transformer"})}
    return RunPlan(request, guidance, memory, passes, keep_after)


def memory_plan(
    setup: EngineSetup, request: GenerationRequest, runs: tuple[DenoisePass, ...], guidance_ranks: int = 1
) -> Plan:
    """The memory plan of ``request`` (``BudgetError`` if it cannot fit), from headers and the conditioning images'
    sizes: each image is opened and decoded here (``RequestError`` for a missing or unreadable one). With
    ``guidance_ranks`` > 1 it is one rank's plan: its largest share of the first stage's passes per forward."""
    sizes = conditioning.check_image_files(request.images)
    first, *rest = runs

    def pixels(run: DenoisePass) -> int:
        return max((conditioning.image_device_pixels(size, run.width, run.height) for size in sizes), default=0)

    def tokens(run: DenoisePass) -> int:
        return conditioning.conditioning_token_count(run.images, run.width, run.height)

    second = None
    if rest:
        (run2,) = rest
        up = require_upsampler(setup, request)
        frames = (first.num_frames - 1) // 8 + 1  # the VAE's 8x temporal compression, first frame alone
        latent = (1, up.config["in_channels"], frames, first.height // 32, first.width // 32)
        work, flops = upsample_working_bytes(up.config, latent, 2), upsample_flops(up.header.tensors, latent)
        second = SecondStage(run2.width, run2.height, run2.steps, up.weight_bytes, work, flops, tokens(run2),
                             pixels(run2), same_weights=first.loras == run2.loras)  # fmt: skip
    preq = PlanRequest(
        first.width, first.height, first.num_frames, first.frame_rate, first.steps,
        guidance_batch=-(-len(first.guidance.passes()) // guidance_ranks), guidance_ranks=guidance_ranks,
        precision=setup.policy.precision,
        prefetch_depth=setup.settings.prefetch_depth, images=len(request.images), image_float_pixels=pixels(first),
        conditioning_tokens=tokens(first), second_stage=second, expandable_segments=setup.allocator == "expandable",
        checkpoint_cached=page_cache.cached_fraction([setup.checkpoint.path]),
        gemma_cached=page_cache.cached_fraction(setup.gemma.shards),
    )  # fmt: skip
    return runtime.build_plan(setup.checkpoint.header, setup.gemma.shards, preq, setup.budget, setup.profile,
                              setup.policy)  # fmt: skip


def require_upsampler(setup: EngineSetup, request: GenerationRequest) -> UpsamplerInfo:
    """The latent upsampler a two-stage request needs (``RequestError`` naming the flag when none was given)."""
    if setup.upsampler is None:
        raise RequestError("spatial-upsampler-path", None, f"the latent upsampler file for --pipeline "
                           f"{request.pipeline} (Lightricks' ltx-2-spatial-upscaler-x2-1.0.safetensors; "
                           "`ltx2-edge make-checkpoint` writes a random one beside ltx2.safetensors)")  # fmt: skip
    return setup.upsampler


def compile_shapes(setup: EngineSetup, request: GenerationRequest) -> tuple[tuple, ...]:
    """What the compiled block of each of ``request``'s denoising passes is specialised on, from the request alone
    (no file is read): requests with equal keys run the same compiled code, so a scheduler counts them together for
    ``--compile auto``."""
    return tuple(_shape_key(setup, run) for run in denoise_passes(request, setup.settings.guidance_mode))


def with_clips_ahead(setup: EngineSetup, plan: RunPlan, runs_ahead: int | ClipsAhead) -> RunPlan:
    """``plan`` with ``--compile auto`` weighed again over ``runs_ahead``: a batch counts again when its denoise phase
    begins, so jobs queued while its prompts were encoded count too. Only the compile lever and its reason may change;
    nothing else a pass decided (graph, text K/V, memory) depends on the count, so a batch plan made from ``plan``
    still holds."""
    clips = ClipsAhead.of(runs_ahead)
    if all(p.accel.compile_economics is not None and p.accel.compile_economics.clips == clips for p in plan.passes):
        return plan  # counted so already (asking the machine again can run ptxas)
    passes = []
    for p in plan.passes:
        again = _accel(setup, p.run, p.stage, p.shape_key, clips)
        reasons = (again.settings.reasons[0], *p.accel.settings.reasons[1:])
        settings = replace(p.accel.settings, compile=again.settings.compile, reasons=reasons)
        passes.append(replace(p, accel=replace(p.accel, settings=settings, compile_economics=again.compile_economics)))
    return replace(plan, passes=tuple(passes))


def _shape_key(setup: EngineSetup, run: DenoisePass) -> tuple:
    keyframe_tokens = conditioning.conditioning_token_count(run.images, run.width, run.height)
    return (run.width, run.height, run.num_frames, keyframe_tokens, run.guidance.batch, setup.policy.precision,
            str(setup.dtype))  # fmt: skip


def _accel(setup: EngineSetup, run: DenoisePass, stage: StagePlan, shape_key: tuple, clips: ClipsAhead) -> AccelChoice:
    return for_run.choose_for_run(
        compile_mode=setup.settings.compile, cuda_graph_mode=setup.settings.cuda_graph, device=setup.device,
        dtype=setup.dtype, guidance=run.guidance, denoise=stage, budget_bytes=setup.budget.device_bytes,
        config=setup.checkpoint.config, shape_key=shape_key, runs_ahead=clips,
    )  # fmt: skip


def _pass_plan(setup: EngineSetup, run: DenoisePass, stage: StagePlan, clips: ClipsAhead) -> PassPlan:
    shape_key = _shape_key(setup, run)
    accel = _accel(setup, run, stage, shape_key, clips)
    return PassPlan(run, stage, accel, check_loras(setup, run, stage), shape_key)


def check_loras(setup: EngineSetup, run: DenoisePass, stage: StagePlan | None) -> tuple[LoraFile, ...]:
    """``run.loras`` checked against the transformer (headers only) and against where its weights come from: blocks
    streaming from the file, or 8-bit weights in a pre-quantized checkpoint, cannot take a LoRA at load
    (``RequestError`` naming ``ltx2-edge quantize --lora``, which bakes them in)."""
    files = inspect_loras(run.loras, setup.checkpoint.config)
    active = [f for f in files if f.spec.strength != 0.0]  # strength 0 changes no weight: nothing to fuse
    if active and stage is not None and stage.streamed_units and stage.source_tier == "file":
        raise RequestError("lora", str(active[0].spec.path),
                           "a run whose blocks do not stream from the file (this plan streams them from the file: "
                           "unified memory or a small --host-budget); bake LoRAs in with `ltx2-edge quantize "
                           "--checkpoint-path BF16_FILE --to fp8|int8 --lora PATH STRENGTH ...` and run its output "
                           "without --lora")  # fmt: skip
    with LoraFuser(active) as fuser:
        check_fusable(setup.checkpoint.header, fuser, CHECKPOINT_PREFIX)
    return files
