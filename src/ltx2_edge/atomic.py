"""All-or-nothing output files: a run either leaves the finished file at its path or leaves nothing.

The file is written under a hidden temporary name in the target's own directory (so the final ``os.replace``
is a rename inside one filesystem, hence atomic) and renamed onto the target only when the writing block
ends normally. Any exception — ``KeyboardInterrupt``, ``SystemExit`` and SIGTERM (through
``install_signal_cleanup``) included — removes the temporary file.

This module must never write the target directly, never leave a ``.partial`` file behind, and never replace
an existing file unless the caller passed ``overwrite=True``.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import threading
from collections.abc import Iterator
from pathlib import Path
from types import FrameType

from ltx2_edge.errors import RequestError

_FIELD = "output_path"


class Terminated(KeyboardInterrupt):
    """SIGTERM arrived while ``install_signal_cleanup`` was active.

    A ``KeyboardInterrupt`` subclass so ``except Exception`` blocks do not swallow it, while every
    ``finally``/``except BaseException`` cleanup on the way up still runs. ``exit_code`` is the status a shell
    reports for a process killed by the signal (128 + signal number).
    """

    def __init__(self, signum: int) -> None:
        self.signum = signum
        self.exit_code = 128 + signum
        super().__init__(f"terminated by signal {signal.Signals(signum).name}")


def check_output_path(target: Path, overwrite: bool) -> None:
    """Raise ``RequestError("output_path", ...)`` unless ``target`` can be written as a new (or replaced) file."""
    target = Path(target)
    directory = target.parent
    if not directory.is_dir():
        raise RequestError(_FIELD, str(target), f"directory {str(directory)!r} does not exist; create it first")
    if target.is_dir():
        raise RequestError(_FIELD, str(target), "it is a directory; name a file such as out.mp4 inside it")
    if target.exists() and not overwrite:
        raise RequestError(_FIELD, str(target), "the file exists; pass --overwrite or choose another --output-path")
    if not os.access(directory, os.W_OK | os.X_OK):
        raise RequestError(_FIELD, str(target), f"directory {str(directory)!r} is not writable; choose another")


def _temp_path(target: Path) -> Path:
    # Hidden, unique per process and per call, same suffix so tools that guess formats by name still work.
    return target.with_name(f".{target.name}.partial-{os.getpid()}-{secrets.token_hex(4)}{target.suffix}")


@contextlib.contextmanager
def atomic_output(target: Path, overwrite: bool) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; rename it onto ``target`` when the block ends normally.

    The target is checked on entry (fail before any work) and again just before the rename, so a file that
    appeared meanwhile is not clobbered without ``overwrite``. On any exception, BaseExceptions included, the
    temporary file is removed and the exception propagates unchanged. The block must create the file.
    """
    target = Path(target)
    check_output_path(target, overwrite)
    temp = _temp_path(target)
    try:
        yield temp
        check_output_path(target, overwrite)
        os.replace(temp, target)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def install_signal_cleanup() -> Iterator[bool]:
    """Turn SIGTERM into a ``Terminated`` exception in the main thread while the block runs.

    Without it a killed run dies without unwinding, and ``atomic_output`` cannot remove its temporary file.
    The previous handler is restored on exit. Python delivers signals to the main thread only, so in any other
    thread nothing is installed and the context yields False (True when installed).
    """
    if threading.current_thread() is not threading.main_thread():
        yield False
        return

    def _raise(signum: int, _frame: FrameType | None) -> None:
        raise Terminated(signum)

    previous = signal.signal(signal.SIGTERM, _raise)
    try:
        yield True
    finally:
        # None means the old handler was installed from C, not Python; the default action is the closest match.
        signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)
