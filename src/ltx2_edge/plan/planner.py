"""The memory planner: checkpoint headers + request + budget -> a Plan, or a refusal before anything loads.

Pure functions. The planner reads only safetensors headers (names, dtypes, shapes) and the ``config``
metadata, never a weight, never a GPU: the same plan comes out on a laptop and on the device. For every
stage it predicts the peak, and picks:
* the weights' residency: all resident when weights + activations + slack fit; else K resident blocks
  (K maximal) and the rest streamed through P + 1 preallocated slots of the largest block's size;
* where streamed blocks wait: pinned host when a discrete GPU's host budget holds them, else the
  checkpoint file (mmap/pread); with one memory pool always the file, since pinned host would count
  against the same pool while the page cache does not;
* with conditioning images, an encode_image stage (the video VAE encoder alone, freed before the denoise) and
  the keyframes' extra tokens in every denoising forward;
* the decode stage's video tiling: untiled when it fits, else the fewest tiles that fit (ltx_core units),
  with the audio decoder + vocoder and their working set counted beside it, since both run at once.
An impossible budget raises ``BudgetError`` naming the stage, what it needs and the smallest budget that
works (found by bisecting the budget over this same pure planner; feasibility is monotone in the budget).
"""

from __future__ import annotations

import functools
import json
import math
from dataclasses import replace
from typing import Any

from ltx2_edge.checkpoint.header import Header, TensorInfo
from ltx2_edge.checkpoint.names import (
    AUDIO_DECODER,
    CONNECTORS,
    EMBEDDINGS,
    GEMMA_LAYERS,
    GEMMA_PREFIX,
    TRANSFORMER_BLOCKS,
    TRANSFORMER_PREFIX,
    VIDEO_DECODER,
    VIDEO_ENCODER,
)
from ltx2_edge.errors import BudgetError, CheckpointError
from ltx2_edge.plan import activations as act
from ltx2_edge.plan.budget import Budget, GiB, format_gib
from ltx2_edge.plan.flops import (
    FlopCount,
    gemma_attention_flops,
    linear_flops,
    transformer_attention_flops,
    transformer_rows,
    video_decode_flops,
    vocoder_flops,
)
from ltx2_edge.plan.plan_types import Plan, PlanRequest, SecondStage, StagePlan
from ltx2_edge.plan.profiles import DeviceProfile
from ltx2_edge.plan.stage_fit import FitContext, IsQuantized, MiB, Shortfall, Weights, fit_stage
from ltx2_edge.plan.step_time import denoise_shape
from ltx2_edge.plan.tile_plan import VideoTiling, candidate_tilings, frames_bytes
from ltx2_edge.quant.policy import QuantPolicy

# Video VAE encoder working set per output pixel of one image, bf16: the figure in issue 8's wiring notes for
# the full-size encoder (its largest level tensors and conv workspaces); not re-measured on a GPU here.
ENCODE_IMAGE_BYTES_PER_PIXEL = 235
_DEFAULT_POLICY = QuantPolicy("int8")  # the patterns are what counts here; int8 and fp8 weigh the same 1 byte


def quantized_predicate(policy: QuantPolicy) -> IsQuantized:
    """``is_quantized(tensor name)`` for ``policy``: the Linear weights it makes 8-bit (``quant/policy.py``'s
    patterns and keep-list, the one list the module swap and the file conversion also read)."""

    def is_quantized(name: str) -> bool:
        return name.endswith(".weight") and policy.precision_for(name.removesuffix(".weight")) != "bf16"

    return is_quantized


default_is_quantized = quantized_predicate(_DEFAULT_POLICY)
"""The default policy's predicate: Linear weights of transformer blocks and Gemma layers, except the BF16
keep-list (``quant.policy.DEFAULT_KEEP_BF16``)."""


