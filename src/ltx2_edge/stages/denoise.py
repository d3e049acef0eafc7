"""The denoising loop: LTX2Scheduler sigmas, Euler steps, multi-modal guidance in one batched forward per step.

``mode="sequential"`` reproduces the official ``ltx-pipelines`` 1.0.0 denoising function op for op (one batch-1
forward per guidance pass), which is what the oracle test checks bit for bit. ``mode="batched"`` stacks the
passes on the batch axis with per-sample perturbations; results then match the official ones to float
rounding (different GEMM shapes), not bit for bit. This module never loads weights.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, replace
from typing import Protocol

import torch
from ltx_core.components.diffusion_steps import EulerDiffusionStep
from ltx_core.components.guiders import MultiModalGuider
from ltx_core.components.schedulers import LTX2Scheduler
from ltx_core.guidance.perturbations import BatchedPerturbationConfig
from ltx_core.model.transformer import Modality
from ltx_core.types import LatentState

from ltx2_edge.accel.compile import block_invariant
from ltx2_edge.accel.engine import AccelSettings, EngineSlot, StepEngine
from ltx2_edge.accel.step_graph import CaptureHooks
from ltx2_edge.guidance import Guidance, PassName

StepCallback = Callable[[int, int, float], None]  # (step index, total steps, seconds this step)


@dataclass(frozen=True)
class Contexts:
    """Text contexts from the text-encode stage: positive and negative, for video and audio."""

    video: torch.Tensor
    audio: torch.Tensor
    video_negative: torch.Tensor
    audio_negative: torch.Tensor


def official_sigmas(steps: int, device: torch.device) -> torch.Tensor:
    """The official schedule: ``LTX2Scheduler().execute(steps)`` (fixed 4096-token shift), float32."""
    return LTX2Scheduler().execute(steps=steps).to(dtype=torch.float32, device=device)


def _modality(state: LatentState, context: torch.Tensor, sigma: torch.Tensor, batch: int) -> Modality:
    timesteps = state.denoise_mask * sigma
    if batch == 1:
        return Modality(
            latent=state.latent,
            sigma=sigma,
            timesteps=timesteps,
            positions=state.positions,
            context=context,
            context_mask=None,
            attention_mask=state.attention_mask,
        )
    return Modality(
        latent=state.latent.expand(batch, *state.latent.shape[1:]),
        # ltx-core wants one sigma per sample once the batch is > 1 (it views sigma as [B, 1, 1]).
        sigma=sigma.reshape(1).repeat(batch),
        timesteps=timesteps.expand(batch, *timesteps.shape[1:]),
        positions=state.positions.expand(batch, *state.positions.shape[1:]),
        context=context,
        context_mask=None,
        attention_mask=None
        if state.attention_mask is None
        else state.attention_mask.expand(batch, *state.attention_mask.shape[1:]),
    )


def _pass_contexts(name: PassName, ctx: Contexts) -> tuple[torch.Tensor, torch.Tensor]:
    return (ctx.video_negative, ctx.audio_negative) if name == "uncond" else (ctx.video, ctx.audio)


@dataclass(frozen=True)
class BatchedPasses:
    """A step's guidance passes stacked on the batch axis: contexts and per-sample perturbations.

    Built once per run (``batch_passes``): the contexts never change across steps, so concatenating them and
    rebuilding the perturbation list every step would only allocate and copy the same tensors again.
    """

    passes: tuple[PassName, ...]
    video_context: torch.Tensor
    audio_context: torch.Tensor
    perturbations: BatchedPerturbationConfig


def batch_passes(guidance: Guidance, ctx: Contexts) -> BatchedPasses:
    """Stack ``guidance``'s passes for one batched forward per step."""
    passes = guidance.passes()
    contexts = [_pass_contexts(p, ctx) for p in passes]
    return BatchedPasses(
        passes,
        torch.cat([c[0] for c in contexts]) if len(passes) > 1 else contexts[0][0],
        torch.cat([c[1] for c in contexts]) if len(passes) > 1 else contexts[0][1],
        BatchedPerturbationConfig([guidance.perturbation(p) for p in passes]),
    )


