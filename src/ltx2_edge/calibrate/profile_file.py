"""The device profile as a JSON file: its schema, validation, where the files live, and atomic writing.

One format for both kinds of file: those ``ltx2-edge calibrate`` writes to the user's cache
(``$XDG_CACHE_HOME/ltx2-edge/profiles/<slug>.json``, default ``~/.cache/...``) and those shipped with the package
(``src/ltx2_edge/plan/device_profiles/*.json``: adding a device is dropping its calibrated file there). A document
holds the schema and its version, the device (name, compute capability, integrated or not), the software it was
measured with (torch, CUDA, driver), when, and every rate of ``plan.provenance.RATE_FIELDS`` with its unit, kind
(measured, derived, published, assumed, nominal, not measured) and how it was obtained; and, optionally, the
``timings`` calibrate measured beyond the rates (``calibrate.timings_file``: per-block step work, loads, the MP4
encoder, start-up), which an older file lacks.

Torch-free (the planner's side reads these files). This module never measures anything and never writes a file
except atomically (``atomic.atomic_output``): a failed write leaves the previous profile in place.
"""

from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path
from typing import Any

from ltx2_edge.atomic import atomic_output
from ltx2_edge.calibrate.timings_file import TimingsError, timings_from_document, timings_to_document
from ltx2_edge.errors import Ltx2EdgeError
from ltx2_edge.plan.profiles import DeviceProfile
from ltx2_edge.plan.provenance import KINDS, RATE_FIELDS, RATE_UNITS, Provenance, RateSource

SCHEMA = "ltx2-edge/device-profile"
SCHEMA_VERSION = 1
_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,79}$")


class ProfileFileError(Ltx2EdgeError):
    """A device profile file is unreadable, of another schema, or misses or mangles a rate."""


def profiles_dir() -> Path:
    """Where ``calibrate`` writes and runs look for this machine's profiles: ``$XDG_CACHE_HOME/ltx2-edge/profiles``
    (default ``~/.cache/ltx2-edge/profiles``)."""
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "ltx2-edge" / "profiles"


def shipped_dir() -> Path:
    """The folder of profiles shipped with the package (measured by ``calibrate`` on lent machines)."""
    return Path(__file__).resolve().parents[1] / "plan" / "device_profiles"


def device_slug(name: str, capability: str) -> str:
    """A file name for a device: ``("NVIDIA H200", "9.0")`` -> ``nvidia-h200-sm90``; a CPU's model and machine
    (``("AMD EPYC 7763", "x86_64")``) -> ``amd-epyc-7763-x86_64``."""
    words = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "device"
    cap = capability.strip().lower()
    tail = "sm" + cap.replace(".", "") if re.fullmatch(r"\d+\.\d+", cap) else re.sub(r"[^a-z0-9_]+", "-", cap)
    return f"{words}-{tail}"[:80].strip("-") if tail else words[:80]


def _fail(where: str, why: str) -> ProfileFileError:
    return ProfileFileError(f"device profile {where}: {why}; run `ltx2-edge calibrate` again to rewrite it")


def _rate(where: str, field: str, entry: object) -> tuple[float | int, RateSource]:
    if not isinstance(entry, dict):
        raise _fail(where, f"rates.{field} is {type(entry).__name__}, expected an object with value, unit, kind")
    value, unit, kind = entry.get("value"), entry.get("unit"), entry.get("kind")
    if field == "runtime_overhead_bytes":
        ok = isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2**50
    else:
        ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value) and value > 0
    if not ok:
        raise _fail(where, f"rates.{field}.value={value!r} is not a positive finite number")
    if unit != RATE_UNITS[field]:
        raise _fail(where, f"rates.{field}.unit={unit!r}, expected {RATE_UNITS[field]!r}")
    if kind not in KINDS:
        raise _fail(where, f"rates.{field}.kind={kind!r}, expected one of {', '.join(KINDS)}")
    how = entry.get("how", "")
    return value, RateSource(kind, how if isinstance(how, str) else str(how))


def _text(where: str, doc: dict, *keys: str) -> str:
    node: Any = doc
    for key in keys:
        node = node.get(key) if isinstance(node, dict) else None
    if not isinstance(node, str):
        raise _fail(where, f"{'.'.join(keys)} is missing or not a string")
    return node


