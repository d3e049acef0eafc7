"""LoRA adapters (``--lora PATH [STRENGTH]``: ``inputs.LoraSpec``) fused into the transformer's Linear weights.

For every Linear weight a LoRA names, ``W' = W + sum_i strength_i * (B_i @ A_i)``, computed in fp32 on the
weight's device right after ``W`` is read and before any quantization, then cast back to ``W``'s dtype (the
file's: BF16). The order of operations is ltx-core 1.0.0's ``apply_loras`` (``(B * strength) @ A`` per LoRA,
summed, then added to ``W``); ltx-core does it in BF16, we in fp32 with one final rounding, so the two agree
within BF16 rounding of the result, not bit for bit.

LoRA files are the official format: ``diffusion_model.<module>.lora_A.weight`` ``[rank, in]`` and
``.lora_B.weight`` ``[out, rank]``; like ltx-pipelines (``LTXV_LORA_COMFY_RENAMING_MAP``) every
``diffusion_model.`` is dropped from the name. Everything is checked from headers before any weight is read.
Unlike ltx-core, which skips LoRA tensors that match nothing, a tensor that maps onto no transformer Linear is
refused: a LoRA that silently did nothing would be worse than an error.

This module never keeps more than one layer's A/B factors and an fp32 work chunk of ``_CHUNK_BYTES`` beside the
weight, never edits a tensor in place (the weight may view a memory-mapped file) and never fuses into 8-bit
weights (that would requantize them: bake LoRAs into an 8-bit file with ``ltx2-edge quantize --lora``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass

import torch
from safetensors import safe_open

from ltx2_edge.checkpoint.header import Header, read_header
from ltx2_edge.checkpoint.names import LORA_PREFIX
from ltx2_edge.errors import CheckpointError, RequestError
from ltx2_edge.inputs import LoraSpec
from ltx2_edge.models.loaders import build_transformer_meta

BAKED_METADATA_KEY = "ltx2_edge_loras"  # what `quantize --lora` fused into a file (JSON list of describe())
_A, _B = ".lora_A.weight", ".lora_B.weight"
_FLOAT_DTYPES = ("F32", "F16", "BF16")
_CHUNK_BYTES = 32 << 20  # fp32 rows fused at once: bounds the transient for a 16384x4096 FF weight to 2 x 32 MiB


@dataclass(frozen=True)
class LoraFile:
    """A checked LoRA file: ``layers`` maps each model weight name to its (A, B) tensor names in the file."""

    spec: LoraSpec
    header: Header
    layers: Mapping[str, tuple[str, str]]
    ranks: tuple[int, ...]  # the distinct ranks of its layers, ascending

    def describe(self) -> dict[str, object]:
        """What the report and a quantized file's metadata record."""
        return {**self.spec.describe(), "layers": len(self.layers), "rank": "/".join(map(str, self.ranks))}


def linear_weight_shapes(model: torch.nn.Module) -> dict[str, tuple[int, int]]:
    """``{"<module>.weight": (out, in)}`` for every Linear of ``model`` (a meta-built ``LTXModel`` will do)."""
    return {f"{n}.weight": tuple(m.weight.shape) for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)}


def inspect_lora(spec: LoraSpec, targets: Mapping[str, tuple[int, int]]) -> LoraFile:
    """Check ``spec``'s file against the model's Linear weights ``targets`` (headers only).

    ``RequestError`` for a missing file; ``CheckpointError`` naming the file and the first bad tensor for one
    that is not safetensors, has a tensor that is not a LoRA factor or maps onto no Linear, lacks a factor's
    partner, or whose shapes disagree with the Linear's ``[out, in]`` or with each other's rank.
    """
    path = spec.path
    if not path.is_file():
        raise RequestError("lora", str(path), "an existing LoRA .safetensors file (--lora PATH [STRENGTH])")
    header = read_header(path)  # refuses pickles and other non-safetensors files in one line
    where = f"LoRA {path}"
    factors: dict[str, dict[str, str]] = {}
    for name, info in header.tensors.items():
        stem = name.replace(LORA_PREFIX, "")
        kind = "A" if stem.endswith(_A) else "B" if stem.endswith(_B) else None
        if kind is None:
            raise CheckpointError(f"{where}: tensor {name!r} is not a LoRA factor (*.lora_A.weight / *.lora_B.weight)")
        weight = stem[: -len(_A)] + ".weight"
        if weight not in targets:
            raise CheckpointError(f"{where}: tensor {name!r} targets {weight!r}, which is not a Linear of this "
                                  "transformer (a LoRA for another model?)")  # fmt: skip
        if info.dtype not in _FLOAT_DTYPES or len(info.shape) != 2:
            raise CheckpointError(f"{where}: tensor {name!r} is {info.dtype}{list(info.shape)}; expected a 2-D "
                                  "F32/F16/BF16 factor")  # fmt: skip
        factors.setdefault(weight, {})[kind] = name
    if not factors:
        raise CheckpointError(f"{where} holds no LoRA factors: is it a LoRA file?")
    layers: dict[str, tuple[str, str]] = {}
    ranks: set[int] = set()
    for weight, pair in sorted(factors.items()):
        if len(pair) != 2:
            have = next(iter(pair.values()))
            raise CheckpointError(f"{where}: tensor {have!r} has no lora_{'B' if 'A' in pair else 'A'} partner")
        a, b = header.tensors[pair["A"]], header.tensors[pair["B"]]
        out_features, in_features = targets[weight]
        rank = a.shape[0]
        if a.shape[1] != in_features or b.shape[0] != out_features:
            raise CheckpointError(f"{where}: {pair['A']!r} {list(a.shape)} / {pair['B']!r} {list(b.shape)} do not fit "
                                  f"{weight!r} [{out_features}, {in_features}]: expected [rank, {in_features}] / "
                                  f"[{out_features}, rank] (a LoRA for another model size?)")  # fmt: skip
        if b.shape[1] != rank:
            raise CheckpointError(f"{where}: {pair['B']!r} has rank {b.shape[1]} but {pair['A']!r} has rank {rank}: "
                                  "the file is inconsistent")  # fmt: skip
        layers[weight] = (pair["A"], pair["B"])
        ranks.add(rank)
    return LoraFile(spec, header, layers, tuple(sorted(ranks)))


