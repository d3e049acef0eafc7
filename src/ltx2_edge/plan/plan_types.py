"""The planner's inputs and outputs as frozen dataclasses: a request, one stage's plan, the whole plan.

Behaviour reads these; it never re-decides. ``PlanRequest`` validates itself (one-line ``RequestError``s
naming the option to change). Nothing here computes a plan: that is ``planner.py``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from ltx2_edge.errors import RequestError
from ltx2_edge.plan.budget import Budget
from ltx2_edge.plan.profiles import DeviceProfile
from ltx2_edge.plan.tile_plan import VideoTiling

PRECISIONS: tuple[str, ...] = ("bf16", "fp8", "int8")
# In run order; encode_image only when the request conditions on images; upsample and denoise_2 only for the
# two-stage pipelines (``denoise`` is then stage 1, at half the output size).
STAGES: tuple[str, ...] = ("text_encode", "embeddings", "encode_image", "denoise", "upsample", "denoise_2", "decode")


@dataclass(frozen=True)
class SecondStage:
    """Stage 2 of the two-stage pipelines (two-stage, distilled): the stage-1 video latent upsampled x2 by the
    latent upsampler (with the video VAE encoder's statistics, and the images re-encoded at the output size), then
    ``steps`` unguided forwards at the output size, then the decode there.

    ``width``/``height``: the output size (twice the ``PlanRequest``'s, which is stage 1's); ``upsampler_bytes``:
    the upsampler file's weights; ``upsampler_working_bytes`` and ``upsampler_flops``: its forward over the
    stage-1 latent (``stages.upsample``); ``conditioning_tokens`` / ``image_float_pixels``: as ``PlanRequest``'s,
    at the output size.
    """

    width: int
    height: int
    steps: int
    upsampler_bytes: int
    upsampler_working_bytes: int
    upsampler_flops: float
    conditioning_tokens: int = 0
    image_float_pixels: int = 0
    same_weights: bool = False  # both stages run the same transformer weights (distilled: yes; two-stage: LoRA)

    def __post_init__(self) -> None:
        for name in ("steps", "upsampler_bytes", "upsampler_working_bytes", "conditioning_tokens",
                     "image_float_pixels"):  # fmt: skip
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < (1 if name == "steps" else 0):
                raise RequestError(f"stage-2 {name.replace('_', '-')}", value, "an integer >= "
                                   f"{1 if name == 'steps' else 0}")  # fmt: skip


SourceTier = Literal["resident", "pinned", "file"]
Bottleneck = Literal["compute", "copy", "disk"]


@dataclass(frozen=True)
class PlanRequest:
    """What the planner needs to know about a generation request.

    ``guidance_batch``: guidance passes batched in one forward (1 without CFG, 2 for CFG, 4 for CFG + STG +
    modality isolation); more than one pass also means a negative prompt to encode. ``precision``: the
    transformer's and Gemma's Linear weights (bf16, or 1 byte per weight in fp8/int8). ``prefetch_depth``:
    blocks copied ahead of the one computing when blocks stream (>= 2), so P + 1 slots.
    ``images``: conditioning images the video VAE encoder encodes (0: no encode_image stage);
    ``image_float_pixels``: the most float32 RGB pixels one image holds on the device while it is fitted (its
    source plus its scaled copy, ``stages.conditioning.image_device_pixels``); ``conditioning_tokens``: video
    tokens the keyframes add to every transformer forward (``stages.conditioning.conditioning_token_count``).
    ``second_stage``: for the two-stage pipelines, what follows stage 1 (then width, height, steps, guidance and
    the image fields above describe stage 1, at half the output size). ``expandable_segments``: the CUDA
    allocator runs with expandable segments (``memory.allocator``), so reserved memory follows allocated memory
    and each stage needs a smaller allowance over its counted bytes. ``guidance_ranks``: processes (one a GPU) the
    passes are shared among (CFG parallel, ``parallel/``): ``guidance_batch`` is then one rank's share, each rank's
    plan is its own GPU's, and both prompts are still encoded (on every rank). ``cuda_graph``: the run may capture a
    CUDA graph of the denoising forward (``--cuda-graph auto`` with batched guidance); the step model
    (``plan.step_time``) then times a resident run graphed, as ``accel.settings`` will run it.
    ``checkpoint_cached`` / ``gemma_cached``: the fraction of the checkpoint's / the Gemma folder's bytes in the
    page cache when planned (``checkpoint.page_cache``); what is not is timed at the profile's cold read rate.
    None: not known, the loads are timed warm (and the plan says so).
    """

    width: int
    height: int
    num_frames: int
    frame_rate: float
    num_inference_steps: int
    guidance_batch: int = 2
    precision: str = "bf16"
    prefetch_depth: int = 2
    images: int = 0
    image_float_pixels: int = 0
    conditioning_tokens: int = 0
    second_stage: SecondStage | None = None
    expandable_segments: bool = False
    guidance_ranks: int = 1
    cuda_graph: bool = True
    checkpoint_cached: float | None = None
    gemma_cached: float | None = None

    def __post_init__(self) -> None:
        for name, value in (("width", self.width), ("height", self.height)):
            if not isinstance(value, int) or value < 64 or value % 32:
                raise RequestError(name, value, "a multiple of 32, at least 64")
        if not isinstance(self.num_frames, int) or self.num_frames < 1 or (self.num_frames - 1) % 8:
            raise RequestError("num-frames", self.num_frames, "8k+1 frames (1, 9, 17, ..., 97, ...)")
        if not self.frame_rate > 0:
            raise RequestError("frame-rate", self.frame_rate, "a positive number of frames per second")
        if not isinstance(self.num_inference_steps, int) or self.num_inference_steps < 1:
            raise RequestError("num-inference-steps", self.num_inference_steps, "a positive integer")
        if self.guidance_batch not in (1, 2, 3, 4):
            raise RequestError("guidance-batch", self.guidance_batch, "1, 2, 3 or 4 guidance passes")
        if isinstance(self.guidance_ranks, bool) or self.guidance_ranks not in (1, 2, 3, 4):
            raise RequestError("cfg-parallel", self.guidance_ranks, "1 to 4 ranks (at most one a guidance pass)")
        if self.precision not in PRECISIONS:
            raise RequestError("quantization", self.precision, "one of " + ", ".join(PRECISIONS))
        if not isinstance(self.prefetch_depth, int) or self.prefetch_depth < 2:
            raise RequestError("prefetch-depth", self.prefetch_depth, "an integer >= 2")
        for name in ("images", "image_float_pixels", "conditioning_tokens"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise RequestError(name.replace("_", "-"), value, "an integer >= 0")
        for name in ("checkpoint_cached", "gemma_cached"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not 0.0 <= value <= 1.0):
                raise RequestError(name.replace("_", "-"), value, "a fraction of the files' bytes, 0 to 1, or None")
        if (self.image_float_pixels or self.conditioning_tokens) and not self.images:
            raise RequestError("images", self.images, "at least 1 when image pixels or conditioning tokens are given")

    @property
    def prompts(self) -> int:
        """Prompts to encode: the prompt, plus the negative prompt when guidance runs more than one pass."""
        return 1 if self.guidance_batch == 1 and self.guidance_ranks == 1 else 2


@dataclass(frozen=True)
class StagePlan:
    """One stage's residency, memory and time.

    Bytes are device bytes (the one pool when unified). ``predicted_peak_bytes`` = resident weights + slots
    + activations + slack (+ the runtime and host-held bytes inside a one-pool budget, + ``beside_bytes`` of
    a stage running concurrently). Units are the repeated blocks (48 transformer blocks, 48 Gemma layers);
    ``resident_units`` of them stay, ``streamed_units`` pass through ``n_slots`` slots of ``slot_bytes``
    from ``source_tier``. ``bytes_moved_per_step`` is what crosses per denoising step (per pass elsewhere).
    ``predicted_seconds`` = steps x max(compute, copy) with prefetch overlapping copy and compute, warm;
    ``file_read_bytes``: what loading the stage's weights once reads from its files (file bytes: a BF16 file
    quantized at load reads twice what lands on the device); ``cold_load_seconds`` / ``warm_load_seconds``: those
    bytes at the profile's cold (disk) and warm (page cache) checkpoint read rates; ``reads``: the file(s) they come
    from (``plan.file_reads``; empty when the planner was called without them).

    With the profile's measured timings (``plan.timings``; ``plan.stage_time`` computes them): ``predicted_seconds``
    is the stage's passes as they run (denoise: every step, first steps and capture included; decode: the whole
    decoder), ``load_seconds`` its warm load (read, quantized, pinned), ``setup_seconds`` the rest inside the stage
    (the SDPA backend timed, the pinned copy released), ``mp4_seconds`` the MP4 encode left after the decode;
    ``steady_step_seconds`` / ``first_steps_seconds`` / ``capture_seconds`` / ``graphed`` the denoise steps' parts;
    ``time_note`` where each figure comes from. Without timings those are 0 and ``predicted_seconds`` is the floor.
    """

    name: str
    weights_resident_bytes: int
    weights_streamed_bytes: int
    slot_bytes: int
    n_slots: int
    activations_bytes: int
    predicted_peak_bytes: int
    resident_units: int
    streamed_units: int
    source_tier: SourceTier
    tiles: VideoTiling | None
    bytes_moved_per_step: int
    predicted_seconds: float
    bottleneck: Bottleneck
    technique: str
    host_bytes: int = 0
    beside_bytes: int = 0
    steps: int = 1
    compute_seconds_per_step: float = 0.0
    copy_seconds_per_step: float = 0.0
    cold_load_seconds: float = 0.0
    flops_per_step: float = 0.0
    file_read_bytes: int = 0
    warm_load_seconds: float = 0.0
    reads: str = ""
    load_seconds: float = 0.0
    setup_seconds: float = 0.0
    mp4_seconds: float = 0.0
    steady_step_seconds: float = 0.0
    first_steps_seconds: float = 0.0
    capture_seconds: float = 0.0
    graphed: bool = False
    # denoise only: the budget fits the stage but not the room a CUDA graph's capture needs, so the run stays eager
    no_capture_room: bool = False
    time_note: str = ""
    # upsample only: the transformer of stage 1 stays resident through this stage into stage 2 (its bytes are in
    # the peak), instead of being released and loaded again.
    keeps_transformer: bool = False

    @property
    def stage_seconds(self) -> float:
        """The whole stage as its report row times it: load, passes, setup and the MP4 left after the decode."""
        return self.load_seconds + self.predicted_seconds + self.setup_seconds + self.mp4_seconds


@dataclass(frozen=True)
class Plan:
    """Every stage's plan, in run order, with the request, the budget and the device profile behind it."""

    stages: tuple[StagePlan, ...]
    request: PlanRequest
    budget: Budget
    profile: DeviceProfile

    def stage(self, name: str) -> StagePlan:
        """The plan of stage ``name``."""
        for s in self.stages:
            if s.name == name:
                return s
        raise KeyError(f"no stage {name!r} in this plan: stages are {', '.join(s.name for s in self.stages)}")

    @property
    def peak_bytes(self) -> int:
        """The largest predicted peak of any stage: what the budget must hold."""
        return max(s.predicted_peak_bytes for s in self.stages)

    @property
    def host_peak_bytes(self) -> int:
        """The largest host (pinned + anonymous) figure of any stage; for a one-pool budget it is already
        inside ``peak_bytes``."""
        return max(s.host_bytes for s in self.stages)

    @property
    def total_seconds(self) -> float:
        """Predicted warm run time: every stage's predicted seconds."""
        return sum(s.predicted_seconds for s in self.stages)

    @property
    def cold_load_seconds(self) -> float:
        """Reading every stage's weights once from a cold disk."""
        return sum(s.cold_load_seconds for s in self.stages)

    @property
    def warm_load_seconds(self) -> float:
        """Reading every stage's weights once from the page cache."""
        return sum(s.warm_load_seconds for s in self.stages)

    @property
    def file_read_bytes(self) -> int:
        """Bytes every stage's load reads from the files, once each."""
        return sum(s.file_read_bytes for s in self.stages)

    @property
    def startup_seconds(self) -> float:
        """A fresh process's seconds before the first stage (imports, CUDA, the engine's setup) as the profile
        measured them; 0 when it did not."""
        st = self.profile.timings.startup
        return 0.0 if st is None else st.before_first_stage_s

    @property
    def exit_seconds(self) -> float:
        """A fresh process's seconds from its last stage to its exit, as the profile measured them (0: not)."""
        st = self.profile.timings.startup
        return 0.0 if st is None else st.exit_s

    @property
    def predicted_end_to_end_seconds(self) -> float:
        """A fresh ``ltx2-edge generate`` process, warm page cache: start-up, every stage (load, passes, setup, the
        MP4 left after the decode), exit. What the profile has not measured (``Timings.missing``) is left out."""
        return self.startup_seconds + sum(s.stage_seconds for s in self.stages) + self.exit_seconds
