"""What to generate: a frozen ``GenerationRequest`` and its validation.

Validation runs before any weight is read and raises ``RequestError`` (one line: field, value, what is allowed).
Checks that need the tokenizer (prompt length) or the file system (paths) live in ``Generator`` and
``atomic``; this module is pure.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

from ltx2_edge.errors import RequestError
from ltx2_edge.guidance import GUIDANCE_PRESETS

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
MAX_SEED = 2**63 - 1


@dataclass(frozen=True)
class GenerationRequest:
    """One clip to generate. Defaults are the reference workload W1: 512x288, 97 frames at 24 fps, 20 steps."""

    prompt: str
    negative_prompt: str = DEFAULT_NEGATIVE_PROMPT
    width: int = 512
    height: int = 288
    num_frames: int = 97
    frame_rate: float = 24.0
    num_inference_steps: int = 20
    seed: int = DEFAULT_SEED
    guidance: str = "cfg"
    audio_channels: int = 2
    extra: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        validate(self)

    @property
    def duration_s(self) -> float:
        """Clip length in seconds."""
        return self.num_frames / self.frame_rate

    def to_dict(self) -> dict[str, object]:
        """JSON-ready form (report, MP4 metadata)."""
        return asdict(self)


def _check_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise RequestError(name, value, "an integer")
    return value


def validate(r: GenerationRequest) -> None:
    """Raise ``RequestError`` for the first field that is out of range."""
    if not isinstance(r.prompt, str) or not r.prompt.strip():
        raise RequestError("prompt", r.prompt, "a non-empty text")
    if not isinstance(r.negative_prompt, str):
        raise RequestError("negative_prompt", r.negative_prompt, "a text (may be empty)")
    for name in ("width", "height"):
        v = _check_int(name, getattr(r, name))
        if v <= 0 or v % 32:
            raise RequestError(name, v, "a positive multiple of 32 (e.g. 512x288, 768x512)")
    n = _check_int("num_frames", r.num_frames)
    if n < 1 or (n - 1) % 8:
        lower = max(1, n - (n - 1) % 8) if n >= 1 else 1
        raise RequestError("num_frames", n, f"8k+1 frames (1, 9, 17, ..., 97, 121); nearest: {lower} or {lower + 8}")
    fps = r.frame_rate
    if isinstance(fps, bool) or not isinstance(fps, (int, float)) or not math.isfinite(fps) or fps <= 0:
        raise RequestError("frame_rate", fps, "a positive number of frames per second, e.g. 24")
    steps = _check_int("num_inference_steps", r.num_inference_steps)
    if steps < 1:
        raise RequestError("num_inference_steps", steps, "at least 1")
    seed = _check_int("seed", r.seed)
    if not 0 <= seed <= MAX_SEED:
        raise RequestError("seed", seed, f"an integer from 0 to {MAX_SEED}")
    if r.guidance not in GUIDANCE_PRESETS:
        raise RequestError("guidance", r.guidance, " or ".join(GUIDANCE_PRESETS))
    if r.audio_channels not in (1, 2):
        raise RequestError("audio_channels", r.audio_channels, "1 (mono) or 2 (stereo)")
