"""The file-making commands (quantize, make-checkpoint, make-lora): parsed flags -> files written -> one line.

Each checks its numbers, device and output path before anything is read or written (as ``generate`` does: the
output's folder must exist, an existing file needs ``--overwrite``, an output is never one of the inputs), then
imports its writer inside the function (``--help`` must not import torch). This module never generates a clip
and never catches errors (``cli.main`` does).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ltx2_edge.atomic import check_output_path
from ltx2_edge.cli.parser import parse_lora_arg
from ltx2_edge.errors import RequestError
from ltx2_edge.synth.parts import PARTS

MAX_LORA_RANK = 512  # the official distilled LoRA has rank 384; a full-size rank-512 LoRA is ~8 GB in memory


def _check_new_folder(path: Path, field: str) -> None:
    """A folder the command creates (or fills): its parent must exist, and it must not be a file."""
    if path.exists() and not path.is_dir():
        raise RequestError(field, str(path), "a folder (this is a file); choose another path")
    if not path.exists() and not path.parent.is_dir():
        raise RequestError(field, str(path), f"a folder in an existing one ({path.parent} does not exist); create "
                           "it first")  # fmt: skip


def run_quantize(args: argparse.Namespace) -> int:
    from ltx2_edge.checkpoint.prequantized import prequantized_name
    from ltx2_edge.quant.convert import quantize_checkpoint, quantize_gemma_folder
    from ltx2_edge.quant.policy import QuantPolicy
    from ltx2_edge.request import check_device  # (torch comes with it: not at --help)

    if (args.checkpoint_path is None) == (args.gemma_root is None):
        raise RequestError("--checkpoint-path", args.checkpoint_path, "exactly one of --checkpoint-path or "
                           "--gemma-root")  # fmt: skip
    check_device(args.device)
    policy = QuantPolicy.from_flags(args.to, tuple(args.keep_bf16), args.quantize_all)
    loras = tuple(parse_lora_arg(values) for values in args.loras)
    if loras and args.gemma_root is not None:
        raise RequestError("--lora", str(loras[0].path), "only with --checkpoint-path (LoRAs adapt the transformer)")
    out = args.out
    if out is None:
        if loras:  # the default place holds a copy of the original, which runs read in its place
            raise RequestError("--out", None, "a path for a file with LoRAs baked in (it is another model: the "
                               "default place beside the checkpoint is for its plain quantized copy)")  # fmt: skip
        out = prequantized_name(args.checkpoint_path or args.gemma_root, args.to)
    if args.checkpoint_path is not None:  # the Gemma folder's output is checked by quantize_gemma_folder
        check_output_path(out, args.overwrite, inputs=(args.checkpoint_path, *(s.path for s in loras)),
                          field="--out")  # fmt: skip
    if args.checkpoint_path is not None:
        quantize_checkpoint(args.checkpoint_path, out, args.to, policy, device=args.device,
                            overwrite=args.overwrite, loras=loras)  # fmt: skip
    else:
        quantize_gemma_folder(args.gemma_root, out, args.to, policy, device=args.device)
    fused = "; LoRAs fused first: " + ", ".join(f"{s.path} x{s.strength:g}" for s in loras) if loras else ""
    print(f"wrote {out} ({args.to}; policy: {policy.summary()}{fused})")
    return 0


def run_make_lora(args: argparse.Namespace) -> int:
    """``make-lora``: a random LoRA for a generated checkpoint's size."""
    from ltx2_edge.request import check_seed  # (torch comes with it: not at --help)

    rank = args.rank
    if not 1 <= rank <= MAX_LORA_RANK:
        raise RequestError("--rank", rank, f"an integer from 1 to {MAX_LORA_RANK}, e.g. 4 (tiny) or 32 (full)")
    check_seed(args.seed)
    check_output_path(args.out, args.overwrite, field="--out")
    from ltx2_edge.synth.lora_writer import make_lora

    print(make_lora(args.size, args.out, rank, seed=args.seed, overwrite=args.overwrite))
    return 0


def run_make_checkpoint(args: argparse.Namespace) -> int:
    """``make-checkpoint``: random weights in the official format (the parts asked for)."""
    from ltx2_edge.request import check_device, check_seed  # (torch comes with it: not at --help)
    from ltx2_edge.synth.generator import make_checkpoint

    parts = tuple(p.strip() for p in args.parts.split(",") if p.strip())
    bad = [p for p in parts if p not in PARTS]
    if bad or not parts:
        raise RequestError("--parts", args.parts, f"a comma list of {', '.join(PARTS)}")
    check_seed(args.seed)
    check_device(args.device)
    _check_new_folder(args.out, "--out")
    if args.gemma_dir is not None:
        _check_new_folder(args.gemma_dir, "--gemma-dir")
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
