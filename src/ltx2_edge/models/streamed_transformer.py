"""The transformer with K blocks resident and the rest streamed through slots (``memory.streamer``).

Built from the plan's numbers, never re-deciding them: the first ``resident`` blocks and everything outside the
blocks load onto the device (8-bit per the policy); the streamed blocks wait in pinned host memory (each one
materialised on the device once, quantized there, packed, and dropped, so the host buffer is their only full
copy) or in the checkpoint file itself, read by offset at every use. Reading from the file streams the file's
bytes, so an 8-bit run needs a checkpoint already quantized with the same policy (``ltx2-edge quantize``).
"""

from __future__ import annotations

import copy
import gc
from pathlib import Path

import torch

from ltx2_edge.checkpoint.header import read_config, read_header
from ltx2_edge.errors import RequestError
from ltx2_edge.memory.layout import BlockLayout
from ltx2_edge.memory.sources import LTX2_BLOCK_TENSOR, FileSource, PinnedHostSource, WeightSource
from ltx2_edge.memory.streamer import BlockStreamer
from ltx2_edge.models.loaders import TRANSFORMER_PREFIX, build_transformer_meta, transformer_key_map
from ltx2_edge.models.quantized_loading import load_quantized
from ltx2_edge.models.weights import load_into, require_materialized
from ltx2_edge.quant.apply import quantize_model_
from ltx2_edge.quant.policy import QuantPolicy

_EIGHT_BIT = ("F8_E4M3", "I8")


class _BlockPolicy:
    """The policy as ``quantize_model_`` sees it from inside block ``i`` (patterns name whole-model modules)."""

    def __init__(self, policy: QuantPolicy, i: int) -> None:
        self.precision, self._policy, self._prefix = policy.precision, policy, f"transformer_blocks.{i}."

    def keep_reason(self, name: str) -> str | None:
        return self._policy.keep_reason(self._prefix + name)


def _block_key_map(i: int):  # noqa: ANN202  (a KeyMap)
    prefix = f"{TRANSFORMER_PREFIX}transformer_blocks.{i}."
    return lambda name: name[len(prefix) :] if name.startswith(prefix) else None


_DTYPE_NAMES = {torch.bfloat16: "BF16", torch.float16: "F16", torch.float32: "F32"}


def _check_file_tier(checkpoint: Path, policy: QuantPolicy, dtype: torch.dtype) -> None:
    header = read_header(checkpoint)
    blocks = header.with_prefix(f"{TRANSFORMER_PREFIX}transformer_blocks.")
    stored = {t.dtype for t in blocks.values() if t.dtype not in _EIGHT_BIT and not t.name.endswith("_scale")}
    if stored != {_DTYPE_NAMES.get(dtype)}:
        # Streaming from the file moves the file's bytes as they are: the run computes in the stored dtype.
        raise RequestError("dtype", str(dtype).removeprefix("torch."), f"the checkpoint's own {sorted(stored)} "
                           "when blocks stream from the file")  # fmt: skip
    quantized = any(t.dtype in _EIGHT_BIT for t in header.with_prefix(TRANSFORMER_PREFIX).values())
    if policy.precision != "bf16" and not quantized:
        raise RequestError(
            "checkpoint_path", str(checkpoint),
            f"a checkpoint pre-quantized to {policy.precision} when blocks stream from the file (unified memory or "
            f"a small --host-budget): run `ltx2-edge quantize --checkpoint-path {checkpoint} --to {policy.precision} "
            "--out Q.safetensors` once and pass Q.safetensors, or use --quantization bf16",
        )  # fmt: skip
    if policy.precision == "bf16" and quantized:
        raise RequestError("quantization", "bf16", "fp8 or int8 for this pre-quantized checkpoint")


def load_streamed_transformer(
    checkpoint: Path,
    device: torch.device,
    dtype: torch.dtype,
    policy: QuantPolicy,
    resident_blocks: int,
    tier: str,
    prefetch: int,
) -> tuple[torch.nn.Module, BlockStreamer]:
    """``(X0Model, streamer)``: blocks ``0..resident_blocks-1`` resident, the rest streamed from ``tier``."""
    if tier not in ("pinned", "file"):
        raise ValueError(f"tier={tier!r}: pinned or file")
    if tier == "file":
        _check_file_tier(checkpoint, policy, dtype)
    x0 = build_transformer_meta(read_config(checkpoint))
    model = x0.velocity_model
    n = len(model.transformer_blocks)
    streamed = [i for i in range(resident_blocks, n)]
    streamed_prefixes = tuple(f"transformer_blocks.{i}." for i in streamed)
    templates = {i: copy.deepcopy(model.transformer_blocks[i]) for i in streamed} if tier == "pinned" else {}
    # Streamed blocks become meta shells in the run's dtypes (8-bit Linears where the policy says): their
    # layout is what the slots hold.
    for i in streamed:
        block = model.transformer_blocks[i].to(dtype)
        if policy.precision != "bf16":
            quantize_model_(block, _BlockPolicy(policy, i))  # type: ignore[arg-type]
    key_map = transformer_key_map()

    def skip(name: str) -> bool:
        return name.startswith(streamed_prefixes)

    report = None
    if policy.precision == "bf16":
        load_into(model, [checkpoint], lambda f: None if (t := key_map(f)) is None or skip(t) else t, device, dtype,
                  filled_elsewhere=skip)  # fmt: skip
    else:
        report = load_quantized(model, [checkpoint], key_map, device, dtype, policy, skip=skip)
    source: WeightSource
    if tier == "pinned":
        source = PinnedHostSource({i: BlockLayout.from_module(model.transformer_blocks[i]) for i in streamed})
        for i in streamed:
            block = templates.pop(i)
            if policy.precision == "bf16":
                load_into(block, [checkpoint], _block_key_map(i), device, dtype)
            else:
                load_quantized(block, [checkpoint], _block_key_map(i), device, dtype, policy,
                               policy_name=lambda name, i=i: f"transformer_blocks.{i}.{name}")  # fmt: skip
            source.pack(i, block)
            del block
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()
    else:
        source = FileSource([checkpoint], streamed, template=LTX2_BLOCK_TENSOR)
    streamer = BlockStreamer(model.transformer_blocks, source, range(resident_blocks), device=device, prefetch=prefetch)
    for i in range(resident_blocks):
        require_materialized(model.transformer_blocks[i], f"resident block {i}")
    x0.quant_report = report
    return x0.eval(), streamer
