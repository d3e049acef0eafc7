"""What a device profile knows about a run's time beyond its rates: measured by ``ltx2-edge calibrate`` with the run's
own code (``calibrate/block_timing.py``, ``load_rates.py``, ``encode_rate.py``, ``startup.py``), never fitted to runs.

The rates (``DeviceProfile``'s fields) price the FLOPs and bytes; these price what FLOPs and bytes leave out:
- ``StepTimings``: one denoising step over its FLOP floor. Per transformer block, the non-GEMM work (norms,
  modulation, RoPE, activation quantization, residuals: memory-bound, about linear in the rows) as a line in rows
  (guidance batch x (video + audio tokens)), eager and CUDA-graphed; an eager block's host launch floor; the
  step's work outside the blocks; step 0's extra at new shapes and the graph capture, as lines in blocks.
- ``LoadTimings``: loading weights warm (the page cache): the transformer's 8-bit loader per file byte, its fixed
  part, the extra of packing a streamed block into pinned host memory and of releasing it; the decoders' and the
  connectors' loads as measured with the run's loaders on the checkpoint calibrate was given.
- ``DecodeTimings``: the video decoder's whole forward (not only its convolutions) and its first call's extra.
- ``EncodeTimings``: the MP4 encoder on noise frames (an upper bound: real footage encodes faster).
- ``StartupTimings``: a fresh interpreter's imports, CUDA initialisation, the run's setup, and its exit.

A ``None`` section was not measured (an older profile, a CPU, no checkpoint given): the planner then leaves that
term out, or falls back to bytes over rates, and its note says which. Pure data; never imports torch.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Line:
    """``at_zero + per_unit * x``: a time that grows linearly in rows, blocks or pixels."""

    at_zero: float
    per_unit: float

    def at(self, x: float) -> float:
        """The line's value at ``x``."""
        return self.at_zero + self.per_unit * x

    @classmethod
    def through(cls, x0: float, y0: float, x1: float, y1: float) -> Line:
        """The line through two measured points (``x0 != x1``)."""
        slope = (y1 - y0) / (x1 - x0)
        return cls(y0 - slope * x0, slope)


@dataclass(frozen=True)
class StepTimings:
    """A denoising step beyond its FLOP floor, measured on a mini transformer of the checkpoint's width.

    ``*_block``: seconds one block takes over its FLOP floor, a line in rows; ``*_fixed``: seconds per step outside
    the blocks (the rest of the forward, guidance and the Euler step) over their floor, a line in rows. Eager
    blocks compute their text K/V every step (as streamed runs do); graphed ones replay with text K/V computed
    once (``accel.step_invariants``). ``launch_block_s``: an eager block never takes less (Python and kernel
    launches). ``*_first_step``: step 0's extra over a steady eager step (new shapes: cuBLAS/Triton plans, the
    allocator's first growth, the step invariants), a line in blocks. ``capture``: step 1's extra in a graphed run
    over one eager forward (its warm-up) plus one replay, a line in blocks. ``backend_choice_s``: timing the SDPA
    backends at a run's shapes (once per denoise stage). ``rows``: where it was measured. Graph fields are None
    where no CUDA graph can run (a CPU). ``streamed_block_s``: what a block streamed from pinned memory takes over
    an eager resident one when its copy is already done (its hooks, their waits and events): measured
    with 2 of 4 blocks streamed; None where not measured (the planner then adds nothing).
    """

    eager_block: Line
    eager_fixed: Line
    launch_block_s: float
    eager_first_step: Line
    graph_block: Line | None = None
    graph_fixed: Line | None = None
    graph_first_step: Line | None = None
    capture: Line | None = None
    backend_choice_s: float = 0.0
    rows: tuple[int, ...] = ()
    how: str = ""
    streamed_block_s: float | None = None