class LoraFuser:
    """``fuser(name, weight)``: the weight with every LoRA that names it fused in; other tensors unchanged.

    ``prefix`` is put before the model names the fuser answers to (``""`` for ``LTXModel`` state-dict names as
    the loaders see them, ``"model.diffusion_model."`` for checkpoint names as ``quantize`` sees them). LoRAs of
    strength 0 are dropped (their delta is exactly zero). Keeps one read handle per LoRA file open until
    ``close()``; use it as a context manager.
    """

    def __init__(self, files: Sequence[LoraFile], prefix: str = "") -> None:
        self.files = tuple(files)
        self._layers: dict[str, list[tuple[int, str, str]]] = {}
        for i, lora in enumerate(self.files):
            if lora.spec.strength == 0.0:
                continue
            for weight, (a, b) in lora.layers.items():
                self._layers.setdefault(prefix + weight, []).append((i, a, b))
        self.targets = frozenset(self._layers)
        self._stack = ExitStack()
        self._handles: dict[int, object] = {}

    def __enter__(self) -> LoraFuser:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the LoRA files."""
        self._stack.close()
        self._handles.clear()

    def _factor(self, i: int, name: str, device: torch.device) -> torch.Tensor:
        if i not in self._handles:
            path = str(self.files[i].spec.path)
            self._handles[i] = self._stack.enter_context(safe_open(path, framework="pt", device="cpu"))
        return self._handles[i].get_tensor(name).to(device=device, dtype=torch.float32)  # type: ignore[attr-defined]

    def __call__(self, name: str, weight: torch.Tensor) -> torch.Tensor:
        parts = self._layers.get(name)
        if parts is None:
            return weight
        if weight.dtype not in (torch.bfloat16, torch.float16, torch.float32):
            raise CheckpointError(f"{name} is {str(weight.dtype).removeprefix('torch.')} in the checkpoint: LoRAs fuse "
                                  "into BF16 weights only; bake them in with `ltx2-edge quantize --lora` from the BF16 "
                                  "original")  # fmt: skip
        # (B * strength) per LoRA as ltx-core scales it; A and B are small ([rank, in], [out, rank]).
        factors = [(self._factor(i, b, weight.device) * self.files[i].spec.strength, self._factor(i, a, weight.device))
                   for i, a, b in parts]  # fmt: skip
        out = torch.empty_like(weight)
        rows = max(1, _CHUNK_BYTES // (4 * weight.shape[1]))
        for start in range(0, weight.shape[0], rows):
            end = min(start + rows, weight.shape[0])
            delta = factors[0][0][start:end] @ factors[0][1]
            for b, a in factors[1:]:
                delta += b[start:end] @ a
            delta += weight[start:end].float()
            out[start:end] = delta.to(weight.dtype)
        return out


def check_fusable(header: Header, fuser: LoraFuser, prefix: str = "") -> None:
    """``RequestError`` if a weight ``fuser`` targets is stored in 8 bits in ``header``'s file (a pre-quantized
    checkpoint): such weights cannot take a LoRA at load. ``prefix`` turns the fuser's names into file names."""
    for lora in fuser.files:
        for name in sorted(lora.layers):
            info = header.tensors.get(prefix + name)
            if lora.spec.strength != 0.0 and info is not None and info.dtype not in _FLOAT_DTYPES:
                raise RequestError("lora", str(lora.spec.path),
                                   f"a BF16 checkpoint to fuse into: {header.path.name} holds {info.name} in "
                                   f"{info.dtype}; bake LoRAs into 8-bit files with `ltx2-edge quantize "
                                   "--checkpoint-path BF16_FILE --lora PATH STRENGTH ...`")  # fmt: skip


def inspect_transformer_loras(specs: Sequence[LoraSpec], config: Mapping) -> tuple[LoraFile, ...]:
    """Check every ``spec`` against the transformer the checkpoint ``config`` describes (built on ``meta``)."""
    if not specs:
        return ()  # building even a meta transformer takes a while at full size
    targets = linear_weight_shapes(build_transformer_meta(dict(config)).velocity_model)
    return tuple(inspect_lora(spec, targets) for spec in specs)


def baked_loras(header: Header) -> list[dict]:
    """The LoRAs ``ltx2-edge quantize --lora`` fused into ``header``'s file (``[]`` for any other file)."""
    raw = header.metadata.get(BAKED_METADATA_KEY)
    if raw is None:
        return []
    try:
        baked = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{header.path}: metadata {BAKED_METADATA_KEY} is not JSON ({exc})") from exc
    if not isinstance(baked, list):
        raise CheckpointError(f"{header.path}: metadata {BAKED_METADATA_KEY} is not a list")
    return baked
