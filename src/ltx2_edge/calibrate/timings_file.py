"""The ``timings`` section of a device profile file: ``plan.timings.Timings`` as JSON and back, validated.

Optional in schema version 1: a profile written before calibrate measured timings has none, and reads as
``Timings()`` (every section "not measured"); an older ltx2-edge ignores the section. Each section is an object of
its dataclass's fields; a ``Line`` is ``{"at_zero": a, "per_unit": b}``. A value that is not a finite number (or a
negative one where a time or a rate must be positive) is refused naming its path. Torch-free; never measures.
"""

from __future__ import annotations

import math
import types
import typing
from dataclasses import MISSING, asdict, fields, is_dataclass
from typing import Any

from ltx2_edge.plan.timings import (
    DecodeTimings,
    EncodeTimings,
    Line,
    LoadTimings,
    StartupTimings,
    StepTimings,
    Timings,
)

SECTIONS: dict[str, type] = {"step": StepTimings, "load": LoadTimings, "decode": DecodeTimings,
                             "encode": EncodeTimings, "startup": StartupTimings}  # fmt: skip
# Fields that must be > 0 (rates a time is divided by); every other number must be finite, and times >= 0 unless
# they are a Line's terms (a measured residual can be negative: the floor over-counts a little there).
_POSITIVE = {"quantized_gbps", "bf16_gbps", "pin_gbps", "release_gbps", "populate_gbps", "decoder_tflops"}


class TimingsError(ValueError):
    """A profile's timings section is malformed: the message names the path."""


def timings_to_document(timings: Timings) -> dict[str, Any]:
    """The measured sections as plain JSON types (sections not measured are left out)."""
    return {name: asdict(section) for name in SECTIONS if (section := getattr(timings, name)) is not None}


def _number(path: str, value: object, positive: bool) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise TimingsError(f"{path}={value!r} is not a finite number")
    if positive and value <= 0:
        raise TimingsError(f"{path}={value!r} must be > 0")
    return float(value)


def _line(path: str, value: object) -> Line:
    if not isinstance(value, dict) or set(value) != {"at_zero", "per_unit"}:
        raise TimingsError(f"{path} is not a line {{'at_zero': a, 'per_unit': b}}")
    return Line(_number(f"{path}.at_zero", value["at_zero"], False), _number(f"{path}.per_unit", value["per_unit"],
                                                                              False))  # fmt: skip


def _field(path: str, name: str, kind: object, value: object) -> object:
    args = [a for a in typing.get_args(kind) if a is not type(None)]
    optional = isinstance(kind, types.UnionType) and len(args) < len(typing.get_args(kind))
    if value is None:
        if optional:
            return None
        raise TimingsError(f"{path} is missing")
    base = args[0] if optional else kind
    if base is Line:
        return _line(path, value)
    if base is str:
        if not isinstance(value, str):
            raise TimingsError(f"{path}={value!r} is not a string")
        return value
    if base is int:
        number = _number(path, value, False)
        if number != int(number) or number < 0:
            raise TimingsError(f"{path}={value!r} is not a byte count")
        return int(number)
    if typing.get_origin(base) is tuple:
        if not isinstance(value, list | tuple):
            raise TimingsError(f"{path}={value!r} is not a list")
        return tuple(int(_number(f"{path}[{i}]", v, False)) for i, v in enumerate(value))
    number = _number(path, value, name in _POSITIVE)
    if name.endswith("_s") and number < 0:
        raise TimingsError(f"{path}={value!r} is a time below 0")
    return number


def timings_from_document(section: object, where: str) -> Timings:
    """``Timings`` from a profile's ``timings`` object (absent or None: nothing measured); ``TimingsError`` naming
    ``where`` and the path of the first bad value."""
    if section is None:
        return Timings()
    if not isinstance(section, dict):
        raise TimingsError(f"{where}: timings is {type(section).__name__}, expected an object")
    out: dict[str, object] = {}
    for name, cls in SECTIONS.items():
        if section.get(name) is None:
            continue
        raw = section[name]
        if not isinstance(raw, dict):
            raise TimingsError(f"{where}: timings.{name} is not an object")
        hints = typing.get_type_hints(cls)
        assert is_dataclass(cls)
        values = {f.name: _field(f"{where}: timings.{name}.{f.name}", f.name, hints[f.name],
                                 raw.get(f.name, None if f.default is MISSING else f.default))
                  for f in fields(cls)}  # fmt: skip
        out[name] = cls(**values)
    return Timings(**out)  # type: ignore[arg-type]
