"""The ``ltx2-edge`` command: argparse -> request -> pipeline -> report. Errors are one line (exit statuses in
``errors``: 2 refused input, 3 over the memory budget, 4 output not written, 130 Ctrl-C, 143 SIGTERM).

``parser`` holds every parser and help text, ``generate`` the run commands (generate, demo, plan), ``tools`` the
file-making ones (quantize, make-checkpoint, make-lora). Every input is validated before any weight is read.
Nothing here imports torch before a command runs: ``ltx2-edge --help`` stays fast. This package parses and
prints; it never decides anything about a run.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from ltx2_edge.cli.parser import build_parser
from ltx2_edge.errors import EXIT_INTERRUPTED, EXIT_OUTPUT, Ltx2EdgeError

__all__ = ["build_parser", "main"]


def _dispatch(args: argparse.Namespace) -> int:
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
    raise AssertionError(f"unhandled command {args.command}")  # argparse's required=True makes this unreachable


def _error(message: object) -> None:
    text = " ".join(str(message).split())  # one line, whatever the message holds
    print(f"ltx2-edge: error: {text}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``ltx2-edge`` command. Exit statuses: ``errors`` (0 done, 2 refused input, 3 over the
    memory budget, 4 output not written, 130 Ctrl-C, 143 SIGTERM); every failure is one ``ltx2-edge: error:`` line
    (or one ``ltx2-edge:`` line for a signal), and never leaves a partial file."""
    from ltx2_edge.atomic import Terminated, install_signal_cleanup, output_failure

    args = build_parser().parse_args(argv)
    try:
        with install_signal_cleanup():  # SIGTERM anywhere in the command unwinds, so temporaries are removed
            return _dispatch(args)
    except Ltx2EdgeError as exc:
        _error(exc)
        return exc.exit_code
    except Terminated as exc:
        print(f"ltx2-edge: {exc}; no output was written", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("ltx2-edge: interrupted; no output was written", file=sys.stderr)
        return EXIT_INTERRUPTED
    except OSError as exc:  # disk full or an I/O error outside a writer that says so itself
        where = Path(exc.filename) if isinstance(exc.filename, str) else None
        failure = output_failure(exc, where) if where is not None else None
        _error(failure if failure is not None else f"{exc.strerror or exc}; nothing was written")
        return EXIT_OUTPUT


if __name__ == "__main__":
    sys.exit(main())