class _Context(FitContext):
    """A FitContext plus what the stage builders read: both headers, the config, token counts, tilings."""

    def __init__(
        self,
        header: Header,
        gemma: dict[str, TensorInfo],
        request: PlanRequest,
        budget: Budget,
        profile: DeviceProfile,
        is_quantized: IsQuantized,
    ) -> None:
        super().__init__(request, budget, profile, is_quantized)
        self.is_quantized = is_quantized
        self.header, self.gemma = header, gemma
        raw = header.metadata.get("config")
        if raw is None:
            raise CheckpointError(f"{header.path} has no 'config' metadata: not an LTX-2 checkpoint")
        try:
            self.config: dict[str, Any] = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise CheckpointError(f"{header.path}: its 'config' metadata is not JSON ({exc})") from exc
        r = request
        self.tokens = act.token_counts(self.config, r.width, r.height, r.num_frames, r.frame_rate)
        self._tilings: list[VideoTiling] | None = None
        self._second: _Context | None = None

    def second(self) -> _Context:
        """Stage 2 of a two-stage request as a request of its own: the output size, its steps, one unguided pass,
        the images at the output size. Kept (its decode tilings are computed once) and given this budget."""
        s2 = self.request.second_stage
        if s2 is None:
            raise ValueError("second() of a one-stage request")
        if self._second is None:
            r2 = replace(self.request, width=s2.width, height=s2.height, num_inference_steps=s2.steps,
                         guidance_batch=1, conditioning_tokens=s2.conditioning_tokens,
                         image_float_pixels=s2.image_float_pixels, second_stage=None)  # fmt: skip
            self._second = _Context(self.header, self.gemma, r2, self.budget, self.profile, self.is_quantized)
        self._second.budget = self.budget
        return self._second

    @functools.cached_property
    def gemma_shape(self) -> act.GemmaShape:
        """Gemma's dimensions, read when a text stage is planned (``plan_decode`` needs no Gemma folder)."""
        return act.GemmaShape.from_tensors(_require(self.gemma, GEMMA_LAYERS, "Gemma folder"), GEMMA_PREFIX)

    def tilings(self) -> list[VideoTiling]:
        """Every candidate decode tiling; budget-independent, so computed once for the minimum-budget search."""
        if self._tilings is None:
            t = self.tokens
            self._tilings = list(
                candidate_tilings(self.config["vae"], t.latent_frames, t.latent_height, t.latent_width)
            )
        return self._tilings


def _require(tensors: dict[str, TensorInfo], prefixes: str | tuple[str, ...], what: str) -> dict[str, TensorInfo]:
    found = {n: t for n, t in tensors.items() if n.startswith(prefixes)}
    if not found:
        shown = prefixes if isinstance(prefixes, str) else " or ".join(prefixes)
        raise CheckpointError(f"{what} has no tensors named {shown}*: not an LTX-2 19B / Gemma 3 file")
    return found


def _text_encode(ctx: _Context) -> StagePlan | Shortfall:
    r, g = ctx.request, ctx.gemma_shape
    tensors = _require(ctx.gemma, GEMMA_PREFIX, "Gemma folder")
    layers = [t for n, t in tensors.items() if n.startswith(GEMMA_LAYERS)]
    rows = ctx.tokens.text * r.prompts
    flops = linear_flops(layers, lambda _: rows, ctx.quantized)
    flops += FlopCount(attention=r.prompts * gemma_attention_flops(g.layers, g.q_dim, ctx.tokens.text))
    activations = act.gemma_activation_bytes(g, r.prompts, ctx.profile.sdpa_materializes_scores)
    plan = fit_stage(ctx, "text_encode", ctx.weights(tensors, GEMMA_LAYERS), activations, flops, 1, "layer")
    return _with_note(plan, f"; {r.prompts} prompt(s) in one batch")


def _embeddings(ctx: _Context) -> StagePlan | Shortfall:
    r = ctx.request
    tensors = _require(ctx.header.tensors, EMBEDDINGS, "checkpoint")
    rows = ctx.tokens.text
    flops = linear_flops(tensors.values(), lambda _: rows, ctx.quantized).scaled(r.prompts)
    width = ctx.config["transformer"]["caption_channels"]
    blocks = {
        (head, tail.split(".", 1)[0])
        for head, _, tail in (n.partition("transformer_1d_blocks.") for n in tensors)
        if tail
    }
    flops += FlopCount(attention=r.prompts * len(blocks) * 4.0 * rows * rows * width)
    activations = act.embeddings_activation_bytes(ctx.gemma_shape, r.prompts, width)
    plan = fit_stage(ctx, "embeddings", ctx.weights(tensors, None), activations, flops, 1, "block")
    return _with_note(plan, "; one prompt at a time")