@dataclass(frozen=True)
class LoadTimings:
    """Loading weights from the page cache with the run's loaders.

    ``quantized_gbps``: file bytes per second of transformer blocks through the 8-bit loader (read, device copy,
    per-channel quantization); ``bf16_gbps``: file bytes per second of tensors loaded as they are (cast on the
    device); ``transformer_fixed_s``: the transformer's load beyond its blocks (built on meta, the non-block tensors);
    ``pin_gbps``: device bytes per second a streamed block adds when it is packed into pinned host memory (its
    copy back, the pinning); ``stream_fixed_s``: what streaming from pinned memory adds once (its setup, a
    ``gc.collect``); ``release_gbps``: pinned bytes per second freed at the stage's end (None: not measured).
    ``populate_gbps``: bytes per second a pinned buffer of a run's size is made at (its fresh pages faulted in by
    threads, then registered: ``streaming.host_io``), which happens while the resident weights load, so only what
    outlasts that load counts (None: not measured, counted inside ``pin_gbps`` as before).
    ``decoders_s``/``decoders_bytes`` and ``embeddings_s``/``embeddings_bytes``: those stages' loads as measured on the
    checkpoint calibrate read, and the file bytes they read (None: no checkpoint was given).
    ``gemma_s``/``gemma_bytes``: Gemma's language model loaded whole from the folder calibrate was given, and its
    file bytes; ``gemma_encode_s``: its first encode of two prompts after that load (None: no Gemma folder, or no
    room to load it whole). ``embeddings_first_s``: the embeddings processor's first pass over those two prompts,
    after its load (None: not measured).
    """

    quantized_gbps: float
    bf16_gbps: float
    transformer_fixed_s: float
    pin_gbps: float | None = None
    stream_fixed_s: float = 0.0
    release_gbps: float | None = None
    populate_gbps: float | None = None
    decoders_s: float | None = None
    decoders_bytes: int | None = None
    embeddings_s: float | None = None
    embeddings_bytes: int | None = None
    gemma_s: float | None = None
    gemma_bytes: int | None = None
    gemma_encode_s: float | None = None
    embeddings_first_s: float | None = None
    how: str = ""


@dataclass(frozen=True)
class DecodeTimings:
    """The video VAE decoder: ``decoder_tflops`` its convolution FLOPs over the whole forward's steady seconds;
    ``first_call_s`` the extra of a first call at new shapes (convolution plans, the allocator's growth)."""

    decoder_tflops: float
    first_call_s: float
    how: str = ""


@dataclass(frozen=True)
class EncodeTimings:
    """The MP4 writer: ``frame`` seconds per video frame, a line in pixels per frame; ``audio_s_per_s`` seconds of
    AAC encoding per second of audio. Measured on random (noise) frames: real footage encodes faster, so this is an
    upper bound."""

    encoder: str
    frame: Line
    audio_s_per_s: float
    how: str = ""


@dataclass(frozen=True)
class StartupTimings:
    """A fresh ``ltx2-edge`` process before its first stage and after its last: ``import_s`` (Python, torch,
    transformers, ltx-core, ltx2-edge's engine), ``cuda_init_s`` (the CUDA context), ``setup_s`` (the engine's
    setup: file checks, tokenizer, budget; None when calibrate was not given the model files) and ``exit_s``."""

    import_s: float
    cuda_init_s: float
    exit_s: float
    setup_s: float | None = None
    how: str = ""

    @property
    def before_first_stage_s(self) -> float:
        """Seconds from process start to the first stage that these figures cover."""
        return self.import_s + self.cuda_init_s + (self.setup_s or 0.0)


# What the planner uses in place of each section a profile has not measured (the plan prints these; never a figure
# borrowed from another device).
STAND_INS: dict[str, str] = {
    "step": "denoise steps at the FLOP floor, max(compute, copy) each",
    "load": "loads at the warm checkpoint read rate",
    "decode": "the decode at its convolutions' FLOP floor",
    "encode": "the MP4 encode left out (0 s)",
    "startup": "start-up and exit left out (0 s)",
}


@dataclass(frozen=True)
class Timings:
    """Every measured time model of a profile; each section None when not measured."""

    step: StepTimings | None = None
    load: LoadTimings | None = None
    decode: DecodeTimings | None = None
    encode: EncodeTimings | None = None
    startup: StartupTimings | None = None

    def missing(self) -> list[str]:
        """The sections not measured, by name."""
        return [name for name in ("step", "load", "decode", "encode", "startup") if getattr(self, name) is None]
