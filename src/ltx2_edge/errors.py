"""Exceptions that reach the user. Each message is one line that names the setting to change."""

from __future__ import annotations


class Ltx2EdgeError(Exception):
    """Base class: anything the CLI prints as a one-line error and exits with status 2."""

    exit_code = 2


class RequestError(Ltx2EdgeError, ValueError):
    """A request field is out of range. Names the field, the value and what is allowed."""

    def __init__(self, field: str, value: object, allowed: str) -> None:
        self.field = field
        self.value = value
        self.allowed = allowed
        super().__init__(f"{field}={value!r} is not allowed: {allowed}")


class CheckpointError(Ltx2EdgeError):
    """A checkpoint or Gemma folder is missing, unreadable, not safetensors, or not LTX-2."""


class BudgetError(Ltx2EdgeError):
    """The request cannot run inside the memory budget. The message gives the smallest budget that works."""


class EncoderMissingError(Ltx2EdgeError):
    """The installed PyAV build lacks an encoder ltx2-edge needs (no silent codec switch)."""
