"""A stage's time beyond its compute floor, from the profile's measured timings (``plan.timings``): the load, the
denoising steps as they run (``plan.step_time``), the decode as the whole decoder runs, the MP4 encode after it, and
the stage's own setup (the SDPA backend timed, the pinned host copy released).

Loads, warm (the page cache; what the plan's request says is not cached reads at the cold rate, the load then as
long as the disk takes): the transformer's fixed part + its resident file bytes at the 8-bit loader's rate
(+ streamed blocks read, quantized and packed into pinned memory when they wait there; blocks streamed from the
file are not loaded); Gemma as calibrate loaded it whole from the folder it was given, scaled by file bytes, and its
first encode as measured there (where calibrate had no Gemma folder: its layers at the transformer loader's rate,
the rest of it, the embedding table and norms, at the as-stored loader's rate, the encode at its floor); the
connectors and the decoders as measured on the checkpoint calibrate read, scaled by file bytes; anything else at
the as-stored loader's rate. A profile without load timings gives bytes over the warm read rate.
Every figure says in ``note`` where it comes from. Pure arithmetic; never imports torch.
"""

from __future__ import annotations

from dataclasses import dataclass

from ltx2_edge.plan.flops import FlopCount
from ltx2_edge.plan.plan_types import PlanRequest
from ltx2_edge.plan.profiles import DeviceProfile
from ltx2_edge.plan.step_time import DenoiseShape, StepPrediction, predict_steps
from ltx2_edge.plan.timings import LoadTimings

GB = 1e9
TRANSFORMER_STAGES = ("denoise", "denoise_2")


@dataclass(frozen=True)
class StageLoad:
    """What loading a stage's weights reads, in file bytes: ``fixed_read`` (outside its blocks), ``blocks_read``
    (the resident blocks), ``streamed_read`` (blocks loaded into pinned host memory; 0 unless they wait there) and
    ``streamed_device`` their device bytes (what is packed and pinned); ``quantized``: its Linears become 8-bit."""

    fixed_read: int
    blocks_read: int
    streamed_read: int
    streamed_device: int
    quantized: bool

    @property
    def read(self) -> int:
        """Every file byte the load reads."""
        return self.fixed_read + self.blocks_read + self.streamed_read


@dataclass(frozen=True)
class StageTime:
    """The stage's time parts: ``load_s`` (warm, or the disk's time for what is not cached), ``compute_s`` (its passes:
    the denoising steps, the decode, the rest at the floor), ``setup_s`` (inside the stage, neither), ``mp4_s`` (the
    decode's MP4 encode left after the last frame), the denoise steps' detail (``steps``: None elsewhere or without
    step timings) and ``note``."""

    load_s: float
    compute_s: float
    setup_s: float
    mp4_s: float
    steps: StepPrediction | None
    note: str


def load_seconds(profile: DeviceProfile, stage: str, load: StageLoad, cached: float | None = None) -> tuple[float, str]:
    """The load of ``stage``'s weights and where the figure comes from: warm, or bounded by the disk for the
    ``1 - cached`` of its bytes not in the page cache (``cached`` None: assumed warm)."""
    seconds, note = _warm_load_seconds(profile, stage, load)
    if cached is None or cached >= 1.0 or not load.read:
        return seconds, note
    # The disk and the loader's own work (quantizing, copying) overlap: a cold load takes about as long as the slower
    # of the two. What the previous stage's readahead (``streaming.readahead``) warms is not credited: an upper
    # bound (call 8's first W1 run: 33.9 GB from the disk, load 21.3 s; this gives 22.1 s).
    disk = load.read * ((1.0 - cached) / profile.file_read_cold_gbps + cached / profile.file_read_warm_gbps) / GB
    if disk <= seconds:
        return seconds, note
    return disk, (f"load: {100 * (1 - cached):.0f}% of its {load.read / GB:.1f} GB not in the page cache, read at "
                  f"the cold rate ({profile.file_read_cold_gbps:.3g} GB/s; warm: {seconds:.1f} s)")  # fmt: skip


def pinning_seconds(lt: LoadTimings, streamed_device: int, resident_load_s: float) -> float:
    """What streaming ``streamed_device`` bytes from pinned memory adds to a load: each block packed (``pin_gbps``),
    the streaming's fixed cost, and the part of making the pinned buffer (``populate_gbps``, done on a thread while
    the resident weights load for ``resident_load_s``) that outlasts that load. 0 when nothing streams or the
    profile never measured pinning."""
    if not streamed_device or not lt.pin_gbps:
        return 0.0
    made = streamed_device / (lt.populate_gbps * GB) if lt.populate_gbps else 0.0
    return streamed_device / (lt.pin_gbps * GB) + lt.stream_fixed_s + max(0.0, made - resident_load_s)


