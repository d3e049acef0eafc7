"""How PyTorch's CUDA caching allocator is set up for a run, so that what the budget caps is what the plan counts.

The budget's cap (``set_per_process_memory_fraction``) holds the allocator's *reserved* memory: allocated blocks
plus cached segments that are free but not returned. With the default allocator a stage of many differently
sized activations (the VAE decoder, the latent upsampler) reserves 15-25% more than it ever has allocated, the
planner's counted bytes; near the cap that gap becomes an OOM ("reserved but unallocated"), the one ltx-pipelines
hits under 32 GiB. Expandable segments map physical pages into one growing virtual range per stream, so freed
space is reused whatever the size of the next request and reserved memory follows allocated memory closely.

``auto`` turns them on for discrete GPUs unless the user configured the allocator themselves (their environment
wins, and the report says so). Integrated GPUs (Jetson) keep the default allocator: PyTorch's own test suite
does not run expandable segments there, and we have no device to prove them on.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch is imported where the allocator is set: the CLI reads ALLOCATOR_MODES before torch loads
    import torch

ALLOCATOR_MODES: tuple[str, ...] = ("auto", "expandable", "caching")
# Where PyTorch reads allocator settings from (newest name first); any of them set means the user chose.
ALLOC_CONF_VARS: tuple[str, ...] = ("PYTORCH_ALLOC_CONF", "PYTORCH_CUDA_ALLOC_CONF")


def user_alloc_conf(environ: dict[str, str] | os._Environ[str] | None = None) -> tuple[str, str] | None:
    """The allocator configuration the user set in the environment, as (variable, value); None when none is."""
    env = os.environ if environ is None else environ
    for var in ALLOC_CONF_VARS:
        if env.get(var, "").strip():
            return var, env[var].strip()
    return None


def resolve_allocator(mode: str, *, cuda: bool, integrated: bool, user_conf: tuple[str, str] | None) -> tuple[str, str]:
    """What the allocator will be for ``mode`` on this device: ("expandable" | "caching" | "user" | "none", why).

    Pure, so the choice is testable without a GPU; ``configure_allocator`` applies it.
    """
    if mode not in ALLOCATOR_MODES:
        raise ValueError(f"cuda_allocator={mode!r} is not allowed: one of {', '.join(ALLOCATOR_MODES)}")
    if not cuda:
        return "none", "cpu: no CUDA allocator"
    if mode == "caching":
        return "caching", "default caching allocator (--cuda-allocator caching)"
    if mode == "expandable":
        return "expandable", "expandable segments (--cuda-allocator expandable)"
    if user_conf is not None:
        var, value = user_conf
        return "user", f"allocator as configured by {var}={value} (auto leaves the user's setting alone)"
    if integrated:
        return "caching", "default caching allocator (integrated GPU: expandable segments unproven there)"
    return "expandable", "expandable segments (auto on a discrete GPU: reserved memory follows allocated)"


def configure_allocator(mode: str, device: torch.device, integrated: bool) -> tuple[str, str]:
    """Apply ``resolve_allocator``'s choice to this process; returns it. Segments made before keep their kind,
    which is why ``Generator`` calls this before it loads anything."""
    kind, why = resolve_allocator(mode, cuda=device.type == "cuda", integrated=integrated,
                                  user_conf=user_alloc_conf())  # fmt: skip
    if kind in ("expandable", "caching"):
        import torch

        flag = "True" if kind == "expandable" else "False"
        torch.cuda.memory._set_allocator_settings(f"expandable_segments:{flag}")
    return kind, why
