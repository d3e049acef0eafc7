"""Every ``ltx2-edge`` argument parser and help text, and the parsing of the multi-value flags (--lora, --image).

Imports nothing heavy: building the parser (``--help``, ``generate --help``) must not import torch or ltx-core
(``tests/test_layout.py`` checks it), so the choices and defaults come from torch-free modules (``inputs``,
``synth.parts``, ``memory.allocator``). This module never builds a request, never runs anything and never
validates beyond the shape of a flag's values (ranges are ``request``'s and ``stages.conditioning``'s).
Flag names follow ``ltx-pipelines`` where they exist.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from ltx2_edge import __version__
from ltx2_edge.cli.calibrate import add_calibrate_parser
from ltx2_edge.cli.serve import add_commands as add_service_commands
from ltx2_edge.errors import RequestError
from ltx2_edge.inputs import (
    DEFAULT_IMAGE_CRF,
    DEFAULT_LORA_STRENGTH,
    DEFAULT_SEED,
    DEFAULT_STEPS,
    GUIDANCE_PRESETS,
    IMAGE_FIT_RULE,
    MAX_CRF,
    PIPELINES,
    ImageSpec,
    LoraSpec,
)
from ltx2_edge.memory.allocator import ALLOCATOR_MODES
from ltx2_edge.mp4.video_encoders import VIDEO_ENCODER_CHOICES, VIDEO_ENCODER_HELP
from ltx2_edge.synth.parts import PARTS

DEMO_PROMPT = "A red kite dances over a windy beach at sunset while waves crash and gulls call."
LORA_HELP = (
    "LoRA file (official format) and optional strength (default 1.0), fused into the transformer's weights at "
    "load, before 8-bit quantization; repeatable. Example: --lora a.safetensors 0.8 --lora b.safetensors. "
    "Blocks streaming from the file cannot fuse at run time: bake LoRAs in with `ltx2-edge quantize --lora`"
)
IMAGE_HELP = (
    "Condition on an image: PATH FRAME_IDX STRENGTH [CRF]; repeat for keyframes. FRAME_IDX 0 replaces the first "
    "frame, any other frame (up to num_frames - 1) adds a keyframe there; STRENGTH in [0, 1] (1: the frame keeps "
    f"the image); CRF 0-{MAX_CRF}. " + IMAGE_FIT_RULE
)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit 2, no usage dump
        self.exit(2, f"ltx2-edge: error: {message} (see --help)\n")


def parse_lora_arg(values: Sequence[str], flag: str = "lora") -> LoraSpec:
    """``--lora PATH [STRENGTH]`` (or ``--distilled-lora``, named by ``flag``) as ltx-pipelines parses it: 1 or 2
    values, strength 1.0 when left out."""
    if not 1 <= len(values) <= 2:
        raise RequestError(f"--{flag}", " ".join(values), f"PATH and an optional STRENGTH (--{flag} FILE 0.8)")
    try:
        strength = float(values[1]) if len(values) == 2 else DEFAULT_LORA_STRENGTH
    except ValueError:
        raise RequestError(f"--{flag}", " ".join(values), f"a number as STRENGTH (--{flag} FILE 0.8)") from None
    return LoraSpec(Path(values[0]), strength)


def parse_image_arg(values: Sequence[str], index: int = 0) -> ImageSpec:
    """``PATH FRAME_IDX STRENGTH [CRF]`` as given on the command line -> ``ImageSpec`` (ranges are checked by
    ``stages.conditioning.validate_image_specs``)."""
    usage = f"for image {index + 1}, PATH FRAME_IDX STRENGTH [CRF], e.g. --image first.png 0 1.0"
    if len(values) not in (3, 4):
        raise RequestError("--image", " ".join(values), usage)
    try:
        frame_idx, strength = int(values[1]), float(values[2])
        crf = int(values[3]) if len(values) == 4 else DEFAULT_IMAGE_CRF
    except ValueError:
        raise RequestError("--image", " ".join(values), usage + " (FRAME_IDX and CRF integers)") from None
    return ImageSpec(Path(values[0]), frame_idx, strength, crf)


def _add_clip_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--prompt", help="what to generate (text; at most 1024 Gemma tokens)")
    p.add_argument(
        "--pipeline",
        choices=PIPELINES,
        default="one-stage",
        help="one-stage: guided, --num-inference-steps LTX2Scheduler steps (default); two-stage: one-stage at half "
        "the size, the latent upsampler x2 (--spatial-upsampler-path), then 3 distilled sigmas at full size with "
        "--distilled-lora fused; distilled: the distilled model's 8 sigmas at half the size, the upsampler, 3 "
        "sigmas at full size (--distilled-checkpoint-path); distilled-one-stage: the 8 sigmas at the target size, "
        "no upsampler. Unguided (one forward per step, no negative prompt): distilled pipelines and every stage 2. "
        "two-stage and distilled need width and height in multiples of 64",
    )
    p.add_argument(
        "--spatial-upsampler-path",
        type=Path,
        default=None,
        help="the latent upsampler x2 (ltx-2-spatial-upscaler-x2-1.0.safetensors) for two-stage and distilled",
    )
    p.add_argument(
        "--distilled-lora",
        nargs="+",
        default=None,
        metavar=("PATH", "STRENGTH"),
        help="two-stage only: the distilled LoRA fused into stage 2's weights (ltx-2-19b-distilled-lora-384"
        ".safetensors), strength default 1.0",
    )
    p.add_argument(
        "--negative-prompt",
        default=None,
        help="default: the official negative prompt (one-stage); distilled-one-stage runs no negative pass",
    )
    p.add_argument(
        "--image",
        dest="images",
        nargs="+",
        action="append",
        default=[],
        metavar="ARG",  # as ltx-pipelines: "--image ARG [ARG ...]"; the help names the 3 or 4 values
        help=IMAGE_HELP,
    )
    _add_lora_arg(p)
    p.add_argument("--width", type=int, default=512, help="multiple of 32; 64 for two-stage/distilled (default 512)")
    p.add_argument("--height", type=int, default=288, help="multiple of 32; 64 for two-stage/distilled (default 288)")
    p.add_argument("--num-frames", type=int, default=97, help="8k+1 frames (default 97 = 4 s at 24 fps)")
    p.add_argument("--frame-rate", type=float, default=24.0, help="frames per second (default 24)")
    p.add_argument(
        "--num-inference-steps",
        type=int,
        default=None,
        help=f"denoising steps (one-stage, two-stage's stage 1: default {DEFAULT_STEPS}; distilled pipelines: their "
        "fixed 8, leave unset)",
    )
    p.add_argument("--seed", type=int, default=DEFAULT_SEED, help=f"random seed (default {DEFAULT_SEED})")
    p.add_argument(
        "--guidance",
        choices=GUIDANCE_PRESETS,
        default=None,
        help="one-stage: cfg = CFG video 3.0 / audio 7.0, rescale 0.7 (default); full = official CFG + STG + "
        "modality. distilled-one-stage runs unguided: leave it unset",
    )
    p.add_argument("--audio-channels", type=int, choices=(1, 2), default=2, help="1 mono, 2 stereo (default)")
    p.add_argument("--output-path", type=Path, help="the MP4 to write (its report goes beside it as .report.json)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    p.add_argument("--device", default=None, help="cuda, cuda:1 or cpu (default: cuda if available)")
    p.add_argument(
        "--quantization",
        choices=("auto", "fp8", "int8", "bf16"),
        default="auto",
        help="8-bit Linear weights: auto = fp8 on GPUs with FP8 tensor cores (sm_89+), int8 elsewhere",
    )
    p.add_argument(
        "--prequantized",
        choices=("auto", "on", "off"),
        default="auto",
        help="read the 8-bit copies `ltx2-edge quantize` writes beside the checkpoint (NAME.fp8.safetensors) and "
        "the Gemma folder (FOLDER.fp8), int8 likewise: auto = when there and made from these files (default; a "
        "copy of another file is refused); on = refuse to run without them; off = read the originals",
    )
    p.add_argument(
        "--keep-bf16",
        action="append",
        default=[],
        metavar="PATTERN",
        help="also keep Linears matching PATTERN in bf16 (glob over module names; repeatable)",
    )
    p.add_argument(
        "--quantize-all",
        action="store_true",
        help="experiments: quantize the default keep-list too (A/V cross-attention, adaLN, ...)",
    )
    p.add_argument("--keep-resident", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--quiet", action="store_true", help="no progress lines (the report table still prints)")
    p.add_argument(
        "--budget",
        default="32GiB",
        help="memory budget, e.g. 32GiB, 24GB, 16g, or none (default 32GiB): device memory on a discrete "
        "GPU; the one pool (device + pinned + anonymous host) on Jetson or with --unified",
    )
    p.add_argument(
        "--host-budget",
        default="auto",
        help="discrete GPUs: cap on pinned + anonymous host memory (default: what the OS has free, "
        "minus a margin); not used with one pool",
    )
    p.add_argument(
        "--unified",
        action="store_true",
        help="apply the one-pool rule on a discrete GPU (rehearses Jetson Thor): blocks stream from the file",
    )
    p.add_argument("--prefetch-depth", type=int, default=2, help="streamed blocks copied ahead (>= 2, default 2)")
    p.add_argument(
        "--cuda-allocator",
        choices=ALLOCATOR_MODES,
        default="auto",
        help="PyTorch's CUDA allocator: auto = expandable segments on a discrete GPU (reserved memory, what the "
        "budget caps, then follows allocated memory) unless PYTORCH_CUDA_ALLOC_CONF is set; caching = default",
    )
    p.add_argument(
        "--compile",
        choices=("auto", "off", "on"),
        default="auto",
        help="compile the transformer block (fused elementwise work): auto = when the estimated saving beats the "
        "estimated compile time (CUDA, Triton, CFG guidance); on = always (error if it cannot); off = never. "
        "Compile time is its own report line; kernels are cached in ~/.cache/ltx2-edge/inductor",
    )
    p.add_argument(
        "--cuda-graph",
        choices=("auto", "off"),
        default="auto",
        help="replay each denoising forward as one CUDA graph when every block is resident (default auto)",
    )
    p.add_argument("--video-encoder", choices=VIDEO_ENCODER_CHOICES, default="libx264", help=VIDEO_ENCODER_HELP)


def _add_lora_arg(p: argparse.ArgumentParser) -> None:
    # As ltx-pipelines: 1 or 2 values per use (checked by parse_lora_arg), repeatable.
    p.add_argument("--lora", dest="loras", nargs="+", action="append", default=[], metavar=("PATH", "STRENGTH"),
                   help=LORA_HELP)  # fmt: skip


def _add_parallel_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--cfg-parallel",
        type=int,
        default=None,
        metavar="RANKS",
        help="split each step's guidance passes over RANKS GPUs of this host, one process each (rank r on cuda:r, "
        "NCCL; --device cpu: CPU processes over gloo, for testing): one-stage with 2+ passes only; --budget holds "
        "for each GPU; only rank 0 decodes and writes the MP4. Default: one process",
    )


def _add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint-path", type=Path, help="official LTX-2 19B .safetensors file")
    p.add_argument("--distilled-checkpoint-path", type=Path,
                   help="the distilled LTX-2 19B .safetensors, for --pipeline distilled or distilled-one-stage "
                   "(instead of --checkpoint-path)")  # fmt: skip
    p.add_argument("--gemma-root", type=Path, required=True, help="Gemma 3 folder (tokenizer + model*.safetensors)")


def build_parser() -> argparse.ArgumentParser:
    """The whole CLI (also used to render --help in the docs)."""
    parser = _Parser(prog="ltx2-edge", description="LTX-2 19B text-to-video+audio inside a memory budget.")
    parser.add_argument("--version", action="version", version=f"ltx2-edge {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    gen = sub.add_parser("generate", help="prompt -> MP4 with synchronized sound")
    _add_model_args(gen)
    _add_clip_args(gen)
    _add_parallel_args(gen)

    demo = sub.add_parser("demo", help="make the tiny random-weight model once, then generate a clip from it")
    _add_clip_args(demo)
    demo.set_defaults(prompt=DEMO_PROMPT, output_path=Path("ltx2-edge-demo.mp4"))

    pl = sub.add_parser("plan", help="print the memory plan of a generate command without loading any weight")
    _add_model_args(pl)
    _add_clip_args(pl)
    _add_parallel_args(pl)
    pl.set_defaults(prompt="(plan only)")

    mk = sub.add_parser("make-checkpoint", help="write a random-weight checkpoint in the official format")
    mk.add_argument("--size", choices=("tiny", "full"), required=True, help="tiny: CPU tests; full: 19B shapes")
    mk.add_argument("--out", type=Path, required=True, help="folder for ltx2.safetensors and gemma/")
    mk.add_argument("--seed", type=int, default=0)
    mk.add_argument("--device", default="cpu", help="where to generate the random tensors (cuda is faster)")
    mk.add_argument("--gemma-dir", type=Path, default=None, help="write the Gemma folder here instead of OUT/gemma")
    mk.add_argument("--parts", default=",".join(PARTS), help=f"comma list of {', '.join(PARTS)} (default all)")
    mk.add_argument("--overwrite", action="store_true")
    qz = sub.add_parser("quantize", help="write 8-bit weights + scales once (the policy goes into the metadata)")
    qz.add_argument("--checkpoint-path", type=Path, help="official LTX-2 .safetensors to convert")
    qz.add_argument("--gemma-root", type=Path, help="Gemma 3 folder to convert (its language-model Linears)")
    qz.add_argument("--to", choices=("fp8", "int8"), required=True, help="8-bit format of the quantized Linears")
    qz.add_argument("--out", type=Path, default=None,
                    help="output .safetensors (or folder, with --gemma-root); default: beside the input, where "
                    "generate looks for it (NAME.fp8.safetensors, FOLDER.fp8; int8 likewise); required with "
                    "--lora")  # fmt: skip
    qz.add_argument("--keep-bf16", action="append", default=[], metavar="PATTERN", help="extra layers kept in bf16")
    qz.add_argument("--quantize-all", action="store_true", help="quantize the default keep-list too")
    qz.add_argument("--device", default="cpu", help="where to quantize (cuda is faster)")
    _add_lora_arg(qz)
    qz.add_argument("--overwrite", action="store_true")
    ml = sub.add_parser("make-lora", help="write a random LoRA in the official format for a generated checkpoint")
    ml.add_argument("--size", choices=("tiny", "full"), required=True, help="the checkpoint size it adapts")
    ml.add_argument("--rank", type=int, default=4, help="LoRA rank (default 4)")
    ml.add_argument("--out", type=Path, required=True, help="the .safetensors file to write")
    ml.add_argument("--seed", type=int, default=0)
    ml.add_argument("--overwrite", action="store_true", help="replace a LoRA generated here before")
    add_service_commands(sub, _add_model_args, _add_clip_args)  # serve, submit: cli/serve.py
    add_calibrate_parser(sub)  # calibrate: cli/calibrate.py
    return parser
