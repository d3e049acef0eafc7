"""safetensors dtype strings -> torch dtypes, for the readers that view file bytes as tensors.

Kept apart from ``header.py`` so that parsing a header (and so the planner) never imports torch. Bytes are
reinterpreted by the readers, never converted; this module never reads a file.
"""

from __future__ import annotations

import torch

TORCH_DTYPES: dict[str, torch.dtype] = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "F8_E4M3": torch.float8_e4m3fn,
    "F8_E5M2": torch.float8_e5m2,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
}
