"""``BatchPlan``: what a scheduler may keep loaded while it runs several prepared requests phase by phase (every text
stage, then every denoise, then every decode), decided from their ``RunPlan``s and the budget alone.

Each phase runs one kind of stage at a time, so a part held for its own phase (Gemma and the connectors over all the
prompts, the transformer over all the denoising, the decoders over all the decodes) adds nothing to any stage's
planned peak, beyond the one case counted here: Gemma and the connectors are planned to run one after the other, so
holding both needs each stage's peak plus the other's weights inside the budget. When they do not fit together (W1
at 16 GiB: Gemma's 12.9 GiB peak) the text phase splits in two: Gemma over every prompt, its hidden states waiting
in host memory (about 0.8 GB a clip), then the connectors over all of them, each part loaded once. Interleaving each
clip's decode right after its denoise (its MP4 written while the next clip denoises) keeps the transformer loaded
beside the decoders, and is chosen only when that sum fits too; the decoders then stay for the batch only when they
also fit beside every denoise. The denoise's CUDA graph is kept from one clip to the next (replayed instead of
captured again) when the transformer is held and every clip is graphed; with interleaved decodes its memory (one
forward's activations in the graph's pool, plus what the accelerations keep) then sits beside each decode, so that
sum must fit too. A batch whose clips all stream the transformer the same way keeps the one streamer (resident
blocks, slots, pinned host copies) for the denoise phase, with the decodes after it.

Pure arithmetic over plans: this module must never load anything.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ltx2_edge.engine.run_plan import RunPlan


@dataclass(frozen=True)
class BatchPlan:
    """Holds for one batch; ``reasons`` says why each was taken or not (the report shows it per job)."""

    hold_text: bool
    hold_transformer: bool
    interleave_decode: bool
    reasons: tuple[str, ...]
    hold_decoders: bool = False
    hold_step_graph: bool = False
    hold_streamed: bool = False
    split_text: bool = False  # Gemma over every prompt (held), hidden states to host, then the connectors (held)


def _fits(peak: int, beside: int, budget: int | None) -> bool:
    return budget is None or peak + beside <= budget


def plan_batch(plans: Sequence[RunPlan], budget_bytes: int | None, host_staging: bool = True) -> BatchPlan:
    """The holds a batch of ``plans`` can take inside ``budget_bytes`` (None: no budget). ``host_staging``: host
    memory outside the budget can keep the prompts' Gemma hidden states between the text phase's two parts (a
    discrete GPU; on one memory pool they would sit inside the budget, which no stage's plan counts)."""
    if not plans:
        return BatchPlan(False, False, False, ("empty batch",))
    reasons: list[str] = []
    text = [(p.memory.stage("text_encode"), p.memory.stage("embeddings")) for p in plans]
    hold_text = len(plans) > 1 and all(
        not t.streamed_units
        and _fits(t.predicted_peak_bytes, e.weights_resident_bytes, budget_bytes)
        and _fits(e.predicted_peak_bytes, t.weights_resident_bytes, budget_bytes)
        for t, e in text
    )
    if hold_text:
        reasons.append(
            "Gemma and the connectors loaded once for every prompt of the batch (both fit beside each other)"
        )
    # Each held alone for its own half of the text phase: nothing else is loaded then, so each stage's own plan
    # covers it. Gemma's streamed layers are not kept between calls (their slots exist for one forward).
    split_text = len(plans) > 1 and not hold_text and host_staging and all(not t.streamed_units for t, _ in text)
    if split_text:
        reasons.append("Gemma loaded once for every prompt of the batch (hidden states to host memory), then the "
                       "connectors once for all: the two do not fit together")  # fmt: skip
    elif len(plans) > 1 and not hold_text:
        why = "streamed layers" if any(t.streamed_units for t, _ in text) else "no host memory outside the budget"
        reasons.append(f"Gemma and the connectors loaded per prompt: {why}, and the two do not fit together")

    one_stage = all(len(p.passes) == 1 for p in plans)
    keys = {tuple((str(f.spec.path), f.spec.strength) for f in p.passes[0].active_loras) for p in plans}
    resident = all(not p.passes[0].stage.streamed_units for p in plans)
    hold_transformer = one_stage and resident and len(keys) == 1
    # Streaming alike: one streamer (its slots, pinned copies and resident blocks) can run every clip's forwards.
    # Nothing else is loaded during the denoise phase and the decodes wait for its end, so each denoise's own plan
    # already covers what is held.
    hold_streamed = len(plans) > 1 and one_stage and not resident and len(keys) == 1 and _streams_alike(plans)
    if hold_transformer:
        reasons.append("transformer loaded once for every denoise of the batch (all blocks resident, same LoRAs)")
    elif hold_streamed:
        den = plans[0].passes[0].stage
        reasons.append(f"streamed transformer loaded once for every denoise of the batch ({den.resident_units} "
                       f"blocks resident, {den.streamed_units} streamed from {den.source_tier} through "
                       f"{den.n_slots} slots: the same for every clip); decodes after the denoise phase")  # fmt: skip
    elif not resident:
        reasons.append("transformer blocks stream: loaded per clip (the clips stream differently, or one clip)")
    else:
        reasons.append("transformer loaded per clip: two-stage pipelines or different LoRAs in the batch")
    interleave = hold_transformer and all(
        _fits(p.memory.stage("decode").predicted_peak_bytes, p.passes[0].stage.weights_resident_bytes, budget_bytes)
        for p in plans
    )
    if interleave:
        reasons.append("each clip decodes right after its denoise, with the transformer still loaded beside it")
    elif hold_transformer:
        reasons.append("decodes after every denoise of the batch (the decoders do not fit beside the transformer)")
    # Decoders kept for the batch: beside every denoise when the decodes interleave (each denoise peak plus their
    # weights inside the budget), else only for the decode phase, where nothing else is loaded.
    decoders = [p.memory.stage("decode").weights_resident_bytes for p in plans]
    if interleave:
        hold_decoders = all(_fits(p.predicted_peak_bytes(p.passes[0].run.stage), w, budget_bytes)
                            for p, w in zip(plans, decoders, strict=True))  # fmt: skip
    else:
        hold_decoders = len(plans) > 1
    if hold_decoders and len(plans) > 1:
        reasons.append(
            "decoders loaded once for the batch" + (" (they fit beside every denoise)" if interleave else "")
        )
    elif len(plans) > 1:
        reasons.append("decoders loaded per clip: they do not fit beside the denoise")
    hold_graph = len(plans) > 1 and hold_transformer and _graph_fits(plans, interleave, budget_bytes)
    if hold_graph:
        reasons.append("one CUDA graph for the batch's denoising: later clips of the same shapes replay it")
    elif len(plans) > 1 and hold_transformer:
        reasons.append("each clip captures its own CUDA graph: not every clip is graphed, or the graph's memory does "
                       "not fit beside the decodes")  # fmt: skip
    return BatchPlan(hold_text, hold_transformer, interleave, tuple(reasons), hold_decoders and len(plans) > 1,
                     hold_graph, hold_streamed, split_text)  # fmt: skip


def _streams_alike(plans: Sequence[RunPlan]) -> bool:
    stages = [p.passes[0].stage for p in plans]
    return len({(s.resident_units, s.streamed_units, s.source_tier, s.n_slots, s.slot_bytes) for s in stages}) == 1


def _graph_fits(plans: Sequence[RunPlan], interleave: bool, budget_bytes: int | None) -> bool:
    if not all(p.passes[0].accel.settings.cuda_graph for p in plans):
        return False
    if not interleave:  # the decodes come after the denoise phase, which releases the graph first
        return True
    return all(
        _fits(
            p.memory.stage("decode").predicted_peak_bytes,
            p.passes[0].stage.weights_resident_bytes
            + p.passes[0].stage.activations_bytes
            + p.passes[0].accel.extra_peak_bytes,
            budget_bytes,
        )
        for p in plans
    )