def batched_forward(
    transformer: torch.nn.Module,
    batched: BatchedPasses,
    video: LatentState,
    audio: LatentState,
    sigma: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One forward over all of a step's passes: denoised video and audio, one sample per pass."""
    n = len(batched.passes)
    return transformer(
        video=_modality(video, batched.video_context, sigma, n),
        audio=_modality(audio, batched.audio_context, sigma, n),
        perturbations=batched.perturbations,
    )


class PassSplit(Protocol):
    """A step's passes shared among processes (``parallel.cfg_split``): each runs ``local(batched)``, its share, and
    ``gather`` returns every pass's outputs, stacked in ``guidance.passes()`` order, on every process."""

    def local(self, batched: BatchedPasses) -> BatchedPasses: ...

    def gather(self, out: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]: ...


def _split_passes(
    passes: tuple[PassName, ...], out: tuple[torch.Tensor, ...]
) -> dict[PassName, tuple[torch.Tensor, torch.Tensor]]:
    out_v, out_a = out
    return {p: (out_v[i : i + 1], out_a[i : i + 1]) for i, p in enumerate(passes)}


def _predict_sequential(
    transformer: torch.nn.Module,
    guidance: Guidance,
    video: LatentState,
    audio: LatentState,
    ctx: Contexts,
    sigma: torch.Tensor,
) -> dict[PassName, tuple[torch.Tensor, torch.Tensor]]:
    out: dict[PassName, tuple[torch.Tensor, torch.Tensor]] = {}
    for p in guidance.passes():
        v_ctx, a_ctx = _pass_contexts(p, ctx)
        # The official function passes perturbations=None for the plain passes and a one-sample config otherwise;
        # both mean "no perturbation" in ltx-core, but we mirror it exactly to stay bit-identical.
        perturbations = None if p in ("cond", "uncond") else BatchedPerturbationConfig([guidance.perturbation(p)])
        out[p] = transformer(
            video=_modality(video, v_ctx, sigma, 1),
            audio=_modality(audio, a_ctx, sigma, 1),
            perturbations=perturbations,
        )
    return out


def guided_prediction(
    transformer: torch.nn.Module,
    guidance: Guidance,
    video: LatentState,
    audio: LatentState,
    ctx: Contexts,
    sigma: torch.Tensor,
    batched: BatchedPasses | None = None,
    engine: StepEngine | None = None,
    split: PassSplit | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Denoised video and audio for one step, with guidance applied (official ``MultiModalGuider.calculate``).

    ``batched``: the run's stacked passes (``batch_passes``), reused across steps; built here when None.
    ``engine``: runs the batched forward accelerated (compiled, graphed); None runs it eager. ``split``: the passes
    are shared among processes: ``batched`` is this process's share (``split.local``), the rest come from
    ``split.gather``, so every process applies the guider to the same predictions.
    """
    if guidance.mode == "batched":
        batched = batched or batch_passes(guidance, ctx)
        out = engine(video, audio, sigma) if engine is not None else batched_forward(
            transformer, batched, video, audio, sigma)  # fmt: skip
        preds = _split_passes(guidance.passes(), out if split is None else split.gather(out))
    else:
        preds = _predict_sequential(transformer, guidance, video, audio, ctx, sigma)
    results = []
    per_modality = ((guidance.video, ctx.video_negative), (guidance.audio, ctx.audio_negative))
    for i, (params, negative) in enumerate(per_modality):
        guider = MultiModalGuider(params=params, negative_context=negative)
        cond = preds["cond"][i]
        results.append(
            guider.calculate(
                cond,
                preds["uncond"][i] if "uncond" in preds else 0.0,
                preds["perturbed"][i] if "perturbed" in preds else 0.0,
                preds["isolated"][i] if "isolated" in preds else 0.0,
            )
        )
    return results[0], results[1]


def _bound_inputs(
    batched: BatchedPasses, video: LatentState, audio: LatentState
) -> tuple[tuple[torch.Tensor | None, ...], tuple]:
    """What ``batched_forward`` reads besides the latents and sigma (a reused graph gets them refilled), and what
    must be equal for a graph to serve another run (the passes and their perturbations)."""
    tensors = (batched.video_context, batched.audio_context)
    for state in (video, audio):
        tensors += (state.denoise_mask, state.positions, state.attention_mask)
    return tensors, (batched.passes, repr(batched.perturbations))


def _post_process(denoised: torch.Tensor, mask: torch.Tensor, clean: torch.Tensor) -> torch.Tensor:
    # Same expression and dtype handling as ltx_pipelines.utils.helpers.post_process_latent (bit-identical).
    return (denoised * mask + clean.float() * (1 - mask)).to(denoised.dtype)


@torch.inference_mode()
def denoise(
    transformer: torch.nn.Module,
    video: LatentState,
    audio: LatentState,
    sigmas: torch.Tensor,
    contexts: Contexts,
    guidance: Guidance,
    on_step: StepCallback | None = None,
    synchronize: Callable[[], None] | None = None,
    accel: AccelSettings | None = None,
    accel_stats: dict | None = None,
    slot: EngineSlot | None = None,
    split: PassSplit | None = None,
    streamer: CaptureHooks | None = None,
) -> tuple[LatentState, LatentState]:
    """Run all Euler steps over ``sigmas``; returns the final (still patchified) video and audio states.

    ``synchronize`` (e.g. ``torch.cuda.synchronize``) is called before each step's timer is read, so progress
    shows real step times instead of launch times; pass None on CPU. ``accel`` (batched guidance only): how the
    forwards run (``accel.engine``); ``accel_stats`` receives what the engine did. ``slot``: an ``EngineSlot``
    the caller keeps across runs on the same transformer, so a run of the same shapes replays the previous run's
    CUDA graph (the slot's engine stays open after this run; the caller closes the slot).
    ``split`` (batched guidance only): this process runs its share of the passes (``parallel.cfg_split``), accelerated
    as a batch of its own, and gathers the others' outputs every step. ``streamer``: the block streamer of
    ``transformer``'s streamed blocks, for a CUDA graph to hold their copies (``accel.step_graph``).
    """
    stepper = EulerDiffusionStep()
    total = len(sigmas) - 1
    batched = batch_passes(guidance, contexts) if guidance.mode == "batched" else None
    if accel is not None and batched is None:
        raise ValueError("accelerated denoising needs batched guidance (guidance_mode='batched')")
    if split is not None:
        if batched is None:
            raise ValueError("passes shared among processes need batched guidance (guidance_mode='batched')")
        batched = split.local(batched)
    with ExitStack() as scope:
        engine = None
        if accel is not None and batched is not None:
            if accel.compile:
                batched = replace(batched, perturbations=block_invariant(batched.perturbations))
            forward = functools.partial(batched_forward, transformer, batched)
            if slot is None:
                engine = scope.enter_context(StepEngine(transformer, forward, accel, video.latent.device,
                                                        streamer=streamer))  # fmt: skip
            else:
                bound, signature = _bound_inputs(batched, video, audio)
                engine = slot.acquire(transformer, forward, accel, video.latent.device, bound, signature, streamer)
                # On the way out of a run that raised (a cancelled step, an OOM), the engine may hold a half-made
                # graph or a half-refilled one: closed, so the next run starts clean.
                scope.push(lambda kind, _exc, _tb: slot.close() if kind is not None else None)
        elif slot is not None:
            slot.close()  # an open engine keeps the transformer patched for its own run's contexts
        for step in range(total):
            start = time.perf_counter()
            sigma = sigmas[step]
            den_v, den_a = guided_prediction(transformer, guidance, video, audio, contexts, sigma, batched, engine,
                                             split)  # fmt: skip
            den_v = _post_process(den_v, video.denoise_mask, video.clean_latent)
            den_a = _post_process(den_a, audio.denoise_mask, audio.clean_latent)
            video = replace(video, latent=stepper.step(video.latent, den_v, sigmas, step))
            audio = replace(audio, latent=stepper.step(audio.latent, den_a, sigmas, step))
            if on_step is not None:
                if synchronize is not None:
                    synchronize()
                on_step(step, total, time.perf_counter() - start)
    if engine is not None and accel_stats is not None:  # after the engine closed: it counts compiled graphs then
        accel_stats.update(engine.stats.as_dict())
    return video, audio
