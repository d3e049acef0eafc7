"""A mini LTX-2 transformer for calibrate: ltx-core's own classes at the checkpoint's width with 2 or 4 blocks,
loaded through the run's 8-bit loader (``models.quantized_loading``) and quantized with the run's policy.

Its weights come from ``--checkpoint-path`` (its non-block tensors and first blocks; the rest of the file is never
read) or, without one (or when it has fewer blocks than the mini model), from a scratch file of random weights in
the official format (``synth``) that is removed after. Everything the loads read is read once before they are
timed (``warm``), so the loads measure the page cache, as a run after the first does. This module builds, loads and
times; it decides nothing about a run.
"""

from __future__ import annotations

import copy
import json
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from ltx_core.model.transformer import LTXModelConfigurator, X0Model

from ltx2_edge.checkpoint.header import TensorInfo, read_header
from ltx2_edge.checkpoint.layout import expected_tensors
from ltx2_edge.checkpoint.names import CONNECTORS, TRANSFORMER_BLOCKS, TRANSFORMER_PREFIX
from ltx2_edge.models.loaders import transformer_key_map
from ltx2_edge.models.quantized_loading import load_quantized
from ltx2_edge.models.weights import load_into, require_materialized
from ltx2_edge.quant.policy import QuantPolicy

_CHUNK = 64 << 20


def mini_config(config: dict, layers: int) -> dict:
    """``config`` with ``layers`` transformer blocks (everything else, the width included, unchanged)."""
    out = copy.deepcopy(config)
    out["transformer"]["num_layers"] = layers
    return out


def block_index(name: str) -> int | None:
    """The block a file tensor belongs to (``...transformer_blocks.7.attn1...`` -> 7), None outside the blocks."""
    if not name.startswith(TRANSFORMER_BLOCKS):
        return None
    return int(name[len(TRANSFORMER_BLOCKS) :].split(".", 1)[0])


def transformer_tensors(path: Path, layers: int) -> list[TensorInfo]:
    """The file tensors a ``layers``-block transformer loads: every non-connector transformer tensor outside the
    blocks, and blocks ``0..layers-1``."""
    out = []
    for name, info in read_header(path).tensors.items():
        if not name.startswith(TRANSFORMER_PREFIX) or name.startswith(CONNECTORS):
            continue
        index = block_index(name)
        if index is None or index < layers:
            out.append(info)
    return out


def warm(path: Path, infos: list[TensorInfo]) -> int:
    """Read the bytes of ``infos`` once (into the page cache); returns the bytes read."""
    spans = sorted((i.begin, i.end) for i in infos)
    merged: list[list[int]] = []
    for lo, hi in spans:
        if merged and lo <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], hi)
        else:
            merged.append([lo, hi])
    buffer = bytearray(_CHUNK)
    view = memoryview(buffer)
    total = 0
    fd = os.open(path, os.O_RDONLY)
    try:
        for lo, hi in merged:
            while lo < hi:
                got = os.preadv(fd, [view[: min(_CHUNK, hi - lo)]], lo)
                if got <= 0:
                    break
                lo, total = lo + got, total + got
    finally:
        os.close(fd)
    return total


def uses_checkpoint(checkpoint: Path, layers: int) -> bool:
    """Whether ``checkpoint`` has the ``layers`` first blocks a mini transformer loads (``source_file``'s choice)."""
    blocks = {block_index(n) for n in read_header(checkpoint).tensors}
    return all(i in blocks for i in range(layers))


@contextmanager
def source_file(checkpoint: Path | None, config: dict, layers: int, folder: Path, device: torch.device,
                ) -> Iterator[Path]:  # fmt: skip
    """The file mini transformers load from: ``checkpoint`` when it holds ``layers`` blocks, else (no checkpoint, or
    one with fewer blocks, such as the 2-block tiny model) a scratch file of ``layers`` blocks of random BF16
    weights at ``config``'s width (the official names and layout, ``synth``), written in ``folder`` and removed on
    exit. ``uses_checkpoint`` tells which."""
    if checkpoint is not None and uses_checkpoint(checkpoint, layers):
        yield checkpoint
        return
    from ltx2_edge.synth.safetensors_writer import write_safetensors

    small = mini_config(config, layers)
    layout = {n: v for n, v in expected_tensors(small).items()
              if n.startswith(TRANSFORMER_PREFIX) and not n.startswith(CONNECTORS)}  # fmt: skip
    folder.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=".calibrate-model-", suffix=".safetensors", dir=folder)
    os.close(fd)
    path = Path(name)
    try:
        write_safetensors(path, layout, {"config": json.dumps(small)}, seed=0, device=device)
        yield path
    finally:
        path.unlink(missing_ok=True)


def _key_map(layers: int) -> Callable[[str], str | None]:
    base = transformer_key_map()

    def key_map(name: str) -> str | None:
        index = block_index(name)
        return None if index is not None and index >= layers else base(name)

    return key_map


def build_meta(config: dict, layers: int) -> torch.nn.Module:
    """ltx-core's ``LTXModel`` with ``layers`` blocks on ``meta`` (``models.loaders``' way)."""
    with torch.device("meta"):
        return LTXModelConfigurator.from_config(mini_config(config, layers))


def load_mini(path: Path, config: dict, layers: int, device: torch.device, dtype: torch.dtype, policy: QuantPolicy,
              ) -> tuple[X0Model, float]:  # fmt: skip
    """A ``layers``-block transformer loaded from ``path`` as ``models.loaders.load_transformer`` loads the whole one
    (meta build, 8-bit Linears quantized on the device as read), and the seconds it took (device synchronised)."""
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    sync()
    start = time.perf_counter()
    model = build_meta(config, layers)
    if policy.precision == "bf16":
        load_into(model, [path], _key_map(layers), device, dtype)
    else:
        load_quantized(model, [path], _key_map(layers), device, dtype, policy)
    require_materialized(model, "calibration transformer")
    sync()
    return X0Model(model).eval(), time.perf_counter() - start
