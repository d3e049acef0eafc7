"""What to generate: a frozen ``GenerationRequest`` and its validation.

Validation runs before any weight is read and raises ``RequestError`` (one line: field, value, what is allowed).
Checks that need the tokenizer (prompt length) or the file system (paths, image files) live in ``Generator``,
``atomic`` and ``stages.conditioning``; this module is pure. Fields a pipeline fixes (the distilled schedule's 8
steps, no guidance, no negative prompt) default to None and are resolved here at construction, so that a request
always holds the values it runs with and an explicit conflicting value is refused, never silently replaced.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, field, replace

from ltx2_edge.errors import RequestError
from ltx2_edge.inputs import (
    DEFAULT_NEGATIVE_PROMPT,
    DEFAULT_SEED,
    DEFAULT_STEPS,
    GUIDANCE_PRESETS,
    PIPELINE_SCHEDULES,
    PIPELINES,
    UNGUIDED_PRESET,
    ImageSpec,
    LoraSpec,
)
from ltx2_edge.stages.conditioning import validate_image_specs
from ltx2_edge.stages.schedules import schedule_steps

MAX_SEED = 2**63 - 1
# Upper bounds that keep every number a run derives from a request finite and the plan quick to compute; far past
# what LTX-2 was trained on (up to ~20 s, 1920x1088 before the upsampler), so no sensible clip meets them.
MAX_SIDE = 8192
MAX_FRAMES = 1441  # one minute at 24 fps
MAX_STEPS = 1000
FRAME_RATE_RANGE = (1.0, 240.0)
MAX_PROMPT_CHARS = 100_000  # ~25x the 1024 tokens the text encoder reads; the tokenizer refuses the overflow
# ltx-core's AudioLatentShape.from_duration for LTX-2's audio VAE (16 kHz, hop 160, 4x downsampling): the audio
# latent has round(seconds x 25) frames, and a clip whose sound rounds to 0 frames cannot be decoded.
AUDIO_LATENTS_PER_SECOND = 25.0
_DEVICE = re.compile(r"^(cpu|cuda(:\d{1,2})?)$")
TWO_STAGE_PIPELINES: tuple[str, ...] = ("two-stage", "distilled")
UNGUIDED_PIPELINES: tuple[str, ...] = ("distilled", "distilled-one-stage")
STAGE_2_SCHEDULE = "distilled-stage-2"
# Stage 1 of each two-stage pipeline is this one-stage pipeline at half the output size.
STAGE_1_PIPELINE: dict[str, str] = {"two-stage": "one-stage", "distilled": "distilled-one-stage"}


@dataclass(frozen=True)
class GenerationRequest:
    """One clip to generate. Defaults are the reference workload W1: 512x288, 97 frames at 24 fps, 20 steps.

    ``pipeline``: ``one-stage`` (W1: guided, ``num_inference_steps`` LTX2Scheduler steps); ``distilled-one-stage``
    (the 8 distilled sigmas at the target resolution, one unguided forward per step, no negative prompt);
    ``two-stage`` (as ltx-pipelines' TI2VidTwoStagesPipeline: one-stage at half the size, the latent upsampler x2,
    then the 3 stage-2 distilled sigmas at full size, unguided, with ``distilled_lora`` fused into the weights);
    ``distilled`` (as its DistilledPipeline: distilled-one-stage at half the size, the upsampler, the 3 stage-2
    sigmas). The two-stage pipelines need width and height in multiples of 64 and the upsampler file
    (``Generator(spatial_upsampler_path=...)``). ``negative_prompt``, ``num_inference_steps`` and ``guidance`` left
    None take the pipeline's values (one-stage, two-stage: the official negative prompt, 20, ``cfg``; distilled,
    distilled-one-stage: none, 8, ``none``); for the two-stage pipelines they describe stage 1.
    ``images``: image-to-video conditioning (``stages.conditioning.ImageSpec``), frame 0 and/or later keyframes.
    ``loras``: LoRA files and strengths (``models.lora.LoraSpec``) fused into the transformer's weights at load;
    their files are checked by ``Generator.check``, before any weight. ``distilled_lora``: two-stage only.
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
    distilled_lora: LoraSpec | None = None

    def __post_init__(self) -> None:
        _resolve_pipeline_defaults(self)
        validate(self)

    @property
    def schedule(self) -> str:
        """The sigma schedule this request denoises with (a ``stages.schedules`` name)."""
        return PIPELINE_SCHEDULES[self.pipeline]

    @property
    def two_stage(self) -> bool:
        """True for the pipelines that upsample the latent and denoise again at the output size."""
        return self.pipeline in TWO_STAGE_PIPELINES

    def stage_1(self) -> GenerationRequest:
        """Stage 1 of a two-stage request: its one-stage pipeline at half the output size (images fitted there)."""
        if not self.two_stage:
            raise ValueError(f"stage_1() of a {self.pipeline} request")
        return replace(self, width=self.width // 2, height=self.height // 2, pipeline=STAGE_1_PIPELINE[self.pipeline],
                       distilled_lora=None)  # fmt: skip

    @property
    def duration_s(self) -> float:
        """Clip length in seconds."""
        return self.num_frames / self.frame_rate

    def to_dict(self) -> dict[str, object]:
        """JSON-ready form (report, MP4 metadata)."""
        out = asdict(self)
        out["images"] = [spec.describe() for spec in self.images]
        out["loras"] = [spec.describe() for spec in self.loras]
        out["distilled_lora"] = self.distilled_lora.describe() if self.distilled_lora is not None else None
        return out


