"""Which files a run reads: the checkpoint and Gemma folder it was given, or their pre-quantized copies.

``--prequantized auto`` (the default) reads the copy ``ltx2-edge quantize`` writes beside each original
(``checkpoint.prequantized.prequantized_name``) when it is there, was made from that original and with this run's
policy: half the bytes of the BF16 original to read, and no quantizing at load. ``on`` insists on both copies
(a refusal when one is missing, for benchmarks and services that must not load the slow way by accident); ``off``
reads the originals. Whatever is chosen is said, never silent: one note per file for the run's start and its report,
and the plan names the file each stage reads (``plan.file_reads``).

A copy that is there but not of this original, or made with another policy, is refused (``CheckpointError``) with
the command that makes it again: it is never read, and never skipped silently for the original either.

This module only chooses; it reads headers (and ``checkpoint.prequantized``'s sampled windows), never a weight.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ltx2_edge.checkpoint.header import Header, read_header
from ltx2_edge.checkpoint.prequantized import (
    PREQUANTIZED_MODES,
    find_checkpoint_copy,
    find_gemma_copy,
    prequantized_name,
    recorded_source,
    remake_command,
)
from ltx2_edge.checkpoint.validate import (
    CheckpointInfo,
    GemmaInfo,
    inspect_checkpoint,
    inspect_gemma_folder,
    stored_precision,
)
from ltx2_edge.errors import CheckpointError, RequestError
from ltx2_edge.quant.policy import QuantPolicy
from ltx2_edge.quant.quantized_file import recorded_policy

_LORA_NOTE = "LoRAs cannot be fused into its 8-bit weights at load (runs with --lora need --prequantized off)"


@dataclass(frozen=True)
class RunFiles:
    """What a run reads: ``checkpoint`` (connectors, transformer, VAEs, vocoder), ``gemma`` (the text encoder), the
    originals they stand for, and one note for each saying what is read and why."""

    checkpoint: CheckpointInfo
    gemma: GemmaInfo
    original_checkpoint: Path
    original_gemma: Path
    notes: tuple[str, ...]

    @property
    def reads_copies(self) -> bool:
        """A pre-quantized copy is read in place of an original given."""
        return self.checkpoint.path != self.original_checkpoint or self.gemma.root != self.original_gemma


def choose_files(checkpoint: CheckpointInfo, gemma: GemmaInfo, policy: QuantPolicy, mode: str) -> RunFiles:
    """The files a run with ``policy`` reads under ``--prequantized mode``, each original's copy checked by its
    recorded source and policy (``CheckpointError`` for one that does not match; ``RequestError`` for ``on`` with no
    copy to read). Headers only."""
    if mode not in PREQUANTIZED_MODES:
        raise RequestError("prequantized", mode, f"one of {', '.join(PREQUANTIZED_MODES)}")
    if mode == "on" and policy.precision == "bf16":
        raise RequestError("prequantized", mode, "auto or off with --quantization bf16 (bf16 weights are read from "
                           "the originals; pre-quantized copies are fp8 or int8)")  # fmt: skip
    ckpt, ckpt_note = _checkpoint(checkpoint, policy, mode)
    text, text_note = _gemma(gemma, policy, mode)
    return RunFiles(ckpt, text, checkpoint.path, gemma.root, (ckpt_note, text_note))


def _checkpoint(info: CheckpointInfo, policy: QuantPolicy, mode: str) -> tuple[CheckpointInfo, str]:
    path, precision = info.path, policy.precision
    what = "checkpoint (connectors, transformer, decoders)"
    if precision == "bf16":
        return info, f"{what}: reads {path} (bf16 run)"
    if info.quantized:
        return info, f"{what}: reads {path} as given (pre-quantized {stored_precision(info.header)})"
    command = f"`ltx2-edge quantize --checkpoint-path {path} --to {precision}`"
    if mode == "off":
        return info, f"{what}: reads {path}, quantized to {precision} at load (--prequantized off)"
    found = find_checkpoint_copy(path, precision)
    if found is None:
        return info, _missing(what, path, prequantized_name(path, precision), precision, command, mode)
    _check_policy(read_header(found.path), policy, remake_command(path, precision, folder=False))
    copy = inspect_checkpoint(found.path)
    return copy, (f"{what}: reads {found.path}, the pre-quantized {precision} copy of {path} ({found.how}; "
                  f"--prequantized off reads the original); {_LORA_NOTE}")  # fmt: skip


def _gemma(info: GemmaInfo, policy: QuantPolicy, mode: str) -> tuple[GemmaInfo, str]:
    root, precision = info.root, policy.precision
    what = "Gemma text encoder"
    if precision == "bf16":
        return info, f"{what}: reads {root} (bf16 run)"
    given = {stored_precision(read_header(shard)) for shard in info.shards} - {None}
    if given:
        return info, f"{what}: reads {root} as given (pre-quantized {'/'.join(sorted(given))})"
    command = f"`ltx2-edge quantize --gemma-root {root} --to {precision}`"
    if mode == "off":
        return info, f"{what}: reads {root}, quantized to {precision} at load (--prequantized off)"
    found = find_gemma_copy(root, info.shards, precision)
    if found is None:
        return info, _missing(what, root, prequantized_name(root, precision), precision, command, mode)
    copy = inspect_gemma_folder(found.path)
    for shard in copy.shards:
        _check_policy(read_header(shard), policy, remake_command(root, precision, folder=True))
    return copy, (f"{what}: reads {found.path}, the pre-quantized {precision} copy of {root} ({found.how}; "
                  "--prequantized off reads the original)")  # fmt: skip


def _missing(what: str, original: Path, looked: Path, precision: str, command: str, mode: str) -> str:
    if mode == "on":
        raise RequestError("prequantized", mode, f"a pre-quantized copy of {original} at {looked}: there is none; "
                           f"write it with {command}, or run with --prequantized auto")  # fmt: skip
    return (f"{what}: reads {original}, quantized to {precision} at load; no pre-quantized copy at {looked} "
            f"({command} writes one: half the bytes to read, no quantizing at load)")  # fmt: skip


def _check_policy(header: Header, policy: QuantPolicy, remake: str) -> None:
    recorded = recorded_policy(header)
    if recorded is None:
        raise CheckpointError(f"{header.path} holds 8-bit weights but records no quantization policy: {remake}, or "
                              "run with --prequantized off")  # fmt: skip
    if recorded != policy:
        raise CheckpointError(f"{header.path} was quantized as [{recorded.summary()}] but this run asks for "
                              f"[{policy.summary()}]: {remake} with this run's --keep-bf16/--quantize-all flags, or "
                              "run with --prequantized off")  # fmt: skip


def describe_source(path: Path, headers: Sequence[Header], precision: str, folder: bool = False) -> str:
    """One phrase for the plan: ``path`` (a checkpoint, or with ``folder`` a Gemma folder and its shards'
    ``headers``) and how its weights reach ``precision``: pre-quantized (from which original, as recorded), or
    quantized at load."""
    stored = sorted({p for h in headers if (p := stored_precision(h)) is not None})
    if stored:
        records = [r for h in headers if (r := recorded_source(h)) is not None and isinstance(r.get("path"), str)]
        # A folder's shards each record their own source shard: the copy is of the folder holding them.
        sources = sorted({str(Path(r["path"]).parent) if folder else r["path"] for r in records})
        made = f" copy of {', '.join(sources)}" if sources else ""
        return f"{path} (pre-quantized {'/'.join(stored)}{made})"
    if precision == "bf16":
        return f"{path} (bf16)"
    return f"{path} (quantized to {precision} at load)"
