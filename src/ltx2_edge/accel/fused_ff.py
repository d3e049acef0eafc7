"""Fuse each feed-forward's tanh-GELU into its output Linear's 8-bit activation quantization (CUDA, Triton).

ltx-core's ``FeedForward`` runs ``net = [GELUApprox(proj), Identity, Linear]``: GELUApprox writes the
[tokens, 4 x dim] GELU output (122 MB of bf16 per video FF at W1) and the 8-bit Linear reads it back to quantize
it per token; compiled, Inductor's kernel for that took 0.21 ms per call on the H100, 10 ms a step.
``fuse_feed_forwards`` gives each FeedForward an instance-level ``forward`` (ltx-core's class is never edited):
``net[0].proj`` (bias included), then ``QuantLinear.forward_gelu`` on the pre-activation: one opaque op
(``ltx2_edge::gelu_quant_rows``, a Triton kernel that reads it once and writes 8-bit activations and scales)
and the GEMM of the layer's compiled kernel. Inside ``torch.compile`` the op stays an extern kernel, and CUDA
graphs capture it like any launch.

Numerics: GELU in fp32, rounded to the activations' dtype before the row's amax, as eager rounds its bf16 GELU
output (``kernels.gelu_tanh``); quantization and GEMM as the compiled path's.

A model's FeedForwards are all fused or none (``fuse_support`` says why not): the 48 blocks share one compiled
graph, so they must run the same code. This module never changes weights, precision or ltx-core's classes, and
never fuses where the op cannot run (no CUDA device, no Triton), an output Linear is BF16, dropout is active,
or a hook sits on a module the fused forward would bypass.
"""

from __future__ import annotations

import types

import torch
from ltx_core.model.transformer.feed_forward import FeedForward
from ltx_core.model.transformer.gelu_approx import GELUApprox
from torch import nn

from ltx2_edge.quant import kernels, triton_quant
from ltx2_edge.quant.linear import QuantLinear

_SAVED = "_ltx2_edge_unfused_forward"  # the instance-level forward a fused FeedForward had before (None: the class's)


def _kernel_support(device_type: str) -> str | None:
    if device_type != "cuda":
        return f"the fused GELU + quantization kernel runs on CUDA only (this run is on {device_type})"
    if not triton_quant.available():
        return "the fused GELU + quantization kernel needs Triton (a CUDA build of torch bundles it)"
    return None


def _feed_forwards(model: nn.Module) -> list[tuple[str, FeedForward]]:
    return [(name, m) for name, m in model.named_modules() if isinstance(m, FeedForward)]


def _has_hooks(module: nn.Module) -> bool:
    return bool(module._forward_hooks or module._forward_pre_hooks)


def _why_not(ff: FeedForward, device_type: str) -> str | None:
    net = ff.net
    if len(net) != 3 or not isinstance(net[0], GELUApprox):
        return "is not [GELUApprox, Identity or Dropout, Linear]"
    middle, out = net[1], net[2]
    dropout_off = isinstance(middle, nn.Dropout) and (middle.p == 0 or not middle.training)
    if not (isinstance(middle, nn.Identity) or dropout_off):
        return f"has {type(middle).__name__} (active dropout or another module) between GELU and its output Linear"
    if not isinstance(out, QuantLinear):
        return "has a BF16 output Linear (kept by the quantization policy)"
    name = out.compiled_kernel(device_type)
    if kernels.KERNELS[name].gemm is None:
        return f"has an output Linear running {name}, which quantizes no activations"
    if any(_has_hooks(m) for m in (ff, net[0], out)):
        return "has forward hooks on a module the fused forward bypasses"
    if _SAVED in vars(ff):
        return "is already fused"
    return None


def fuse_support(model: nn.Module, device_type: str) -> str | None:
    """None when ``fuse_feed_forwards`` would fuse every FeedForward of ``model`` on ``device_type``; else why not.

    Pure: reads the model and the machine, changes nothing.
    """
    reason = _kernel_support(device_type)
    if reason is not None:
        return reason
    found = _feed_forwards(model)
    if not found:
        return "the model has no FeedForward"
    for name, ff in found:
        try:
            why = _why_not(ff, device_type)
        except ValueError as error:  # the layer's requested kernel cannot run on this device
            why = f"has an output Linear whose kernel cannot run: {error}"
        if why is not None:
            return f"{name} {why}: no FeedForward is fused"
    return None


def _fused_forward(self: FeedForward, x: torch.Tensor) -> torch.Tensor:
    # net[1] is Identity or inactive dropout (checked when fused), so the GELU output goes straight to net[2].
    return self.net[2].forward_gelu(self.net[0].proj(x))


def fuse_feed_forwards(model: nn.Module, device_type: str) -> int:
    """Give every FeedForward of ``model`` the fused GELU + 8-bit quantization forward; returns how many.

    0 when ``fuse_support`` gives a reason (CPU, no Triton, a BF16 output Linear, dropout...): then nothing is
    changed. Call before ``torch.compile`` so the compiled block traces the fused forward; ``unfuse_feed_forwards``
    undoes it.
    """
    if fuse_support(model, device_type) is not None:
        return 0
    found = _feed_forwards(model)
    for _, ff in found:
        ff.net[2].prepare_gelu_fused(device_type)
        vars(ff)[_SAVED] = vars(ff).get("forward")
        # A bound method of one shared function: Dynamo guards on the function, so all blocks share one graph.
        ff.forward = types.MethodType(_fused_forward, ff)
    return len(found)


def unfuse_feed_forwards(model: nn.Module) -> None:
    """Give every fused FeedForward of ``model`` back the forward it had before; unfused ones are left alone."""
    for _, ff in _feed_forwards(model):
        if _SAVED not in vars(ff):
            continue
        previous = vars(ff).pop(_SAVED)
        if previous is None:
            del ff.forward
        else:
            ff.forward = previous
