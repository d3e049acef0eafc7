"""The ``ltx2-edge`` command: argparse -> request -> pipeline -> report. Errors are one line and exit 2.

Flag names follow ``ltx-pipelines`` where they exist. Every input is validated before any weight is read.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from ltx2_edge import __version__
from ltx2_edge.checkpoint.generator import PARTS, UPSAMPLER_FILE
from ltx2_edge.errors import Ltx2EdgeError, RequestError
from ltx2_edge.guidance import GUIDANCE_PRESETS
from ltx2_edge.memory.allocator import ALLOCATOR_MODES
from ltx2_edge.models.lora import LORA_HELP, parse_lora_arg
from ltx2_edge.request import DEFAULT_SEED, DEFAULT_STEPS, PIPELINES
from ltx2_edge.stages.conditioning import IMAGE_HELP, parse_image_arg

if TYPE_CHECKING:
    from ltx2_edge.pipeline import Generator
    from ltx2_edge.request import GenerationRequest

DEMO_PROMPT = "A red kite dances over a windy beach at sunset while waves crash and gulls call."


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit 2, no usage dump
        self.exit(2, f"ltx2-edge: error: {message} (see --help)\n")


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


def _add_lora_arg(p: argparse.ArgumentParser) -> None:
    # As ltx-pipelines: 1 or 2 values per use (checked by parse_lora_arg), repeatable.
    p.add_argument("--lora", dest="loras", nargs="+", action="append", default=[], metavar=("PATH", "STRENGTH"),
                   help=LORA_HELP)  # fmt: skip


def _add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint-path", type=Path, help="official LTX-2 19B .safetensors file")
    p.add_argument("--distilled-checkpoint-path", type=Path,
                   help="the distilled LTX-2 19B .safetensors, for --pipeline distilled or distilled-one-stage "
                   "(instead of --checkpoint-path)")  # fmt: skip
    p.add_argument("--gemma-root", type=Path, required=True, help="Gemma 3 folder (tokenizer + model*.safetensors)")


def _checkpoint(args: argparse.Namespace) -> Path:
    """The transformer file: --checkpoint-path, or --distilled-checkpoint-path for the distilled pipelines."""
    distilled = args.pipeline in ("distilled", "distilled-one-stage")
    given = args.distilled_checkpoint_path
    if given is not None and not distilled:
        raise RequestError("distilled-checkpoint-path", str(given), f"unset for --pipeline {args.pipeline} (only the "
                           "distilled pipelines take it); give the model with --checkpoint-path")  # fmt: skip
    if given is not None and args.checkpoint_path is not None and args.checkpoint_path != given:
        raise RequestError("checkpoint-path", str(args.checkpoint_path), "unset when --distilled-checkpoint-path "
                           "names the model (one transformer file per run)")  # fmt: skip
    path = given if given is not None else args.checkpoint_path
    if path is None:
        which = "--distilled-checkpoint-path (or --checkpoint-path)" if distilled else "--checkpoint-path"
        raise RequestError("checkpoint-path", None, f"the LTX-2 19B .safetensors file: {which}")
    return path


def build_parser() -> argparse.ArgumentParser:
    """The whole CLI (also used to render --help in the docs)."""
    parser = _Parser(prog="ltx2-edge", description="LTX-2 19B text-to-video+audio inside a memory budget.")
    parser.add_argument("--version", action="version", version=f"ltx2-edge {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    gen = sub.add_parser("generate", help="prompt -> MP4 with synchronized sound")
    _add_model_args(gen)
    _add_clip_args(gen)

    demo = sub.add_parser("demo", help="make the tiny random-weight model once, then generate a clip from it")
    _add_clip_args(demo)
    demo.set_defaults(prompt=DEMO_PROMPT, output_path=Path("ltx2-edge-demo.mp4"))

    pl = sub.add_parser("plan", help="print the memory plan of a generate command without loading any weight")
    _add_model_args(pl)
    _add_clip_args(pl)
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
    qz.add_argument("--out", type=Path, required=True, help="output .safetensors (or folder, with --gemma-root)")
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
    return parser


def _run_quantize(args: argparse.Namespace) -> int:
    from ltx2_edge.quant.convert import quantize_checkpoint, quantize_gemma_folder
    from ltx2_edge.quant.policy import QuantPolicy

    if (args.checkpoint_path is None) == (args.gemma_root is None):
        raise RequestError("checkpoint_path", None, "exactly one of --checkpoint-path or --gemma-root")
    policy = QuantPolicy.from_flags(args.to, tuple(args.keep_bf16), args.quantize_all)
    loras = tuple(parse_lora_arg(values) for values in args.loras)
    if loras and args.gemma_root is not None:
        raise RequestError("lora", str(loras[0].path), "only with --checkpoint-path (LoRAs adapt the transformer)")
    if args.checkpoint_path is not None:
        quantize_checkpoint(args.checkpoint_path, args.out, args.to, policy, device=args.device,
                            overwrite=args.overwrite, loras=loras)  # fmt: skip
    else:
        quantize_gemma_folder(args.gemma_root, args.out, args.to, policy, device=args.device)
    fused = "; LoRAs fused first: " + ", ".join(f"{s.path} x{s.strength:g}" for s in loras) if loras else ""
    print(f"wrote {args.out} ({args.to}; policy: {policy.summary()}{fused})")
    return 0


def demo_cache_dir() -> Path:
    """Where the demo's tiny model lives: $XDG_CACHE_HOME/ltx2-edge (default ~/.cache/ltx2-edge)."""
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "ltx2-edge" / "tiny-v1"


