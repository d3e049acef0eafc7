"""What a request is made of before any check: the choices, the defaults and the file specs the CLI parses.

The pipelines and guidance presets one may choose, the default seed, steps, LoRA strength and image CRF, and the
frozen ``LoraSpec``/``ImageSpec`` a request holds. Pure names, numbers and dataclasses: this module never imports
torch (the CLI builds its parser and help texts from it without loading the engine), never opens a file and
never decides how a run goes (``request.py`` validates, the engine plans).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from ltx2_edge.errors import RequestError

# ltx_pipelines.utils.constants.DEFAULT_NEGATIVE_PROMPT (ltx-pipelines 1.0.0), kept verbatim so that our default
# run conditions on exactly what the official pipeline does.
DEFAULT_NEGATIVE_PROMPT = (
    "blurry, out of focus, overexposed, underexposed, low contrast, washed out colors, excessive noise, "
    "grainy texture, poor lighting, flickering, motion blur, distorted proportions, unnatural skin tones, "
    "deformed facial features, asymmetrical face, missing facial features, extra limbs, disfigured hands, "
    "wrong hand count, artifacts around text, inconsistent perspective, camera shake, incorrect depth of "
    "field, background too sharp, background clutter, distracting reflections, harsh shadows, inconsistent "
    "lighting direction, color banding, cartoonish rendering, 3D CGI look, unrealistic materials, uncanny "
    "valley effect, incorrect ethnicity, wrong gender, exaggerated expressions, wrong gaze direction, "
    "mismatched lip sync, silent or muted audio, distorted voice, robotic voice, echo, background noise, "
    "off-sync audio, incorrect dialogue, added dialogue, repetitive speech, jittery movement, awkward "
    "pauses, incorrect timing, unnatural transitions, inconsistent framing, tilted camera, flat lighting, "
    "inconsistent tone, cinematic oversaturation, stylized filters, or AI artifacts."
)
DEFAULT_SEED = 10  # the official pipelines' default
DEFAULT_STEPS = 20  # W1's one-stage step count
# Each pipeline's (first stage's) denoising schedule (``stages.schedules``). The two-stage pipelines then upsample
# the latent x2 and run ``STAGE_2_SCHEDULE`` at the output size, as ltx-pipelines' TI2VidTwoStagesPipeline and
# DistilledPipeline do.
PIPELINE_SCHEDULES: dict[str, str] = {
    "one-stage": "one-stage",
    "two-stage": "one-stage",
    "distilled": "distilled",
    "distilled-one-stage": "distilled",
}
PIPELINES: tuple[str, ...] = tuple(PIPELINE_SCHEDULES)
GUIDANCE_PRESETS: tuple[str, ...] = ("cfg", "full")
# What the distilled pipelines run: one conditional forward per step, no guidance (not a user-facing preset).
UNGUIDED_PRESET = "none"
DEFAULT_LORA_STRENGTH = 1.0  # ltx_pipelines.utils.constants.DEFAULT_LORA_STRENGTH
# Past a few units a LoRA's delta swamps the weights (noise); the tiny model's sound turns NaN near 1e20 and the
# AAC encoder fails. 10 leaves every sensible use (official LoRAs run at 0.5-1.5) and refuses the absurd ones.
MAX_LORA_STRENGTH = 10.0
DEFAULT_IMAGE_CRF = 33  # ltx_pipelines.utils.constants.DEFAULT_IMAGE_CRF
MAX_CRF = 51  # libx264's CRF scale
IMAGE_FIT_RULE = (
    "Each image is fitted to the output size as ltx-pipelines 1.0.0 does: first passed once through H.264 at CRF "
    f"(default {DEFAULT_IMAGE_CRF}, 0 skips it; an odd width or height loses its last column or row there), then "
    "scaled with bilinear filtering, aspect ratio kept, until it covers WIDTHxHEIGHT, and centre-cropped to exactly "
    "WIDTHxHEIGHT (never stretched, never letterboxed). Alpha is dropped, grayscale and palette images become RGB, "
    "EXIF rotation is not applied."
)


@dataclass(frozen=True)
class LoraSpec:
    """One ``--lora``: a file and the factor its delta is scaled by (0 turns it off, negative subtracts it)."""

    path: Path
    strength: float = DEFAULT_LORA_STRENGTH

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", Path(self.path))
        s = self.strength
        number = not isinstance(s, bool) and isinstance(s, (int, float))
        if not number or not (math.isfinite(s) and abs(s) <= MAX_LORA_STRENGTH):
            top = f"{MAX_LORA_STRENGTH:g}"
            raise RequestError("--lora", f"{self.path} {s!r}", f"a STRENGTH from -{top} to {top}, e.g. --lora FILE "
                               "0.8 (0 turns it off, negative subtracts it)")  # fmt: skip
        object.__setattr__(self, "strength", float(s))

    def describe(self) -> dict[str, object]:
        """JSON-ready form (request, report, quantized file metadata)."""
        return {"path": str(self.path), "strength": self.strength}


@dataclass(frozen=True)
class ImageSpec:
    """One conditioning image: the file, the output frame it conditions, its strength and its H.264 CRF."""

    path: Path
    frame_idx: int
    strength: float
    crf: int = DEFAULT_IMAGE_CRF

    def describe(self) -> dict[str, object]:
        """JSON-ready form (report, MP4 metadata)."""
        return {"path": str(self.path), "frame_idx": self.frame_idx, "strength": self.strength, "crf": self.crf}
