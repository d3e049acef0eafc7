"""Loads a model whose repeated blocks stream: K resident, the rest, spread between them
(``plan.block_placement``), through ``streaming.streamer``.

Shared by the transformer (48 ``transformer_blocks``) and Gemma (48 ``layers``). Built from the plan's numbers,
never re-deciding them. Everything outside the streamed blocks loads onto the device (8-bit per the policy);
the streamed blocks wait in pinned host memory (each materialised on the device once, quantized there, packed
and dropped, so the host buffer is their only full copy) or in the checkpoint files themselves, read by offset
at every use. On an integrated GPU (one DRAM pool) only the files: a pinned copy there is refused. Reading from
the files streams their bytes as stored, so an 8-bit run needs files quantized with the same policy
(``ltx2-edge quantize``) and the run's dtype must be the files' dtype.
"""

from __future__ import annotations

import copy
import gc
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import torch

from ltx2_edge.checkpoint.header import read_header
from ltx2_edge.errors import RequestError
from ltx2_edge.models.quantized_loading import load_quantized
from ltx2_edge.models.weights import KeyMap, WeightTransform, load_into, meta_tensors
from ltx2_edge.plan.block_placement import resident_positions, streamed_positions
from ltx2_edge.quant.apply import QuantReport, quantize_model_
from ltx2_edge.quant.policy import QuantPolicy
from ltx2_edge.streaming.layout import BlockLayout
from ltx2_edge.streaming.sources import FileSource, PinnedHostSource, WeightSource
from ltx2_edge.streaming.streamer import BlockStreamer
from ltx2_edge.streaming.tensor_reader import TensorReader

_EIGHT_BIT = ("F8_E4M3", "I8")
_DTYPE_NAMES = {torch.bfloat16: "BF16", torch.float16: "F16", torch.float32: "F32"}


@dataclass(frozen=True)
class BlockNames:
    """How one model names its repeated blocks.

    ``module``: the ModuleList's name in the module (``"transformer_blocks"``); ``file``: the prefix of block
    ``i``'s tensors in the files, with ``{i}`` (``"model.diffusion_model.transformer_blocks.{i}."``);
    ``policy``: the prefix the quantization policy's patterns see before a module name (``""`` for the
    transformer, ``"language_model.model."`` for Gemma).
    """

    module: str
    file: str
    policy: str = ""


class _PrefixedPolicy:
    """The policy as ``quantize_model_`` sees it from inside one block (its patterns name whole-model modules)."""

    def __init__(self, policy: QuantPolicy, prefix: str) -> None:
        self.precision, self._policy, self._prefix = policy.precision, policy, prefix

    def keep_reason(self, name: str) -> str | None:
        return self._policy.keep_reason(self._prefix + name)


def _check_file_tier(sources: Sequence[Path], names: BlockNames, policy: QuantPolicy, dtype: torch.dtype) -> None:
    prefix = names.file.split("{i}")[0]
    infos = [t for p in sources for t in read_header(p).with_prefix(prefix).values()]
    quantized = any(t.dtype in _EIGHT_BIT for t in infos)
    stored = {t.dtype for t in infos if t.dtype not in _EIGHT_BIT and not t.name.endswith("_scale")}
    where = ", ".join(str(p) for p in sources[:1]) + (" ..." if len(sources) > 1 else "")
    if policy.precision != "bf16" and not quantized:
        raise RequestError(
            "checkpoint", where,
            f"files pre-quantized to {policy.precision} when blocks stream from the file (unified memory or a small "
            f"--host-budget): run `ltx2-edge quantize ... --to {policy.precision}` once and pass its output, or use "
            "--quantization bf16",
        )  # fmt: skip
    if policy.precision == "bf16" and quantized:
        raise RequestError("quantization", "bf16", "fp8 or int8 for these pre-quantized files")
    if stored != {_DTYPE_NAMES.get(dtype)}:
        # Streaming from the file moves the file's bytes as they are: the run computes in the stored dtype.
        raise RequestError("dtype", str(dtype).removeprefix("torch."),
                           f"the files' own {sorted(stored)} when blocks stream from the file")  # fmt: skip


