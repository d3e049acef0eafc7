"""``--compile auto|off|on``: whether to compile the transformer's repeated block, and doing it.

Regional compilation: only ``BasicAVTransformerBlock.forward`` is compiled. All 48 blocks share its code, so it
compiles once (36 s cold, 9 s from a warm cache, measured on the H100 box) and Inductor fuses the
elementwise work between the matmuls: AdaLN modulation, RMS norms, RoPE, gating and, for 8-bit weights, the
per-token activation quantization (``QuantLinear.prepare_compiled``). The forward method is compiled, not the
module call, so the block streamer's hooks stay eager: copies and event waits are never traced.

Whether this machine can compile (``compile_support``): no CUDA device (the CPU backend works — the tests use
it — but a CPU run is never long enough to pay for it); Triton missing; on Jetson Thor (sm_110) a Triton whose
ptxas predates CUDA 13. Whether a run should (``--compile auto``'s cost against the clips ahead) is decided in
``accel.compile_choice``, which imports no torch.

The Inductor cache lives in ``cache_dir()`` (``~/.cache/ltx2-edge/inductor`` unless TORCHINDUCTOR_CACHE_DIR is
set), so a second run reuses the compiled kernels. This module never changes numerics beyond the compiled
kernels' own rounding (checked by tests against eager).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import torch
from ltx_core.guidance.perturbations import BatchedPerturbationConfig, PerturbationType
from ltx_core.model.transformer import attention as attention_module
from ltx_core.model.transformer.attention import AttentionFunction
from torch import nn

from ltx2_edge.accel.compile_choice import cache_dir

THOR_COMPUTE_CAPABILITY = (11, 0)


def _ptxas_major() -> int | None:
    path = os.environ.get("TRITON_PTXAS_PATH")
    if not path:
        try:
            import triton.backends.nvidia as nv  # noqa: PLC0415  (only where Triton is installed)

            bundled = Path(nv.__file__).parent / "bin" / "ptxas"
            path = str(bundled) if bundled.exists() else shutil.which("ptxas")
        except ImportError:
            path = shutil.which("ptxas")
    if not path:
        return None
    try:
        out = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    found = re.search(r"release (\d+)\.", out)
    return int(found.group(1)) if found else None


def compile_support(device: torch.device) -> str | None:
    """None when this machine can compile the block for ``device``; else the reason, with what to do."""
    if device.type != "cuda":
        return f"compiling pays off on CUDA devices only (this run is on {device.type})"
    try:
        import triton  # noqa: F401, PLC0415
    except ImportError:
        return "Triton is not installed (pip install triton, or a torch wheel that bundles it)"
    if torch.cuda.get_device_capability(device) >= THOR_COMPUTE_CAPABILITY:
        major = _ptxas_major()
        if major is None or major < 13:
            found = "not found" if major is None else f"from CUDA {major}"
            arch = "".join(map(str, torch.cuda.get_device_capability(device)))
            return (f"Triton's ptxas is {found}; this GPU (sm_{arch}) needs CUDA 13's: "
                    "set TRITON_PTXAS_PATH=/usr/local/cuda-13.0/bin/ptxas")  # fmt: skip
    return None


@dataclass(frozen=True)
class BlockInvariantPerturbations(BatchedPerturbationConfig):
    """ltx-core's batched perturbations with the per-block answers worked out once (all blocks alike).

    The block asks ``any_in_batch(type, self.idx)`` and ``all_in_batch(type, self.idx)``; passed through, the
    block index becomes part of what the compiled code is specialised on (Python 3.12 dynamo guards on it), and
    each of the 48 blocks compiles anew until the recompile limit drops the rest to eager. When no perturbation
    names single blocks the answers do not depend on the index, so they are looked up without reading it.
    """

    def __post_init__(self) -> None:
        for config in self.perturbations:
            for pert in config.perturbations or ():
                if pert.blocks is not None:
                    raise ValueError(f"{pert.type.value} on blocks {pert.blocks}: answers differ per block")
        per_type = {t: [c.is_perturbed(t, 0) for c in self.perturbations] for t in PerturbationType}
        object.__setattr__(self, "_any", {t: any(v) for t, v in per_type.items()})
        object.__setattr__(self, "_all", {t: all(v) for t, v in per_type.items()})

    def any_in_batch(self, perturbation_type: PerturbationType, block: int) -> bool:  # noqa: ARG002
        return self._any[perturbation_type]  # type: ignore[attr-defined]

    def all_in_batch(self, perturbation_type: PerturbationType, block: int) -> bool:  # noqa: ARG002
        return self._all[perturbation_type]  # type: ignore[attr-defined]

    def mask_like(self, perturbation_type: PerturbationType, block: int, values: torch.Tensor) -> torch.Tensor:  # noqa: ARG002
        return super().mask_like(perturbation_type, 0, values)


def block_invariant(perturbations: BatchedPerturbationConfig) -> BlockInvariantPerturbations:
    """The same perturbations in the form a compiled block can take; ``ValueError`` if any names single blocks."""
    return BlockInvariantPerturbations(list(perturbations.perturbations))


def compile_blocks(velocity_model: nn.Module, device_type: str, backend: str = "inductor") -> int:
    """Compile every transformer block's ``forward`` in place; returns how many blocks were wrapped.

    8-bit layers pick their in-graph kernels first. ``uncompile_blocks`` undoes it. Compilation itself happens
    at the first call (time it there).
    """
    from ltx2_edge.quant.linear import QuantLinear  # noqa: PLC0415  (accel must not import quant at load)

    os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(cache_dir()))
    for module in velocity_model.modules():
        if isinstance(module, QuantLinear):
            module.prepare_compiled(device_type)
        chosen = getattr(module, "attention_function", None)
        if isinstance(chosen, AttentionFunction):
            # ltx-core dispatches attention through an Enum's __call__, which Dynamo (torch 2.11, Python 3.12)
            # does not trace: every attention call split the block into another graph (25 per block, measured).
            # The Enum only picks one of ltx-core's attention classes; hand the block that class directly.
            module._ltx2_edge_attention = chosen
            module.attention_function = _attention_callable(chosen)
    blocks = velocity_model.transformer_blocks
    for block in blocks:
        # dynamic=False: shapes repeat across steps; a shape change (next run, other size) recompiles once.
        block.forward = torch.compile(block.forward, backend=backend, dynamic=False)
    return len(blocks)


def _attention_callable(choice: AttentionFunction) -> object:
    """The ltx-core attention class instance ``choice`` dispatches to (same rule as ``AttentionFunction.__call__``)."""
    if choice is AttentionFunction.PYTORCH:
        return attention_module.PytorchAttention()
    if choice is AttentionFunction.XFORMERS:
        return attention_module.XFormersAttention()
    if choice is AttentionFunction.FLASH_ATTENTION_3:
        return attention_module.FlashAttention3()
    if attention_module.memory_efficient_attention is not None:
        return attention_module.XFormersAttention()
    return attention_module.PytorchAttention()


def uncompile_blocks(velocity_model: nn.Module) -> None:
    """Back to eager: drop the instance-level compiled ``forward`` of every block, restore attention choices."""
    for block in velocity_model.transformer_blocks:
        if "forward" in vars(block):
            del block.forward
    for module in velocity_model.modules():
        if hasattr(module, "_ltx2_edge_attention"):
            module.attention_function = module._ltx2_edge_attention
            del module._ltx2_edge_attention