def _check_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise RequestError(name, value, "an integer")
    return value


def check_text(name: str, value: object, allow_empty: bool) -> str:
    """A prompt: a ``str`` of at most ``MAX_PROMPT_CHARS`` that UTF-8 can encode (bytes a terminal passed on
    undecoded arrive as lone surrogates, which the tokenizer cannot take)."""
    if not isinstance(value, str) or (not allow_empty and not value.strip()):
        raise RequestError(name, value, "a text (may be empty)" if allow_empty else "a non-empty text")
    if len(value) > MAX_PROMPT_CHARS:
        raise RequestError(name, f"<{len(value)} characters>", f"at most {MAX_PROMPT_CHARS} characters (the model "
                           "reads 1024 tokens)")  # fmt: skip
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise RequestError(name, value, f"text in UTF-8 (character {exc.start} is a byte that is not UTF-8): check "
                           "the terminal's or the file's encoding") from None  # fmt: skip
    return value


def check_seed(value: object, name: str = "--seed") -> int:
    """A random seed: an integer from 0 to ``MAX_SEED`` (what every torch generator takes)."""
    seed = _check_int(name, value)
    if not 0 <= seed <= MAX_SEED:
        raise RequestError(name, seed, f"an integer from 0 to {MAX_SEED}")
    return seed


def check_device(value: object, name: str = "--device") -> str | None:
    """``cpu``, ``cuda`` or ``cuda:N`` (or None: the engine's default), refused before torch is asked."""
    if value is None:
        return None
    if not isinstance(value, str) or not _DEVICE.match(value):
        raise RequestError(name, value, "cpu, cuda or cuda:N (N the GPU's index)")
    return value