def _encode_image(ctx: _Context) -> StagePlan | Shortfall:
    """The video VAE encoder over each conditioning image at the output size, one image at a time.

    Working set per image: ``ENCODE_IMAGE_BYTES_PER_PIXEL`` per output pixel (doubled in float32, the CPU's
    dtype) plus the image's float32 source and scaled copy (12 B a pixel). FLOPs: the encoder mirrors the
    decoder, so one image costs about the decoder's convolutions on one latent frame (an estimate).
    """
    r, t = ctx.request, ctx.tokens
    weights = ctx.weights(_require(ctx.header.tensors, VIDEO_ENCODER, "checkpoint"), None)
    per_pixel = ENCODE_IMAGE_BYTES_PER_PIXEL * (2 if ctx.profile.name == "cpu" else 1)
    activations = per_pixel * r.width * r.height + 12 * r.image_float_pixels
    flops = FlopCount(conv=r.images * video_decode_flops(ctx.config["vae"], 1, t.latent_height, t.latent_width))
    plan = fit_stage(ctx, "encode_image", weights, activations, flops, 1, "block")
    return _with_note(plan, f"; {r.images} image(s), one at a time, at {r.width}x{r.height}")


def _upsample(ctx: _Context, stage_1: _Context, s2: SecondStage, held: int = 0) -> StagePlan | Shortfall:
    """Between the stages (``ctx`` at the output size): the latent upsampler x2 over stage 1's video latent, with
    the video VAE encoder (its statistics normalise the latent; it also re-encodes the images at this size).

    Working set: the upsampler's forward (``SecondStage.upsampler_working_bytes``) beside stage 1's latent, or an
    image encode at the output size, whichever is larger (they run one after the other). ``held``: bytes of the
    transformer kept resident through the stage.
    """
    r = ctx.request
    encoder = ctx.weights(_require(ctx.header.tensors, VIDEO_ENCODER, "checkpoint"), None)
    # The held transformer is already loaded: only the encoder and the upsampler file are read.
    weights = Weights(encoder.fixed + s2.upsampler_bytes + held, (), encoder.read_bytes + s2.upsampler_bytes)
    t1 = stage_1.tokens
    latent = frames_bytes(t1.latent_frames, t1.latent_height, t1.latent_width)
    per_pixel = ENCODE_IMAGE_BYTES_PER_PIXEL * (2 if ctx.profile.name == "cpu" else 1)
    images = per_pixel * r.width * r.height + 12 * r.image_float_pixels if r.images else 0
    flops = FlopCount(conv=s2.upsampler_flops + r.images * video_decode_flops(
        ctx.config["vae"], 1, ctx.tokens.latent_height, ctx.tokens.latent_width))  # fmt: skip
    plan = fit_stage(ctx, "upsample", weights, max(s2.upsampler_working_bytes + latent, images), flops, 1, "block")
    again = f"; {r.images} image(s) re-encoded at {r.width}x{r.height}" if r.images else ""
    return _with_note(plan, f"; latent upsampler x2 to {r.width}x{r.height}{again}")


def _denoise(ctx: _Context, name: str = "denoise") -> StagePlan | Shortfall:
    r = ctx.request
    tensors = {
        n: t
        for n, t in _require(ctx.header.tensors, TRANSFORMER_PREFIX, "checkpoint").items()
        if not n.startswith(CONNECTORS)
    }
    # Keyframe images add their tokens to every forward (they are cleared before decoding, so only here).
    tokens = replace(ctx.tokens, video=ctx.tokens.video + r.conditioning_tokens)
    rows = transformer_rows(tokens)
    flops = linear_flops(tensors.values(), lambda n: rows(n[len(TRANSFORMER_PREFIX) :]), ctx.quantized)
    flops = (flops + FlopCount(attention=transformer_attention_flops(ctx.config, tokens))).scaled(r.guidance_batch)
    activations = act.transformer_activation_bytes(ctx.config, tokens, r.guidance_batch,
                                                   ctx.profile.sdpa_materializes_scores)  # fmt: skip
    w = ctx.weights(tensors, TRANSFORMER_BLOCKS)
    shape = denoise_shape(ctx.config, tokens, r.guidance_batch, ctx.quantized)  # what the step model prices
    plan = fit_stage(ctx, name, w, activations, flops, r.num_inference_steps, "block", shape=shape)
    keyframes = f"; +{r.conditioning_tokens} keyframe tokens" if r.conditioning_tokens else ""
    ranks = f" on each of {r.guidance_ranks} ranks (CFG parallel)" if r.guidance_ranks > 1 else ""
    return _with_note(plan, f"; {r.guidance_batch} guidance pass(es) in one batched forward per step{ranks}{keyframes}")


