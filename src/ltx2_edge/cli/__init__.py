"""The ``ltx2-edge`` command: argparse -> request -> pipeline -> report. Errors are one line and exit 2.

``parser`` holds every parser and help text, ``generate`` the run commands (generate, demo, plan), ``tools`` the
file-making ones (quantize, make-checkpoint, make-lora). Every input is validated before any weight is read.
Nothing here imports torch before a command runs: ``ltx2-edge --help`` stays fast. This package parses and
prints; it never decides anything about a run.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from ltx2_edge.cli.parser import build_parser
from ltx2_edge.errors import Ltx2EdgeError

__all__ = ["build_parser", "main"]


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``ltx2-edge`` command."""
    args = build_parser().parse_args(argv)
    try:
        if args.command in ("generate", "demo", "plan"):
            from ltx2_edge.cli import generate

            if args.command == "generate":
                return generate._run_generate(args, generate._checkpoint(args), args.gemma_root)
            if args.command == "demo":
                return generate.run_demo(args)
            return generate._run_plan(args)
        if args.command in ("serve", "submit"):
            from ltx2_edge.cli import serve

            return serve.run_serve(args) if args.command == "serve" else serve.run_submit(args)
        if args.command == "calibrate":
            from ltx2_edge.cli import calibrate

            return calibrate.run_calibrate(args)
        from ltx2_edge.cli import tools

        if args.command == "quantize":
            return tools.run_quantize(args)
        if args.command == "make-lora":
            return tools.run_make_lora(args)
        if args.command == "make-checkpoint":
            return tools.run_make_checkpoint(args)
    except Ltx2EdgeError as exc:
        print(f"ltx2-edge: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("ltx2-edge: interrupted; no output was written", file=sys.stderr)
        return 130
    raise AssertionError(f"unhandled command {args.command}")  # argparse's required=True makes this unreachable


if __name__ == "__main__":
    sys.exit(main())