def _warm_load_seconds(profile: DeviceProfile, stage: str, load: StageLoad) -> tuple[float, str]:
    lt = profile.timings.load
    read = load.read
    if lt is None:
        return read / (profile.file_read_warm_gbps * GB), "load: file bytes at the warm read rate (no load timings)"
    rate = lt.quantized_gbps if load.quantized else lt.bf16_gbps
    if stage in TRANSFORMER_STAGES:  # the fixed part was measured whole: its bytes are inside it
        seconds = lt.transformer_fixed_s + (load.blocks_read + load.streamed_read) / (rate * GB)
        pinned = pinning_seconds(lt, load.streamed_device, lt.transformer_fixed_s + load.blocks_read / (rate * GB))
        return seconds + pinned, "load: the transformer's fixed part + blocks at the measured loader rate" + (
            " + pinning" if pinned else "")  # fmt: skip
    if stage == "text_encode" and lt.gemma_s is not None and lt.gemma_bytes:
        # Measured whole by calibrate on its Gemma folder: scaled by the bytes this run's load reads.
        per_byte = lt.gemma_s / lt.gemma_bytes
        resident = (load.fixed_read + load.blocks_read) * per_byte
        seconds = resident + load.streamed_read * per_byte + pinning_seconds(lt, load.streamed_device, resident)
        return seconds, "load: Gemma as calibrate loaded it with the run's loader, scaled by file bytes"
    if stage == "text_encode":  # Gemma's layers take the transformer blocks' path; the rest loads as stored
        resident = load.blocks_read / (rate * GB) + load.fixed_read / (lt.bf16_gbps * GB)
        seconds = resident + load.streamed_read / (rate * GB) + pinning_seconds(lt, load.streamed_device, resident)
        return seconds, "load: Gemma's layers at the transformer blocks' loader rate, the rest as stored"
    measured = {"embeddings": (lt.embeddings_s, lt.embeddings_bytes), "decode": (lt.decoders_s, lt.decoders_bytes)}
    seconds, nbytes = measured.get(stage, (None, None))
    if seconds is not None and nbytes:
        return seconds * read / nbytes, "load: measured with the run's loaders on the calibrated checkpoint"
    return read / (lt.bf16_gbps * GB), "load: file bytes at the measured as-stored loader rate"


def mp4_seconds(profile: DeviceProfile, request: PlanRequest) -> float:
    """The MP4 encode of the request's frames and audio (all after an untiled decode; a tiled one hides part)."""
    e = profile.timings.encode
    if e is None:
        return 0.0
    width, height = request.width, request.height
    frames = request.num_frames
    return frames * max(0.0, e.frame.at(width * height)) + frames / request.frame_rate * e.audio_s_per_s


def stage_time(profile: DeviceProfile, request: PlanRequest, stage: str, load: StageLoad, flops: FlopCount,
               floor_s: float, steps: int, copy_s: float, resident: int, slots: int, shape: DenoiseShape | None,
               tier: str) -> StageTime:  # fmt: skip
    """Every time part of one stage. ``floor_s``: one pass at the floor (max of compute and copies); ``copy_s``: one
    streamed block's copy (denoise); ``resident``/``slots``: its residency; ``tier``: where streamed blocks wait."""
    cached = request.gemma_cached if stage == "text_encode" else request.checkpoint_cached
    load_s, note = load_seconds(profile, stage, load, cached)
    notes = [note]
    compute, setup, mp4, steps_pred = steps * max(floor_s, 0.0), 0.0, 0.0, None
    step_t = profile.timings.step
    if shape is not None and step_t is not None:
        steps_pred = predict_steps(profile, request.precision, shape, steps, resident, slots, copy_s,
                                   request.cuda_graph, tier)  # fmt: skip
        if steps_pred is not None:
            compute = steps_pred.seconds
            setup += step_t.backend_choice_s
            notes.append(f"steps: {steps_pred.note}")
    lt = profile.timings.load
    # The text stage's two parts, Gemma's encode and the connectors' pass, as calibrate measured their first runs
    # after their loads (cuBLAS's plans and the allocator's growth included, which the floor leaves out). Two
    # prompts, CFG's; the context is always 1024 tokens, so one prompt takes no longer.
    first = {"text_encode": lt.gemma_encode_s, "embeddings": lt.embeddings_first_s}.get(stage) if lt else None
    if first is not None and first > compute:
        compute = first
        notes.append("compute: its first run as calibrate measured it after its load")
    if stage in TRANSFORMER_STAGES and tier == "pinned" and lt is not None and lt.release_gbps:
        setup += load.streamed_device / (lt.release_gbps * GB)
        notes.append("pinned copy released at the stage's end")
    if stage == "decode":
        d = profile.timings.decode
        if d is not None:
            compute = flops.conv / (d.decoder_tflops * 1e12) + d.first_call_s
            notes.append("decode: the whole decoder's measured rate + its first call at new shapes")
        mp4 = mp4_seconds(profile, request)
        if profile.timings.encode is not None:
            notes.append(f"MP4: {profile.timings.encode.encoder} on noise frames (an upper bound), after the decode")
    return StageTime(load_s, compute, setup, mp4, steps_pred, "; ".join(notes))
