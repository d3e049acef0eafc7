"""The file-making commands (quantize, make-checkpoint, make-lora): parsed flags -> files written -> one line.

Each imports its writer inside the function (``--help`` must not import torch). This module never generates
a clip and never catches errors (``cli.main`` does).
"""

from __future__ import annotations

import argparse

from ltx2_edge.cli.parser import parse_lora_arg
from ltx2_edge.errors import RequestError
from ltx2_edge.synth.parts import PARTS


def run_quantize(args: argparse.Namespace) -> int:
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


def run_make_lora(args: argparse.Namespace) -> int:
    """``make-lora``: a random LoRA for a generated checkpoint's size."""
    from ltx2_edge.synth.lora_writer import make_lora

    print(make_lora(args.size, args.out, args.rank, seed=args.seed, overwrite=args.overwrite))
    return 0


def run_make_checkpoint(args: argparse.Namespace) -> int:
    """``make-checkpoint``: random weights in the official format (the parts asked for)."""
    from ltx2_edge.synth.generator import make_checkpoint

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
