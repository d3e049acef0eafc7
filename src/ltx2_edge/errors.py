"""Exceptions that reach the user. Each message is one line that names the setting to change.

Exit statuses of the ``ltx2-edge`` command (the README's CLI section lists them): 2 for input that is refused
(``RequestError``, ``CheckpointError``, ``EncoderMissingError``, usage), 3 when the request cannot fit the memory
budget (``BudgetError``), 4 when the output could not be written (``OutputError``: disk full, a read-only or
immutable target), 130 for Ctrl-C and 143 for SIGTERM. This module must never import anything heavy: the CLI's
``--help`` path imports it.
"""

from __future__ import annotations

EXIT_REFUSED = 2
EXIT_BUDGET = 3
EXIT_OUTPUT = 4
EXIT_INTERRUPTED = 130  # 128 + SIGINT
EXIT_TERMINATED = 143  # 128 + SIGTERM
_MAX_VALUE_CHARS = 120  # a 400-digit budget is echoed shortened; the message stays one readable line


class Ltx2EdgeError(Exception):
    """Base class: anything the CLI prints as one ``ltx2-edge: error:`` line and exits with ``exit_code``."""

    exit_code = EXIT_REFUSED


def flag_name(field: str) -> str:
    """``num_inference_steps`` / ``num-inference-steps`` / ``--num-inference-steps`` -> ``--num-inference-steps``.

    The one spelling of a ``RequestError`` field: the CLI flag a user types, leading dashes included. Fields the
    CLI has no flag for (a library call's argument) are spelled the same way, so every message reads alike.
    """
    return "--" + field.strip().lstrip("-").replace("_", "-").replace(" ", "-")


def _shown(value: object) -> str:
    text = repr(value)
    if len(text) > _MAX_VALUE_CHARS:
        text = f"{text[: _MAX_VALUE_CHARS - 20]}...({len(text)} characters)"
    return text


class RequestError(Ltx2EdgeError, ValueError):
    """A request field is out of range. Names the field (as its CLI flag), the value and what is allowed.

    ``field`` is always the flag spelling (``--num-inference-steps``; ``flag_name``); ``param`` is the same name
    as a Python identifier (``num_inference_steps``), for APIs that name fields that way.
    """

    def __init__(self, field: str, value: object, allowed: str) -> None:
        self.field = flag_name(field)
        self.value = value
        self.allowed = allowed
        super().__init__(f"{self.field}={_shown(value)} is not allowed: {allowed}")

    @property
    def param(self) -> str:
        """The field as an identifier: ``--num-inference-steps`` -> ``num_inference_steps``."""
        return self.field.removeprefix("--").replace("-", "_")


class CheckpointError(Ltx2EdgeError):
    """A checkpoint or Gemma folder is missing, unreadable, not safetensors, or not LTX-2."""


class BudgetError(Ltx2EdgeError):
    """The request cannot run inside the memory budget. The message gives the smallest budget that works."""

    exit_code = EXIT_BUDGET


class OutputError(Ltx2EdgeError, OSError):
    """The output could not be written (no space left, a read-only or immutable target); nothing was left.
    An ``OSError`` too, so callers that handle I/O failures as such keep doing so."""

    exit_code = EXIT_OUTPUT


class EncoderMissingError(Ltx2EdgeError):
    """The installed PyAV build lacks an encoder ltx2-edge needs (no silent codec switch)."""
