"""Loads a module's weights from safetensors files onto a module built on the ``meta`` device.

The habit is gpt-fast's: build the module on ``meta`` (no memory, no random init), then assign each tensor
read from the file in place of its meta placeholder (``load_state_dict(assign=True)`` semantics). Tensors are
read in file order through ``streaming.tensor_reader`` (pinned staging, reads in flight) onto the target device and
cast there one at a time, so no whole state dict ever exists twice, and tensors the key map drops (a vision
tower, other models in the same file) are never read at all.

Strict by design: every tensor the key map keeps must match a parameter or persistent buffer of the module
(same shape), every one of those must be provided exactly once, and all of this is checked from the files'
headers before a single byte of weights is read. This module never guesses a name, never skips a mismatch and
never initialises a weight it did not find.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import torch

from ltx2_edge.checkpoint.header import TensorInfo, read_header
from ltx2_edge.errors import CheckpointError
from ltx2_edge.streaming.tensor_reader import TensorReader

KeyMap = Callable[[str], str | None]
"""File tensor name -> module state-dict name, or None to leave the tensor unread."""
WeightTransform = Callable[[str, torch.Tensor], torch.Tensor]
"""(module state-dict name, tensor as read in the file's dtype) -> the tensor to use instead (a LoRA fused in)."""


def load_into(
    module: torch.nn.Module,
    sources: Sequence[Path],
    key_map: KeyMap,
    device: torch.device | str,
    dtype: torch.dtype,
    keep_dtype: Callable[[str], bool] | None = None,
    filled_elsewhere: Callable[[str], bool] | None = None,
    transform: WeightTransform | None = None,
    reader: TensorReader | None = None,
) -> torch.nn.Module:
    """Assign ``module``'s parameters and persistent buffers from the safetensors files ``sources``.

    ``filled_elsewhere(module_name)`` marks entries another loader fills (8-bit layers built from their own
    tensors): they are neither required nor accepted here. ``transform(module_name, tensor)``, when given, sees
    each tensor as read, in the file's dtype and before the cast (``models.lora.LoraFuser`` fuses LoRAs there).

    ``key_map`` names, for each tensor in the files, the module entry it fills (None: not this module's, never
    read). Floating-point tensors are cast to ``dtype`` unless ``keep_dtype(module_name)`` says to keep the
    file's dtype (FP8 weights, FP32 scales); integer tensors always keep theirs. Parameters come back with
    ``requires_grad=False``: this is an inference loader. Non-persistent buffers (rotary tables, say) are not in
    files: the caller sets them and may check with ``meta_tensors``.

    Raises ``CheckpointError`` naming the first missing, unexpected, duplicated or misshapen tensor before any
    weight is read. Returns ``module``. ``reader``: an open ``TensorReader`` on ``device`` to read through (a loader
    of many small modules shares one: each new reader pins its own staging buffers); by default one of its own.
    """
    targets = _targets(module)
    if filled_elsewhere is not None:
        targets = {name: shape for name, shape in targets.items() if not filled_elsewhere(name)}
    plan = _plan(sources, key_map, targets)
    with reading(device, reader) as r:
        tensors = r.read([(path, info) for path, info, _ in plan])
        for (_, _, name), tensor in zip(plan, tensors, strict=True):
            if transform is not None:
                tensor = transform(name, tensor)
            if tensor.is_floating_point() and not (keep_dtype is not None and keep_dtype(name)):
                tensor = tensor.to(dtype=dtype)
            _assign(module, name, tensor)
    return module


@contextlib.contextmanager
def reading(device: torch.device | str, reader: TensorReader | None) -> Iterator[TensorReader]:
    """The caller's open reader (left open), or a new one closed on exit."""
    if reader is not None:
        yield reader
        return
    with TensorReader(device) as own:
        yield own


def meta_tensors(module: torch.nn.Module) -> list[str]:
    """Names of ``module``'s parameters and buffers (persistent or not) still on the ``meta`` device."""
    named = [*module.named_parameters(), *module.named_buffers()]
    return [name for name, t in named if t.is_meta]


def require_materialized(module: torch.nn.Module, what: str) -> None:
    """Raise ``CheckpointError`` if any of ``module``'s tensors is still on ``meta`` (a loader bug or a bad map)."""
    left = meta_tensors(module)
    if left:
        raise CheckpointError(
            f"{what}: {len(left)} tensors were never loaded (first: {left[0]!r}); the checkpoint does not match "
            "this model layout"
        )


def _targets(module: torch.nn.Module) -> dict[str, torch.Size]:
    # state_dict(keep_vars=True) lists exactly what a file can fill: parameters and persistent buffers.
    return {name: t.shape for name, t in module.state_dict(keep_vars=True).items()}


def _plan(
    sources: Sequence[Path], key_map: KeyMap, targets: dict[str, torch.Size]
) -> list[tuple[Path, TensorInfo, str]]:
    """The (file, tensor, module name) triples to read, file by file in file order; validated against the module
    from headers only."""
    if not sources:
        raise CheckpointError("no safetensors files given to load from: pass the checkpoint's .safetensors paths")
    plan: list[tuple[Path, TensorInfo, str]] = []
    seen: dict[str, tuple[Path, str]] = {}
    for path in map(Path, sources):
        if not path.is_file():
            raise CheckpointError(f"weights file {path} does not exist: check the checkpoint path")
        for file_name, info in read_header(path).tensors.items():
            name = key_map(file_name)
            if name is None:
                continue
            if name not in targets:
                raise CheckpointError(
                    f"{path.name}: tensor {file_name!r} maps to {name!r}, which the model does not have "
                    "(unexpected key: wrong checkpoint for this model?)"
                )
            if name in seen:
                other_path, other_name = seen[name]
                raise CheckpointError(
                    f"{name!r} is provided twice: {other_path.name}:{other_name!r} and {path.name}:{file_name!r}"
                )
            if torch.Size(info.shape) != targets[name]:
                raise CheckpointError(
                    f"{path.name}: tensor {file_name!r} has shape {list(info.shape)} but the model's {name!r} "
                    f"is {list(targets[name])} (checkpoint and config disagree)"
                )
            seen[name] = (path, file_name)
            plan.append((path, info, name))
    missing = [name for name in targets if name not in seen]
    if missing:
        raise CheckpointError(
            f"{len(missing)} model tensors are missing from {', '.join(p.name for p in map(Path, sources))} "
            f"(first: {missing[0]!r}); the checkpoint is incomplete or for another model"
        )
    return plan


def _assign(module: torch.nn.Module, name: str, tensor: torch.Tensor) -> None:
    owner_name, _, attr = name.rpartition(".")
    owner = module.get_submodule(owner_name) if owner_name else module
    if attr in owner._parameters:
        owner._parameters[attr] = torch.nn.Parameter(tensor, requires_grad=False)
    else:
        owner._buffers[attr] = tensor