def _ensure_demo_model(quiet: bool) -> Path:
    from ltx2_edge.checkpoint.generator import make_checkpoint

    root = demo_cache_dir()
    files = (root / "ltx2.safetensors", root / "gemma" / "config.json", root / UPSAMPLER_FILE)
    if not all(f.is_file() for f in files):
        if not quiet:
            print(f"[demo] making the tiny random-weight model in {root} (once)", file=sys.stderr)
        root.mkdir(parents=True, exist_ok=True)
        make_checkpoint("tiny", root, seed=0, overwrite=True)
    return root


def _generator(args: argparse.Namespace, checkpoint: Path, gemma_root: Path) -> Generator:
    from ltx2_edge.memory.budget import parse_size
    from ltx2_edge.pipeline import Generator  # noqa: F811  (imported lazily: the CLI starts fast)
    from ltx2_edge.progress import Progress

    host = args.host_budget if args.host_budget == "auto" else parse_size(args.host_budget, "host-budget")
    return Generator(
        checkpoint,
        gemma_root,
        device=args.device,
        budget=parse_size(args.budget, "budget"),
        host_budget=host,
        unified=args.unified,
        prefetch_depth=args.prefetch_depth,
        keep_resident=args.keep_resident,
        quantization=args.quantization,
        keep_bf16=tuple(args.keep_bf16),
        quantize_all=args.quantize_all,
        compile=args.compile,
        cuda_graph=args.cuda_graph,
        cuda_allocator=args.cuda_allocator,
        progress=Progress(quiet=args.quiet),
        spatial_upsampler_path=args.spatial_upsampler_path,
    )


def _request(args: argparse.Namespace) -> GenerationRequest:
    from ltx2_edge.request import GenerationRequest  # noqa: F811

    return GenerationRequest(
        prompt=args.prompt,
        negative_prompt=args.negative_prompt,
        width=args.width,
        height=args.height,
        num_frames=args.num_frames,
        frame_rate=args.frame_rate,
        num_inference_steps=args.num_inference_steps,
        seed=args.seed,
        guidance=args.guidance,
        audio_channels=args.audio_channels,
        images=tuple(parse_image_arg(values, i) for i, values in enumerate(args.images)),
        pipeline=args.pipeline,
        loras=tuple(parse_lora_arg(values) for values in args.loras),
        distilled_lora=parse_lora_arg(args.distilled_lora, "distilled-lora") if args.distilled_lora else None,
    )


def _run_plan(args: argparse.Namespace) -> int:
    from ltx2_edge.memory.plan_text import format_plan

    request = _request(args)
    generator = _generator(args, _checkpoint(args), args.gemma_root)
    plan = generator.check(request, None, overwrite=False)  # the plan, after the same checks as generate
    print(format_plan(plan))
    for run in generator.passes(request):
        choice = generator.accel(run, plan)
        extra = f" (+{choice.extra_peak_bytes / 2**30:.2f} GiB on its peak)" if choice.extra_peak_bytes else ""
        print(f"{run.stage} forwards: " + "; ".join(choice.settings.reasons) + extra + "; SDPA kernel measured at "
              "run time")  # fmt: skip
    print("quantization: " + "; ".join(generator.policy.describe()[:1]))
    return 0


def _run_generate(args: argparse.Namespace, checkpoint: Path, gemma_root: Path) -> int:
    from ltx2_edge.atomic import install_signal_cleanup

    if not args.prompt:
        raise RequestError("prompt", args.prompt, "a non-empty text (--prompt)")
    if args.output_path is None:
        raise RequestError("output_path", None, "a path ending in .mp4 (--output-path)")
    request = _request(args)
    generator = _generator(args, checkpoint, gemma_root)
    with install_signal_cleanup():
        result = generator.generate(request, args.output_path, overwrite=args.overwrite)
    print(result.report.table())
    print(f"wrote {result.output_path} and {result.report_path}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``ltx2-edge`` command."""
    args = build_parser().parse_args(argv)
    try:
        if args.command == "generate":
            return _run_generate(args, _checkpoint(args), args.gemma_root)
        if args.command == "demo":
            root = _ensure_demo_model(args.quiet)
            if args.spatial_upsampler_path is None:
                args.spatial_upsampler_path = root / UPSAMPLER_FILE
            return _run_generate(args, root / "ltx2.safetensors", root / "gemma")
        if args.command == "plan":
            return _run_plan(args)
        if args.command == "quantize":
            return _run_quantize(args)
        if args.command == "make-lora":
            from ltx2_edge.checkpoint.lora_writer import make_lora

            print(make_lora(args.size, args.out, args.rank, seed=args.seed, overwrite=args.overwrite))
            return 0
        if args.command == "make-checkpoint":
            from ltx2_edge.checkpoint.generator import make_checkpoint

            parts = tuple(p.strip() for p in args.parts.split(",") if p.strip())
            bad = [p for p in parts if p not in PARTS]
            if bad or not parts:
                raise RequestError("parts", args.parts, f"a comma list of {', '.join(PARTS)}")
            paths = make_checkpoint(
                args.size,
                args.out,
                seed=args.seed,
                device=args.device,
                overwrite=args.overwrite,
                parts=parts,
                gemma_dir=args.gemma_dir,
            )
            print(paths)
            return 0
    except Ltx2EdgeError as exc:
        print(f"ltx2-edge: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("ltx2-edge: interrupted; no output was written", file=sys.stderr)
        return 130
    raise AssertionError(f"unhandled command {args.command}")  # argparse's required=True makes this unreachable


if __name__ == "__main__":
    sys.exit(main())
