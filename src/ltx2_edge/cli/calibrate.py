"""``ltx2-edge calibrate``: its parser and help, and the call into ``ltx2_edge.calibrate.command``.

Building the parser imports nothing heavy (``--help`` must not import torch); the command's module, which does,
is imported when the command runs. This module never measures anything itself and never catches errors
(``cli.main`` does).
"""

from __future__ import annotations

import argparse
from pathlib import Path

CALIBRATE_HELP = (
    "measure this device's rates at the model's shapes (GEMMs, attention, VAE conv, copies, checkpoint reads, the "
    "runtime's memory) and the times they leave out (a denoising step's other work, loads, the MP4 encoder, start-up), "
    "and write its profile, which plan and generate then use (<= 60 s)"
)


def add_calibrate_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``calibrate`` on the top-level subparsers."""
    cal = sub.add_parser("calibrate", help=CALIBRATE_HELP, description=CALIBRATE_HELP[0].upper() + CALIBRATE_HELP[1:])
    cal.add_argument("--device", default=None, help="cuda, cuda:N or cpu (default: the first GPU, else the CPU)")
    cal.add_argument(
        "--checkpoint-path",
        type=Path,
        default=None,
        help="an LTX-2 19B .safetensors: its config gives the shapes and its first transformer blocks are read for "
        "the checkpoint read rates (default: the 19B shapes on a GPU, the tiny model's on a CPU, and a scratch file)",
    )
    cal.add_argument(
        "--out",
        type=Path,
        default=None,
        help="where to write the profile JSON (default: $XDG_CACHE_HOME/ltx2-edge/profiles/<device>.json, where "
        "runs on this device look for it)",
    )
    cal.add_argument(
        "--gemma-root",
        type=Path,
        default=None,
        help="the Gemma 3 folder; with --checkpoint-path, the start-up step times the run's whole setup on both files "
        "(file checks, tokenizer) as generate does before its first stage",
    )
    cal.add_argument("--quick", action="store_true", help="fewer samples and smaller copies (seconds; CI, a check)")
    cal.add_argument("--quiet", action="store_true", help="no progress bar (the table still prints)")


def run_calibrate(args: argparse.Namespace) -> int:
    """``calibrate``: measure, write the profile, print the table."""
    from ltx2_edge.calibrate.command import CalibrateOptions
    from ltx2_edge.calibrate.command import run_calibrate as run

    run(CalibrateOptions(args.device, args.checkpoint_path, args.out, args.quick, args.quiet, args.gemma_root))
    return 0
