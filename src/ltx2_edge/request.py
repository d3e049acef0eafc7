"""What to generate: a frozen ``GenerationRequest`` and its validation.

Validation runs before any weight is read and raises ``RequestError`` (one line: field, value, what is allowed).
Checks that need the tokenizer (prompt length) or the file system (paths, image files) live in ``Generator``,
``atomic`` and ``stages.conditioning``; this module is pure. Fields a pipeline fixes (the distilled schedule's 8
steps, no guidance, no negative prompt) default to None and are resolved here at construction, so that a request
always holds the values it runs with and an explicit conflicting value is refused, never silently replaced.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

from ltx2_edge.errors import RequestError
from ltx2_edge.guidance import GUIDANCE_PRESETS, UNGUIDED_PRESET
from ltx2_edge.models.lora import LoraSpec
from ltx2_edge.stages.conditioning import ImageSpec, validate_image_specs
from ltx2_edge.stages.schedules import schedule_steps

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
DEFAULT_STEPS = 20  # W1's one-stage step count
# Each pipeline's denoising schedule (``stages.schedules``). The official two-stage and distilled pipelines (with
# the latent upsampler) are not offered yet.
PIPELINE_SCHEDULES: dict[str, str] = {"one-stage": "one-stage", "distilled-one-stage": "distilled"}
PIPELINES: tuple[str, ...] = tuple(PIPELINE_SCHEDULES)


@dataclass(frozen=True)
class GenerationRequest:
    """One clip to generate. Defaults are the reference workload W1: 512x288, 97 frames at 24 fps, 20 steps.

    ``pipeline``: ``one-stage`` (W1: guided, ``num_inference_steps`` LTX2Scheduler steps) or ``distilled-one-stage``
    (the 8 distilled sigmas at the target resolution, one unguided forward per step, no negative prompt).
    ``negative_prompt``, ``num_inference_steps`` and ``guidance`` left None take the pipeline's values (one-stage:
    the official negative prompt, 20, ``cfg``; distilled-one-stage: none, 8, ``none``). ``images``: image-to-video
    conditioning (``stages.conditioning.ImageSpec``), frame 0 and/or later keyframes. ``loras``: LoRA files and
    strengths (``models.lora.LoraSpec``) fused into the transformer's weights at load; their files are checked
    by ``Generator.check``, before any weight.
    """

    prompt: str
    negative_prompt: str | None = None
    width: int = 512
    height: int = 288
    num_frames: int = 97
    frame_rate: float = 24.0
    num_inference_steps: int | None = None
    seed: int = DEFAULT_SEED
    guidance: str | None = None
    audio_channels: int = 2
    images: tuple[ImageSpec, ...] = ()
    pipeline: str = "one-stage"
    extra: dict[str, str] = field(default_factory=dict)
    loras: tuple[LoraSpec, ...] = ()

    def __post_init__(self) -> None:
        _resolve_pipeline_defaults(self)
        validate(self)

    @property
    def schedule(self) -> str:
        """The sigma schedule this request denoises with (a ``stages.schedules`` name)."""
        return PIPELINE_SCHEDULES[self.pipeline]

    @property
    def duration_s(self) -> float:
        """Clip length in seconds."""
        return self.num_frames / self.frame_rate

    def to_dict(self) -> dict[str, object]:
        """JSON-ready form (report, MP4 metadata)."""
        out = asdict(self)
        out["images"] = [spec.describe() for spec in self.images]
        out["loras"] = [spec.describe() for spec in self.loras]
        return out


def _check_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise RequestError(name, value, "an integer")
    return value


def _resolve_pipeline_defaults(r: GenerationRequest) -> None:
    """Fill the fields left None with the pipeline's values; refuse explicit values the pipeline cannot honour."""
    if r.pipeline not in PIPELINE_SCHEDULES:
        # Two-stage and distilled (with the latent upsampler) are the official modes not offered yet.
        raise RequestError("pipeline", r.pipeline, " or ".join(PIPELINES))
    distilled = r.pipeline == "distilled-one-stage"
    steps = r.num_inference_steps
    if distilled:
        if steps is not None and not (isinstance(steps, int) and not isinstance(steps, bool)):
            raise RequestError("num_inference_steps", steps, "an integer")
        steps = schedule_steps(r.schedule, steps)  # refuses any count but the schedule's own, naming it
        if r.guidance not in (None, UNGUIDED_PRESET):
            raise RequestError("guidance", r.guidance, f"{UNGUIDED_PRESET} for distilled-one-stage (one unguided "
                               "forward per step): leave --guidance unset")  # fmt: skip
        if r.negative_prompt:
            raise RequestError("negative_prompt", str(r.negative_prompt)[:40], "unset for distilled-one-stage (it runs "
                               "no negative pass): leave --negative-prompt unset")  # fmt: skip
    defaults = {
        "num_inference_steps": steps if steps is not None else DEFAULT_STEPS,
        "guidance": UNGUIDED_PRESET if distilled else (r.guidance if r.guidance is not None else "cfg"),
        "negative_prompt": "" if distilled else (
            r.negative_prompt if r.negative_prompt is not None else DEFAULT_NEGATIVE_PROMPT),
        "images": tuple(r.images) if isinstance(r.images, (list, tuple)) else r.images,
        "loras": tuple(r.loras) if isinstance(r.loras, (list, tuple)) else r.loras,
    }  # fmt: skip
    for name, value in defaults.items():
        object.__setattr__(r, name, value)  # frozen: resolved once, at construction


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
    allowed = (UNGUIDED_PRESET,) if r.pipeline == "distilled-one-stage" else GUIDANCE_PRESETS
    if r.guidance not in allowed:
        raise RequestError("guidance", r.guidance, " or ".join(allowed))
    if r.audio_channels not in (1, 2):
        raise RequestError("audio_channels", r.audio_channels, "1 (mono) or 2 (stereo)")
    if not isinstance(r.images, tuple) or not all(isinstance(spec, ImageSpec) for spec in r.images):
        raise RequestError("images", r.images, "a tuple of stages.conditioning.ImageSpec (--image PATH FRAME_IDX ...)")
    validate_image_specs(r.images, r.width, r.height, r.num_frames)
    if not isinstance(r.loras, tuple) or not all(isinstance(spec, LoraSpec) for spec in r.loras):
        raise RequestError("loras", r.loras, "a tuple of models.lora.LoraSpec (--lora PATH [STRENGTH])")