def _decode(ctx: _Context) -> StagePlan | Shortfall:
    """The video VAE, tiled as little as fits, with the audio decoder + vocoder running at the same time.

    Both decoders' weights and both working sets are live together (the audio decodes on its own stream while
    the video tiles decode), so the fewest-tile tiling is chosen among those where all of it fits.
    """
    video = ctx.weights(_require(ctx.header.tensors, VIDEO_DECODER, "checkpoint"), None)
    audio = ctx.weights(_require(ctx.header.tensors, AUDIO_DECODER, "checkpoint"), None)
    audio_work = act.audio_decode_bytes(ctx.config, ctx.tokens.audio)
    beside = audio.total + audio_work
    t = ctx.tokens
    held = frames_bytes(t.latent_frames, t.latent_height, t.latent_width)
    fixed = video.total + beside + ctx.pool_extra + (held if ctx.budget.unified else 0)
    options = ctx.tilings()
    fitting = [o for o in options if fixed + o.working_bytes <= ctx.avail()]
    if not fitting:
        least = min(options, key=lambda o: o.working_bytes)
        why = (f"video decoder {format_gib(video.total)}, {least.describe()} {format_gib(least.working_bytes)}, "
               f"audio decoder + vocoder with their working set {format_gib(beside)}, slack")  # fmt: skip
        return Shortfall("decode", fixed + least.working_bytes, why)
    best = min(fitting, key=lambda o: (o.tiles, -o.working_bytes))
    # Concurrent kernels share one GPU's units, so the compute floor adds the vocoder's FLOPs to the video's.
    flops = FlopCount(conv=best.flops + vocoder_flops(ctx.config, t.audio * 4))
    weights = Weights(video.total + audio.total, (), video.read_bytes + audio.read_bytes)
    plan = fit_stage(ctx, "decode", weights, best.working_bytes + audio_work, flops, 1, "block", held)
    if isinstance(plan, Shortfall):
        return plan
    beside_on = "worker thread" if ctx.profile.name == "cpu" else "own CUDA stream"
    technique = f"{best.describe()}; audio decoder + vocoder beside it ({beside_on})"
    return replace(plan, tiles=best, beside_bytes=beside, technique=technique)


def _with_note(plan: StagePlan | Shortfall, note: str) -> StagePlan | Shortfall:
    return replace(plan, technique=plan.technique + note) if isinstance(plan, StagePlan) else plan


def _evaluate(ctx: _Context) -> list[StagePlan | Shortfall]:
    images = [_encode_image(ctx)] if ctx.request.images else []
    first = [_text_encode(ctx), _embeddings(ctx), *images, _denoise(ctx)]
    s2 = ctx.request.second_stage
    if s2 is None:
        return [*first, _decode(ctx)]
    out = ctx.second()
    second = _denoise(out, "denoise_2")
    kept = _kept_across(ctx, out, s2, first[-1], second)
    return [*first, kept if kept is not None else _upsample(out, ctx, s2), second, _decode(out)]


def _kept_across(
    ctx: _Context, out: _Context, s2: SecondStage, den: StagePlan | Shortfall, den2: StagePlan | Shortfall
) -> StagePlan | None:
    """The upsample stage with stage 1's transformer held resident into stage 2, when that can be: the same weights
    in both stages, every block resident in both, and the upsampler + encoder fitting beside it. Saves stage 2 a
    whole transformer load; None when it cannot (the transformer is then released and loaded again)."""
    if not (s2.same_weights and isinstance(den, StagePlan) and isinstance(den2, StagePlan)):
        return None
    if den.streamed_units or den2.streamed_units:
        return None
    plan = _upsample(out, ctx, s2, held=den.weights_resident_bytes)
    if not isinstance(plan, StagePlan):
        return None
    note = "; the transformer stays resident through it into stage 2 (same weights, not loaded again)"
    return replace(plan, keeps_transformer=True, technique=plan.technique + note)


