"""What ``make-checkpoint`` can write, by name: torch-free, so the CLI's parser can list the parts.

Never writes anything itself (``generator.make_checkpoint`` does).
"""

from __future__ import annotations

PARTS = ("ltx2", "gemma", "upsampler")  # the single-file checkpoint, the Gemma 3 folder, the spatial upsampler x2
LTX2_FILE = "ltx2.safetensors"  # the generated single-file checkpoint's name (the upsampler goes beside it)