def _resolve_pipeline_defaults(r: GenerationRequest) -> None:
    """Fill the fields left None with the pipeline's values; refuse explicit values the pipeline cannot honour."""
    if r.pipeline not in PIPELINE_SCHEDULES:
        raise RequestError("--pipeline", r.pipeline, " or ".join(PIPELINES))
    distilled = r.pipeline in UNGUIDED_PIPELINES
    steps = r.num_inference_steps
    if distilled:
        if steps is not None and not (isinstance(steps, int) and not isinstance(steps, bool)):
            raise RequestError("--num-inference-steps", steps, "an integer")
        steps = schedule_steps(r.schedule, steps)  # refuses any count but the schedule's own, naming it
        if r.guidance not in (None, UNGUIDED_PRESET):
            raise RequestError("--guidance", r.guidance, f"{UNGUIDED_PRESET} for {r.pipeline} (one unguided forward "
                               "per step): leave --guidance unset")  # fmt: skip
        if r.negative_prompt:
            raise RequestError("--negative-prompt", str(r.negative_prompt)[:40], f"unset for {r.pipeline} (it runs no "
                               "negative pass): leave --negative-prompt unset")  # fmt: skip
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
    """Raise ``RequestError`` for the first field that is out of range, naming its flag and the allowed range."""
    check_text("--prompt", r.prompt, allow_empty=False)
    check_text("--negative-prompt", r.negative_prompt, allow_empty=True)
    multiple = 64 if r.two_stage else 32  # stage 1 runs at half the size, itself a multiple of 32
    for name in ("width", "height"):
        v = _check_int(f"--{name}", getattr(r, name))
        if v < 2 * multiple or v % multiple or v > MAX_SIDE:
            example = "1024x576, 1536x1024" if r.two_stage else "512x288, 768x512"
            raise RequestError(f"--{name}", v, f"a multiple of {multiple}, at least {2 * multiple} and at most "
                               f"{MAX_SIDE}, for --pipeline {r.pipeline} (e.g. {example})")  # fmt: skip
    n = _check_int("--num-frames", r.num_frames)
    if n < 1 or (n - 1) % 8 or n > MAX_FRAMES:
        lower = min(max(1, n - (n - 1) % 8) if n >= 1 else 1, MAX_FRAMES - 8)
        raise RequestError("--num-frames", n, f"8k+1 frames from 1 to {MAX_FRAMES} (1, 9, 17, ..., 97, 121); "
                           f"nearest: {lower} or {lower + 8}")  # fmt: skip
    fps = r.frame_rate
    lo, hi = FRAME_RATE_RANGE
    if isinstance(fps, bool) or not isinstance(fps, (int, float)) or not (math.isfinite(fps) and lo <= fps <= hi):
        raise RequestError("--frame-rate", fps, f"a positive number of frames per second from {lo:g} to {hi:g}, "
                           "e.g. 24")  # fmt: skip
    if round(n / fps * AUDIO_LATENTS_PER_SECOND) < 1:  # ltx-core's AudioLatentShape.from_duration rounding
        most = n * AUDIO_LATENTS_PER_SECOND * 2
        raise RequestError("--frame-rate", fps, f"below {most:g} fps for {n} frame(s), or more --num-frames: the "
                           f"sound ({AUDIO_LATENTS_PER_SECOND:g} latent frames per second) must last at least one "
                           "latent frame")  # fmt: skip
    steps = _check_int("--num-inference-steps", r.num_inference_steps)
    if not 1 <= steps <= MAX_STEPS:
        raise RequestError("--num-inference-steps", steps, f"at least 1 and at most {MAX_STEPS}")
    check_seed(r.seed)
    allowed = (UNGUIDED_PRESET,) if r.pipeline in UNGUIDED_PIPELINES else GUIDANCE_PRESETS
    if r.guidance not in allowed:
        raise RequestError("--guidance", r.guidance, " or ".join(allowed))
    if r.audio_channels not in (1, 2) or isinstance(r.audio_channels, bool):
        raise RequestError("--audio-channels", r.audio_channels, "1 (mono) or 2 (stereo)")
    if not isinstance(r.images, tuple) or not all(isinstance(spec, ImageSpec) for spec in r.images):
        raise RequestError("--image", r.images, "a tuple of inputs.ImageSpec (--image PATH FRAME_IDX STRENGTH [CRF])")
    validate_image_specs(r.images, r.width, r.height, r.num_frames)
    if not isinstance(r.loras, tuple) or not all(isinstance(spec, LoraSpec) for spec in r.loras):
        raise RequestError("--lora", r.loras, "a tuple of inputs.LoraSpec (--lora PATH [STRENGTH])")
    if r.pipeline == "two-stage" and not isinstance(r.distilled_lora, LoraSpec):
        raise RequestError(
            "--distilled-lora",
            r.distilled_lora,
            "the distilled LoRA for stage 2 of --pipeline two-stage "
            "(--distilled-lora PATH [STRENGTH], Lightricks' ltx-2-19b-distilled-lora-384.safetensors)",
        )
    if r.pipeline != "two-stage" and r.distilled_lora is not None:
        raise RequestError("--distilled-lora", str(r.distilled_lora.path), "unset: only --pipeline two-stage fuses the "
                           "distilled LoRA (for stage 2)")  # fmt: skip
