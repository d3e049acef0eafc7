"""Writes random LoRA files in the official LTX-2 format for a generated checkpoint's size (``make-lora``).

Keys are ``diffusion_model.<module>.lora_A.weight`` ``[rank, in]`` and ``.lora_B.weight`` ``[out, rank]``, BF16,
as LTX-2 LoRAs ship; targets are every attention projection (``to_q``/``to_k``/``to_v``/``to_out.0`` of the video,
audio and audio-video attentions) and feed-forward Linear of every block, so a LoRA touches 8-bit layers and the
BF16 keep-list alike. The file is written under a temporary name and renamed when complete; this module never
replaces a file it did not write.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import torch
from safetensors.torch import save_file

from ltx2_edge.atomic import atomic_output
from ltx2_edge.checkpoint.configs import SIZES, ltx2_config
from ltx2_edge.checkpoint.header import read_header
from ltx2_edge.checkpoint.names import LORA_PREFIX
from ltx2_edge.errors import CheckpointError, RequestError
from ltx2_edge.models.loaders import build_transformer_meta
from ltx2_edge.models.lora import linear_weight_shapes
from ltx2_edge.synth.safetensors_writer import generator_tag

_TARGETS = re.compile(
    r"transformer_blocks\.\d+\.(\w*attn\w*\.(to_q|to_k|to_v|to_out\.0)|\w*ff\.net\.(0\.proj|2))\.weight"
)
DELTA_FRACTION = 0.1  # std of B @ A relative to a kaiming-uniform weight's std


def make_lora(size: str, out: Path, rank: int, *, seed: int = 0, overwrite: bool = False) -> Path:
    """Write a random LoRA of ``rank`` for the ``size`` ("tiny"/"full") transformer to ``out``; returns ``out``.

    Init: ``A ~ U(-1/sqrt(in), 1/sqrt(in))`` (peft's kaiming-uniform for lora_A) and
    ``B ~ U(-b, b)`` with ``b = DELTA_FRACTION * sqrt(3 / rank)``, so each entry of ``B @ A`` has a standard
    deviation of ``DELTA_FRACTION`` times that of a kaiming-uniform weight of the same fan-in: a small, visible
    change. (Trained LoRAs start with B = 0; a random test LoRA must not be a no-op.) Values come from a CPU
    ``torch.Generator`` seeded with ``seed``, layer by layer in name order.
    """
    if size not in SIZES:
        raise RequestError("--size", size, f"one of {', '.join(SIZES)}")
    if isinstance(rank, bool) or not isinstance(rank, int) or rank < 1:
        raise RequestError("--rank", rank, "a positive integer, e.g. 4 (tiny) or 32 (full)")
    out = Path(out)
    if out.exists():
        meta = read_header(out).metadata
        if meta.get("_generator") is None or "rank" not in meta:  # a generated checkpoint is not a LoRA to replace
            raise CheckpointError(f"refusing to replace {out}: it is not a LoRA written by this generator; move it "
                                  "away or choose another --out")  # fmt: skip
        if not overwrite:
            raise RequestError("--out", str(out), "a new path, or pass --overwrite to replace the generated LoRA there")
    shapes = linear_weight_shapes(build_transformer_meta(ltx2_config(size)).velocity_model)
    g = torch.Generator().manual_seed(seed)
    tensors: dict[str, torch.Tensor] = {}
    bound_b = DELTA_FRACTION * math.sqrt(3.0 / rank)
    for name in sorted(n for n in shapes if _TARGETS.fullmatch(n)):
        out_features, in_features = shapes[name]
        stem = LORA_PREFIX + name.removesuffix(".weight")
        bound_a = 1.0 / math.sqrt(in_features)
        a = (torch.rand(rank, in_features, generator=g) * 2 - 1) * bound_a
        b = (torch.rand(out_features, rank, generator=g) * 2 - 1) * bound_b
        tensors[stem + ".lora_A.weight"] = a.to(torch.bfloat16)
        tensors[stem + ".lora_B.weight"] = b.to(torch.bfloat16)
    metadata = {"_generator": generator_tag(seed), "size": size, "rank": str(rank)}
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_output(out, overwrite=True, field="--out") as tmp:  # a foreign file was refused above
        save_file(tensors, str(tmp), metadata=metadata)
    return out
