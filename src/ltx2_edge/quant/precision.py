"""The torch side of the quantization policy: what precision a device runs, and what each Linear of a model runs.

``policy.py`` holds the patterns (torch-free, so the planner reads the same keep-list); this module asks the
device and walks built modules. It never changes a policy's patterns and never quantizes anything.
"""

from __future__ import annotations

import torch
from torch import nn

from ltx2_edge.errors import RequestError
from ltx2_edge.quant.linear import QuantLinear
from ltx2_edge.quant.policy import REQUESTABLE, QuantPolicy


def resolve_precision(
    requested: str, device: torch.device | str, capability: tuple[int, int] | None = None
) -> tuple[str, str]:
    """What runs for ``requested`` ("auto", "fp8", "int8", "bf16") on ``device``: ``(precision, note)``.

    auto is fp8 on CUDA devices of compute capability >= 8.9 (Ada, Hopper, Blackwell, Thor), int8 elsewhere,
    CPU included. An explicit fp8 on a CUDA GPU without FP8 tensor cores runs int8 and the note says so (the
    CLI prints it); an explicit fp8 on CPU runs the simulated FP8 reference (correct, slow) and the note says
    that. ``capability`` overrides the query (callers that already know it, tests). ``note`` is "" when
    nothing needs saying.
    """
    if requested not in REQUESTABLE:
        raise RequestError("precision", requested, f"one of {', '.join(REQUESTABLE)}")
    dev = torch.device(device)
    if requested in ("bf16", "int8"):
        return requested, ""
    if dev.type != "cuda":
        if requested == "auto":
            return "int8", f"auto precision on {dev.type}: int8 weights (no FP8 tensor cores)"
        return "fp8", f"fp8 on {dev.type} runs the simulated FP8 reference: correct, not fast"
    if capability is None:
        if not torch.cuda.is_available():
            raise RequestError("device", str(dev), "a CUDA device this torch can see, or cpu")
        capability = torch.cuda.get_device_capability(dev)
        name = torch.cuda.get_device_name(dev)
    else:
        name = str(dev)
    sm = f"sm_{capability[0]}{capability[1]}"
    if tuple(capability) >= (8, 9):
        return "fp8", ""
    if requested == "auto":
        return "int8", f"auto precision on {name} ({sm}, no FP8 tensor cores): int8 weights"
    return "int8", f"fp8 requested but {name} has no FP8 tensor cores ({sm}); running int8 weights instead"


def matching_modules(model: nn.Module, policy: QuantPolicy) -> dict[str, str]:
    """Every Linear in ``model`` -> the precision it runs ("fp8"/"int8"/"bf16"), for the plan and the report.

    Layers already quantized report their own precision; ``nn.Linear`` layers what ``policy`` gives them.
    """
    out: dict[str, str] = {}
    for name, module in model.named_modules():
        if isinstance(module, QuantLinear):
            out[name] = module.precision
        elif isinstance(module, nn.Linear):
            out[name] = policy.precision_for(name)
    return out