def _fits(ctx: _Context) -> bool:
    return all(isinstance(s, StagePlan) for s in _evaluate(ctx))


def minimum_budget(
    header: Header,
    gemma_header_tensors: dict[str, TensorInfo],
    request: PlanRequest,
    budget: Budget,
    profile: DeviceProfile,
    is_quantized: IsQuantized = default_is_quantized,
) -> int:
    """The smallest device (or one-pool) budget, to 1 MiB, under which ``request`` plans; host cap as given.

    Bisects over the pure planner: if a budget fits, every larger one does (each stage's least-memory
    configuration stays available). Raises ``BudgetError`` when the host budget alone makes it impossible.
    """
    ctx = _Context(header, gemma_header_tensors, request, budget.with_device_bytes(None), profile, is_quantized)
    stages = _evaluate(ctx)
    host_short = [s for s in stages if isinstance(s, Shortfall)]
    if host_short:  # with an unlimited device budget only the host cap can fall short
        raise _host_error(host_short[0], budget)
    lo, hi = 0, -(-max(s.predicted_peak_bytes for s in stages if isinstance(s, StagePlan)) // MiB)
    while lo + 1 < hi:  # invariant: lo MiB fails, hi MiB fits
        mid = (lo + hi) // 2
        ctx.budget = budget.with_device_bytes(mid * MiB)
        lo, hi = (lo, mid) if _fits(ctx) else (mid, hi)
    return hi * MiB


def plan(
    header: Header,
    gemma_header_tensors: dict[str, TensorInfo],
    request: PlanRequest,
    budget: Budget,
    profile: DeviceProfile,
    is_quantized: IsQuantized = default_is_quantized,
) -> Plan:
    """Plan every stage of ``request`` inside ``budget`` from the LTX-2 checkpoint's header and the Gemma
    folder's merged header tensors; raise ``BudgetError`` (before anything loads) when it cannot fit.

    ``is_quantized(name)`` decides which 2-D weights take 1 byte when ``request.precision`` is fp8/int8.
    """
    ctx = _Context(header, gemma_header_tensors, request, budget, profile, is_quantized)
    stages = _evaluate(ctx)
    short = [s for s in stages if isinstance(s, Shortfall)]
    if not short:
        return Plan(tuple(s for s in stages if isinstance(s, StagePlan)), request, budget, profile)
    if all(s.host for s in short):
        raise _host_error(short[0], budget)
    short = [s for s in short if not s.host]
    smallest = minimum_budget(header, gemma_header_tensors, request, budget, profile, is_quantized)
    worst = max(short, key=lambda s: s.need)
    hints = "lower --width/--num-frames" + (", or use --quantization fp8" if request.precision == "bf16" else "")
    raise BudgetError(
        f"needs at least {_gib_up(worst.need)} GiB for {worst.stage} ({worst.why}); the budget is "
        f"{format_gib(budget.device_bytes)}. Smallest budget that works for this request: "
        f"{_gib_up(smallest)} GiB (or {hints})"
    )


def plan_decode(header: Header, request: PlanRequest, budget: Budget, profile: DeviceProfile) -> StagePlan:
    """The decode stage's plan alone (tiles, peak), from the LTX-2 checkpoint's header: no Gemma folder needed.

    For benchmarks of the decoders; raises ``BudgetError`` naming what the stage needs when it cannot fit.
    """
    ctx = _Context(header, {}, request, budget, profile, default_is_quantized)
    stage = _decode(ctx)
    if isinstance(stage, Shortfall):
        limit = budget.host_bytes if stage.host else budget.device_bytes
        raise BudgetError(f"needs {format_gib(stage.need)} for {stage.stage} ({stage.why}); the budget is "
                          f"{format_gib(limit)}: raise the budget or lower the width, height or frames")  # fmt: skip
    return stage


def _host_error(short: Shortfall, budget: Budget) -> BudgetError:
    return BudgetError(
        f"needs {format_gib(short.need)} of host memory for {short.stage} ({short.why}); the host budget is "
        f"{format_gib(budget.host_bytes)}: raise --host-budget"
    )


def _gib_up(n: int) -> str:
    """Bytes in GiB rounded *up* to 0.1, so that the figure, passed back as --budget, fits."""
    return f"{math.ceil(n / GiB * 10) / 10:.1f}"
