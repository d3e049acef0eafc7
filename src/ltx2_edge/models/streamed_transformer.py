"""The transformer with K blocks resident and the rest streamed (see ``streamed_blocks`` for how)."""

from __future__ import annotations

from pathlib import Path

import torch

from ltx2_edge.checkpoint.header import read_config
from ltx2_edge.checkpoint.names import TRANSFORMER_BLOCKS as TRANSFORMER_BLOCKS_PREFIX
from ltx2_edge.models.loaders import build_transformer_meta, transformer_key_map
from ltx2_edge.models.streamed_blocks import BlockNames, load_streamed, require_loaded_except_streamed
from ltx2_edge.models.weights import WeightTransform
from ltx2_edge.quant.policy import QuantPolicy
from ltx2_edge.streaming.streamer import BlockStreamer

TRANSFORMER_BLOCKS = BlockNames("transformer_blocks", TRANSFORMER_BLOCKS_PREFIX + "{i}.")


def load_streamed_transformer(
    checkpoint: Path,
    device: torch.device,
    dtype: torch.dtype,
    policy: QuantPolicy,
    resident_blocks: int,
    tier: str,
    prefetch: int,
    transform: WeightTransform | None = None,
) -> tuple[torch.nn.Module, BlockStreamer]:
    """``(X0Model, streamer)``: ``resident_blocks`` blocks resident, the rest spread between them and streamed from
    ``tier``; ``transform`` as ``loaders.load_transformer``'s (the file tier refuses it)."""
    x0 = build_transformer_meta(read_config(checkpoint))
    model = x0.velocity_model
    report, streamer = load_streamed(model, TRANSFORMER_BLOCKS, [checkpoint], transformer_key_map(), device, dtype,
                                     policy, resident_blocks, tier, prefetch, transform)  # fmt: skip
    require_loaded_except_streamed(model, TRANSFORMER_BLOCKS, streamer)
    x0.quant_report = report
    return x0.eval(), streamer
