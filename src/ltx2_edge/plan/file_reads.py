"""Which file each stage of a plan reads, and what reading it once costs at the profile's checkpoint read rates.

Stages read two sources: the Gemma folder (the text encoder) and the LTX-2 checkpoint (connectors, transformer,
VAEs, vocoder), plus the latent upsampler's own file for the two-stage pipelines. Which copy of each a run reads
(the original or its pre-quantized copy) is the engine's choice (``quant.prequantized``); this module only writes
that choice into the plan (``StagePlan.reads``) and prints it beside each load's bytes and its warm and cold
seconds, so ``ltx2-edge plan`` says what a cold start is bound by before anything is read.

Pure formatting over a ``Plan``; never opens a file.
"""

from __future__ import annotations

from dataclasses import replace

from ltx2_edge.plan.plan_types import Plan

GB = 1e9


def with_reads(plan: Plan, checkpoint: str, gemma: str, upsampler: str | None = None) -> Plan:
    """``plan`` with every stage's ``reads`` set: ``gemma`` for the text encoder, ``checkpoint`` for the rest (the
    upsample stage reads the checkpoint's video VAE encoder and ``upsampler``). Each is a file's description
    (path, and whether it is pre-quantized: ``quant.prequantized.describe_source``)."""

    def reads(stage: str) -> str:
        if stage == "text_encode":
            return gemma
        if stage == "upsample":
            return f"{checkpoint} (video VAE encoder) and {upsampler or 'the latent upsampler file'}"
        return checkpoint

    return replace(plan, stages=tuple(replace(s, reads=reads(s.name)) for s in plan.stages))


def reads_lines(plan: Plan) -> list[str]:
    """The plan's loads, one line per file read (its stages, bytes, seconds warm and cold), then the total; nothing
    when the plan was made without ``with_reads``."""
    groups: dict[str, list] = {}
    for s in plan.stages:
        if s.reads:
            groups.setdefault(s.reads, []).append(s)
    if not groups:
        return []
    p = plan.profile
    lines = [f"loads (each stage's weights read once; checkpoint read rates of profile {p.name}: "
             f"{p.file_read_warm_gbps:g} GB/s warm, {p.file_read_cold_gbps:g} GB/s cold):"]  # fmt: skip
    for source, stages in groups.items():
        read = sum(s.file_read_bytes for s in stages)
        warm, cold = sum(s.warm_load_seconds for s in stages), sum(s.cold_load_seconds for s in stages)
        names = ", ".join(s.name for s in stages)
        lines.append(f"  {names}: {read / GB:.2f} GB, {warm:.2f} s warm / {cold:.1f} s cold, from {source}")
    lines.append(f"  all loads: {plan.file_read_bytes / GB:.2f} GB, {plan.warm_load_seconds:.2f} s warm / "
                 f"{plan.cold_load_seconds:.1f} s cold")  # fmt: skip
    return lines
