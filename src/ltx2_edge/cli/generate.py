"""The run commands (generate, demo, plan): parsed flags -> request and generator -> the report, printed.

``_generator`` is the one place the CLI builds the engine from its flags; ``_request`` the one place it builds a
``GenerationRequest``. The engine is imported inside these functions, so that ``--help`` never imports torch.
This module never decides anything about a run (the engine plans) and never catches errors (``cli.main`` does).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from ltx2_edge.checkpoint.names import UPSAMPLER_FILE
from ltx2_edge.cli.parser import parse_image_arg, parse_lora_arg
from ltx2_edge.errors import RequestError

if TYPE_CHECKING:
    from ltx2_edge.engine.settings import RunSettings
    from ltx2_edge.parallel.ranks import RankLayout
    from ltx2_edge.pipeline import Generator
    from ltx2_edge.request import GenerationRequest


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


def demo_cache_dir() -> Path:
    """Where the demo's tiny model lives: $XDG_CACHE_HOME/ltx2-edge (default ~/.cache/ltx2-edge)."""
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "ltx2-edge" / "tiny-v1"


def _ensure_demo_model(quiet: bool) -> Path:
    from ltx2_edge.synth.generator import make_checkpoint

    root = demo_cache_dir()
    files = (root / "ltx2.safetensors", root / "gemma" / "config.json", root / UPSAMPLER_FILE)
    if not all(f.is_file() for f in files):
        if not quiet:
            print(f"[demo] making the tiny random-weight model in {root} (once)", file=sys.stderr)
        root.mkdir(parents=True, exist_ok=True)
        make_checkpoint("tiny", root, seed=0, overwrite=True)
    return root


def _settings(args: argparse.Namespace) -> RunSettings:
    from ltx2_edge.engine.settings import RunSettings  # noqa: F811  (imported lazily: the CLI starts fast)
    from ltx2_edge.plan.budget import parse_size

    host = args.host_budget if args.host_budget == "auto" else parse_size(args.host_budget, "host-budget")
    return RunSettings(
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
        video_encoder=args.video_encoder,
        prequantized=args.prequantized,
        spatial_upsampler_path=args.spatial_upsampler_path,
    )


def _generator(args: argparse.Namespace, checkpoint: Path, gemma_root: Path) -> Generator:
    from ltx2_edge.pipeline import Generator  # noqa: F811  (imported lazily: the CLI starts fast)
    from ltx2_edge.progress import Progress

    return Generator(checkpoint, gemma_root, _settings(args), Progress(quiet=args.quiet))


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


def _cfg_layout(args: argparse.Namespace, request: GenerationRequest) -> RankLayout:
    """``--cfg-parallel`` checked against the request and the GPUs visible (before any rank starts)."""
    import torch

    from ltx2_edge.engine.run_plan import guidance_for
    from ltx2_edge.parallel.ranks import rank_layout

    passes = guidance_for(request, "batched").passes()
    gpus = torch.cuda.device_count() if args.device != "cpu" else 0
    return rank_layout(args.cfg_parallel, request.pipeline, passes, args.device, gpus)


def _run_plan(args: argparse.Namespace) -> int:
    from ltx2_edge.plan.plan_text import format_plan

    request = _request(args)
    layout = _cfg_layout(args, request) if args.cfg_parallel is not None else None
    generator = _generator(args, _checkpoint(args), args.gemma_root)
    if layout is None:
        plan = generator.prepare(request)  # the same checks as generate, before any weight
    else:  # one rank's plan, on one GPU: its share of the passes
        from ltx2_edge.engine.run_plan import prepare_run

        plan = prepare_run(generator.setup, generator.text.tokenizer, request, guidance_ranks=layout.ranks)
        print(layout.describe() + "; the plan below is each rank's, on its own device")
    print(format_plan(plan.memory))
    for line in plan.forwards_lines():
        print(line)
    print("quantization: " + "; ".join(generator.setup.policy.describe()[:1]))
    return 0


def _run_generate(args: argparse.Namespace, checkpoint: Path, gemma_root: Path) -> int:
    from ltx2_edge.cli.process_times import ProcessTimes, prediction_line

    times = ProcessTimes()  # the report's stages start late in a fresh process: it records what came before
    import ltx2_edge.pipeline  # noqa: F401  (timed on its own: torch, transformers, ltx-core)
    from ltx2_edge.atomic import install_signal_cleanup
    from ltx2_edge.memory.heap import freeze_long_lived

    times.mark("engine_imported")
    if not args.prompt:
        raise RequestError("prompt", args.prompt, "a non-empty text (--prompt)")
    if args.output_path is None:
        raise RequestError("output_path", None, "a path ending in .mp4 (--output-path)")
    request = _request(args)
    if getattr(args, "cfg_parallel", None) is not None:  # demo has no --cfg-parallel
        return _run_cfg_parallel(args, request, checkpoint, gemma_root)
    generator = _generator(args, checkpoint, gemma_root)
    freeze_long_lived()  # this process's imports and setup outlive the run: later collections skip them
    times.mark("generator_ready")
    with install_signal_cleanup():
        result = generator.generate(request, args.output_path, overwrite=args.overwrite)
    times.mark("generated")
    # Written again (atomically) with the process's own marks, which exist only once the run has returned.
    process = result.report.extra["process"] = times.record(result.report.total_seconds)
    try:
        result.report.write(result.report_path)
    except OSError as exc:  # the run's own report is already in place, whole; only these marks are missing from it
        print(f"note: the process times were not added to {result.report_path}: {exc}", file=sys.stderr)
    print(result.report.table())
    plan = result.report.extra.get("plan")
    if plan is not None:
        den = next((s for s in result.report.stages if s.stage == "denoise"), None)
        steps = den.details.get("steps_seconds") if den is not None else None
        print(prediction_line(plan, process, result.report.total_seconds, steps))
    print(f"wrote {result.output_path} and {result.report_path}")
    return 0


def _run_cfg_parallel(args: argparse.Namespace, request: GenerationRequest, checkpoint: Path, gemma_root: Path) -> int:
    from ltx2_edge.parallel.launch import run_cfg_parallel
    from ltx2_edge.parallel.summary import summary_lines
    from ltx2_edge.parallel.worker import CfgJob
    from ltx2_edge.video_output import check_video_output

    layout = _cfg_layout(args, request)
    check_video_output(args.output_path, args.overwrite)  # before any rank starts (rank 0 checks it fully again)
    job = CfgJob(checkpoint, gemma_root, _settings(args), request, args.output_path, args.overwrite, args.quiet)
    summaries = run_cfg_parallel(job, layout)
    for line in summary_lines(summaries):
        print(line)
    print(f"wrote {summaries[0]['output_path']} and {summaries[0]['report_path']} (rank 0)")
    return 0


def run_demo(args: argparse.Namespace) -> int:
    """``demo``: the tiny random-weight model (made once in ``demo_cache_dir()``), then ``generate`` on it."""
    root = _ensure_demo_model(args.quiet)
    if args.spatial_upsampler_path is None:
        args.spatial_upsampler_path = root / UPSAMPLER_FILE
    return _run_generate(args, root / "ltx2.safetensors", root / "gemma")
