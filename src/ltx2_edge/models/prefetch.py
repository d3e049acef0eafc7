"""Which weights to warm into the page cache while another stage runs, from the plan: the hook the engine calls.

Two warm-ups, each a ``streaming.readahead.Readahead`` on its own thread:
* ``warm_transformer`` during the text stage: the transformer blocks the denoise stage loads first, in the order it
  reads them, as many as the machine's free memory allows beside the Gemma pages the text stage is reading;
* ``warm_decoders`` during the last denoising steps: the video and audio decoders and the vocoder.
Both read the file the plan says the stage reads (``EngineSetup.checkpoint``: a pre-quantized copy when there is
one). The page cache is outside every budget, so what bounds a warm-up is the OS's free memory less the bytes the
running stage still brings in (``readahead.host_allowance``), never the device budget. On a warm page cache they
return at once. ``finish`` stops one and gives the report's line.

This module decides how much to warm and starts it; it never loads a weight nor waits for a warm-up to finish.
"""

from __future__ import annotations

import psutil

from ltx2_edge.checkpoint.header import Header
from ltx2_edge.checkpoint.names import AUDIO_DECODER, TRANSFORMER_BLOCKS, VIDEO_DECODER
from ltx2_edge.plan.plan_types import Plan
from ltx2_edge.streaming.readahead import Readahead, block_ranges, host_allowance, prefix_ranges


def _available(available_bytes: int | None) -> int:
    return psutil.virtual_memory().available if available_bytes is None else available_bytes


def warm_transformer(plan: Plan, checkpoint: Header, available_bytes: int | None = None) -> Readahead | None:
    """Start warming the first transformer blocks of ``checkpoint`` for ``plan``'s denoise stage (None when nothing
    fits beside the text stage's own reads). ``available_bytes``: the OS's free memory (default: asked now)."""
    text = sum(s.file_read_bytes for s in plan.stages if s.name in ("text_encode", "embeddings"))
    room = host_allowance(_available(available_bytes)) - text
    ranges = block_ranges(checkpoint, TRANSFORMER_BLOCKS, max(0, room))
    return Readahead(ranges).start() if ranges else None


def warm_decoders(checkpoint: Header, available_bytes: int | None = None) -> Readahead | None:
    """Start warming the decoders' tensors of ``checkpoint`` (None when the free memory does not hold them)."""
    ranges = prefix_ranges(checkpoint, (*VIDEO_DECODER, *AUDIO_DECODER))
    if sum(r.nbytes for r in ranges) > host_allowance(_available(available_bytes)):
        return None
    return Readahead(ranges).start() if ranges else None


def finish(ahead: Readahead | None) -> dict | None:
    """Stop ``ahead`` (what it has not warmed, the stage's loader reads) and return its stats for the report."""
    if ahead is None:
        return None
    ahead.cancel()
    return ahead.join().to_dict()