def load_streamed(
    model: torch.nn.Module,
    names: BlockNames,
    sources: Sequence[Path],
    key_map: KeyMap,
    device: torch.device,
    dtype: torch.dtype,
    policy: QuantPolicy,
    resident: int,
    tier: str,
    prefetch: int,
    transform: WeightTransform | None = None,
    times: dict[str, float] | None = None,
) -> tuple[QuantReport | None, BlockStreamer]:
    """Fill the meta-built ``model`` with ``resident`` of its blocks resident and the rest streamed from ``tier``,
    spread evenly between the resident ones (``plan.block_placement.streamed_positions``).

    ``transform`` (``weights.load_into``'s, by whole-model names) sees every weight as read, the streamed blocks'
    too before they are packed; the file tier moves stored bytes at every use, so it refuses one. ``times``, when
    given, receives the load's parts in seconds (``resident_s``, and for the pinned tier ``buffer_wait_s``: waiting
    for the pinned buffer after the resident load, ``pack_s``: the streamed blocks loaded and packed), which
    calibrate measures the pinning by.
    """
    clock = time.perf_counter()

    def mark() -> float:  # the device synchronised only when the caller asked for the times
        return _synced(device) if times is not None else 0.0

    if tier not in ("pinned", "file"):
        raise ValueError(f"tier={tier!r}: pinned or file")
    if tier == "pinned" and is_integrated_device(device):
        # One pool (Jetson): a pinned host copy of the blocks would be a second copy in the same DRAM. The planner
        # never chooses it there (plan/stage_fit.py); refuse rather than double the weights' memory.
        raise ValueError(f"tier='pinned' on {device}, an integrated GPU: blocks stream from the file there")
    if tier == "file" and transform is not None:
        raise RequestError("lora", "with blocks streaming from the file",
                           "LoRAs baked into the file: `ltx2-edge quantize --lora PATH STRENGTH ...` once, then run "
                           "its output without --lora")  # fmt: skip
    if tier == "file":
        _check_file_tier(sources, names, policy, dtype)
    blocks: torch.nn.ModuleList = model.get_submodule(names.module)
    streamed = list(streamed_positions(len(blocks), resident))
    prefixes = tuple(f"{names.module}.{i}." for i in streamed)
    templates = {i: copy.deepcopy(blocks[i]) for i in streamed} if tier == "pinned" else {}
    # Streamed blocks become meta shells in the run's dtypes (8-bit Linears where the policy says): their
    # layout is what the slots hold.
    for i in streamed:
        blocks[i].to(dtype)
        if policy.precision != "bf16":
            quantize_model_(blocks[i], _PrefixedPolicy(policy, f"{names.policy}{names.module}.{i}."))  # type: ignore[arg-type]

    def skip(name: str) -> bool:
        return name.startswith(prefixes)

    source: WeightSource
    # One reader for the whole load (each new one pins its own staging buffers, and the streamed blocks load one by
    # one); the pinned buffer is allocated and faulted in while the resident weights load.
    with TensorReader(device) as reader, ThreadPoolExecutor(1, thread_name_prefix="ltx2-edge-pin") as pool:
        layouts = {i: BlockLayout.from_module(blocks[i]) for i in streamed} if tier == "pinned" else {}
        host = pool.submit(PinnedHostSource, layouts) if layouts else None
        report = None
        if policy.precision == "bf16":
            load_into(model, sources, lambda f: None if (t := key_map(f)) is None or skip(t) else t, device, dtype,
                      filled_elsewhere=skip, transform=transform, reader=reader)  # fmt: skip
        else:
            report = load_quantized(model, sources, key_map, device, dtype, policy, lambda n: names.policy + n, skip,
                                    transform, reader)  # fmt: skip
        marks = [mark()]
        if host is not None:
            source = host.result()
            marks.append(mark())
            _pack_blocks(source, templates, sources, names, device, dtype, policy, transform, reader)
            marks.append(mark())
        else:
            source = FileSource(list(sources), streamed, template=names.file + "{name}")
    streamer = BlockStreamer(
        blocks, source, resident_positions(len(blocks), resident), device=device, prefetch=prefetch
    )
    if times is not None:
        times["resident_s"] = marks[0] - clock
        if len(marks) == 3:
            times["buffer_wait_s"], times["pack_s"] = marks[1] - marks[0], marks[2] - marks[1]
    return report, streamer


def _synced(device: torch.device) -> float:
    """The clock once the device has done what was queued (load times are the device's as much as the host's)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


def _pack_blocks(source: PinnedHostSource, templates: dict[int, torch.nn.Module], sources: Sequence[Path],
                 names: BlockNames, device: torch.device, dtype: torch.dtype, policy: QuantPolicy,
                 transform: WeightTransform | None, reader: TensorReader) -> None:  # fmt: skip
    """Load each streamed block from its ``templates`` copy onto the device (8-bit where the policy says), pack it
    into ``source`` and drop it, so the host buffer ends as the blocks' only full copy."""
    for i in sorted(templates):
        block, file_prefix = templates.pop(i), names.file.format(i=i)

        def block_key(name: str, p: str = file_prefix) -> str | None:
            return name[len(p) :] if name.startswith(p) else None

        # The block loads under its own names; the transform answers to whole-model names.
        block_transform = None if transform is None else (
            lambda n, t, p=f"{names.module}.{i}.": transform(p + n, t))  # fmt: skip
        if policy.precision == "bf16":
            load_into(block, sources, block_key, device, dtype, transform=block_transform, reader=reader)
        else:
            load_quantized(block, sources, block_key, device, dtype, policy,
                           lambda n, i=i: f"{names.policy}{names.module}.{i}.{n}",
                           transform=block_transform, reader=reader)  # fmt: skip
        source.pack(i, block)
        del block
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def is_integrated_device(device: torch.device) -> bool:
    """True for an integrated GPU (Jetson: one DRAM pool for CPU and GPU)."""
    return device.type == "cuda" and bool(getattr(torch.cuda.get_device_properties(device), "is_integrated", False))


def require_loaded_except_streamed(model: torch.nn.Module, names: BlockNames, streamer: BlockStreamer) -> None:
    """Everything but the streamed blocks (which hold slot views only while they run) must be loaded."""
    prefixes = tuple(f"{names.module}.{i}." for i in streamer.streamed)
    left = [n for n in meta_tensors(model) if not n.startswith(prefixes)]
    if left:
        from ltx2_edge.errors import CheckpointError

        raise CheckpointError(
            f"{len(left)} tensors were never loaded (first: {left[0]!r}): checkpoint and model differ"
        )