def profile_from_document(doc: object, file: str = "") -> DeviceProfile:
    """Validate a profile document and build its ``DeviceProfile`` (``file``: where it was read, for provenance).

    Raises ``ProfileFileError`` (one line naming the file and the field) for another schema, a newer schema
    version, a missing rate, a non-positive or non-finite value, a wrong unit or an unknown kind.
    """
    where = file or "document"
    if not isinstance(doc, dict) or doc.get("schema") != SCHEMA:
        found = doc.get("schema") if isinstance(doc, dict) else type(doc).__name__
        raise _fail(where, f"schema is {found!r}, not {SCHEMA!r}")
    version = doc.get("schema_version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise _fail(where, f"schema_version={version!r} is not a positive integer")
    if version > SCHEMA_VERSION:
        raise ProfileFileError(
            f"device profile {where} has schema version {version}, newer than this ltx2-edge reads "
            f"({SCHEMA_VERSION}): upgrade ltx2-edge or run `ltx2-edge calibrate` again"
        )
    name = _text(where, doc, "name")
    if not _NAME.match(name):
        raise _fail(where, f"name={name!r} is not a lower-case slug (letters, digits, '.', '_', '-')")
    rates = doc.get("rates")
    if not isinstance(rates, dict):
        raise _fail(where, "rates is missing or not an object")
    missing = [f for f in RATE_FIELDS if f not in rates]
    if missing:
        raise _fail(where, f"rates miss {', '.join(missing)}")
    parsed = {field: _rate(where, field, rates[field]) for field in RATE_FIELDS}
    flags = doc.get("flags") if isinstance(doc.get("flags"), dict) else {}
    for flag in ("unified", "sdpa_materializes_scores"):
        if not isinstance(flags.get(flag), bool):
            raise _fail(where, f"flags.{flag} is missing or not true/false")
    software = doc.get("software") if isinstance(doc.get("software"), dict) else {}
    provenance = Provenance(
        device=_text(where, doc, "device", "name"),
        capability=_text(where, doc, "device", "capability"),
        date=str(doc.get("date", "")),
        torch=str(software.get("torch", "") or ""),
        driver=str(software.get("driver", "") or ""),
        file=file,
        rates=tuple((field, source) for field, (_, source) in parsed.items()),
    )
    try:
        timings = timings_from_document(doc.get("timings"), where)
    except TimingsError as exc:
        raise _fail(where, str(exc).removeprefix(f"{where}: ")) from None
    values = {field: value for field, (value, _) in parsed.items()}
    values["runtime_overhead_bytes"] = int(values["runtime_overhead_bytes"])
    return DeviceProfile(name=name, **values, unified=flags["unified"],  # type: ignore[arg-type]
                         sdpa_materializes_scores=flags["sdpa_materializes_scores"],
                         source=_text(where, doc, "source"), provenance=provenance, timings=timings)  # fmt: skip


def document_from_profile(profile: DeviceProfile, **extra: Any) -> dict[str, Any]:
    """A profile as a schema-``SCHEMA_VERSION`` document (``extra`` top-level keys added: measured_at, command...)."""
    prov = profile.provenance
    rates = {}
    for field in RATE_FIELDS:
        source = prov.source_of(field)
        rates[field] = {"value": getattr(profile, field), "unit": RATE_UNITS[field], "kind": source.kind,
                        "how": source.how}  # fmt: skip
    doc: dict[str, Any] = {
        "schema": SCHEMA,
        "schema_version": SCHEMA_VERSION,
        "name": profile.name,
        "source": profile.source,
        "device": {"name": prov.device or profile.name, "capability": prov.capability, "integrated": profile.unified},
        "software": {"torch": prov.torch, "driver": prov.driver},
        "date": prov.date,
        "flags": {"unified": profile.unified, "sdpa_materializes_scores": profile.sdpa_materializes_scores},
        "rates": rates,
    }
    timings = timings_to_document(profile.timings)
    if timings:
        doc["timings"] = timings
    doc.update(extra)
    return doc


def read_profile(path: Path) -> DeviceProfile:
    """Read and validate the profile file at ``path`` (``ProfileFileError`` if it is unreadable or invalid)."""
    path = Path(path)
    try:
        doc = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise _fail(str(path), f"unreadable ({type(exc).__name__}: {str(exc).splitlines()[0][:120]})") from None
    return profile_from_document(doc, str(path))


def write_profile(doc: dict[str, Any], path: Path) -> DeviceProfile:
    """Validate ``doc`` and write it to ``path`` atomically (the folder is created; an existing file is replaced
    only once the new one is complete). Returns the profile as a run would read it back."""
    path = Path(path)
    profile = profile_from_document(doc, str(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_output(path, overwrite=True) as temp:
        temp.write_text(json.dumps(doc, indent=2, sort_keys=False) + "\n")
    return profile


def _json_files(folder: Path) -> list[Path]:
    # Hidden names are atomic_output's temporaries (a write that was killed): never profiles.
    return sorted(p for p in folder.glob("*.json") if not p.name.startswith(".")) if folder.is_dir() else []


def shipped_profiles() -> list[DeviceProfile]:
    """Every profile shipped in ``plan/device_profiles/``, in file-name order. An invalid shipped file is our bug:
    it raises (``tests/test_calibrate.py`` reads them all)."""
    folder = shipped_dir()
    return [read_profile(p) for p in _json_files(folder)]


def calibrated_profiles(folder: Path | None = None) -> tuple[list[DeviceProfile], list[str]]:
    """Profiles ``calibrate`` wrote to ``folder`` (default ``profiles_dir()``), and one note per file skipped
    because it is unreadable or invalid (a run is never stopped by a stale cache file)."""
    folder = profiles_dir() if folder is None else Path(folder)
    found: list[DeviceProfile] = []
    skipped: list[str] = []
    for path in _json_files(folder):
        try:
            found.append(read_profile(path))
        except ProfileFileError as exc:
            skipped.append(f"ignored {exc}")
    return found, skipped
