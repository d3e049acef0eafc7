"""Which device profile predicts a run's times, and the note that says whose rates they are.

In order: (1) a profile ``ltx2-edge calibrate`` wrote for this device to the cache folder, matched by device name
and compute capability (the newest, if several; one measured with another torch major.minor or another driver is
used with a note); (2) a profile shipped for this device (``plan/device_profiles/*.json``, then the ones built
into ``plan/profiles.py``): a discrete GPU matches by name and capability, an integrated one (Jetson, whose module
names vary) by capability; (3) the nearest shipped profile, by compute capability among devices of the same kind
(integrated or discrete), with the note "times predicted with <other device>'s rates". A CPU uses its own
calibrated profile, else the nominal CPU figures.

Torch-free: the caller describes the device (``DeviceIdentity``; ``calibrate.identity`` asks torch). This module
never measures anything and never writes a file.
"""

from __future__ import annotations

import platform
import re
from dataclasses import dataclass, replace
from pathlib import Path

from ltx2_edge.calibrate.profile_file import calibrated_profiles, shipped_profiles
from ltx2_edge.plan.profiles import CPU, H100, THOR_T5000, DeviceProfile
from ltx2_edge.plan.provenance import CALIBRATE_HINT

BUILT_IN: tuple[DeviceProfile, ...] = (H100, THOR_T5000)
# Rates whose provenance decides whether a shipped profile's times are measured or only published figures.
_COMPUTE = ("bf16_tflops", "fp8_rowwise_tflops", "int8_tops")


@dataclass(frozen=True)
class DeviceIdentity:
    """The facts a profile is matched by. ``capability``: ``"9.0"`` on a GPU, the machine (``"x86_64"``) on a CPU;
    ``kind``: ``"cuda"`` or ``"cpu"``; ``torch``/``driver``: what this process runs ("" when unknown)."""

    name: str
    capability: str
    integrated: bool
    kind: str
    torch: str = ""
    driver: str = ""


def cpu_model() -> str:
    """This CPU's model name (``/proc/cpuinfo``'s "model name"), else what ``platform`` says."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith(("model name", "hardware")) and ":" in line:
                return line.split(":", 1)[1].strip() or platform.processor() or platform.machine()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "cpu"


def cpu_identity(torch_version: str = "") -> DeviceIdentity:
    """The identity of this machine's CPU, as a device."""
    return DeviceIdentity(cpu_model(), platform.machine(), False, "cpu", torch_version)


def _same_device(profile: DeviceProfile, ident: DeviceIdentity) -> bool:
    prov = profile.provenance
    return prov.device.strip().lower() == ident.name.strip().lower() and prov.capability == ident.capability


def _major_minor(version: str) -> str:
    match = re.match(r"(\d+)\.(\d+)", version)
    return f"{match.group(1)}.{match.group(2)}" if match else version


def _capability(text: str) -> tuple[int, int] | None:
    match = re.fullmatch(r"(\d+)\.(\d+)", text.strip())
    return (int(match.group(1)), int(match.group(2))) if match else None


def _chosen(profile: DeviceProfile, how: str, note: str) -> tuple[DeviceProfile, str]:
    return replace(profile, provenance=replace(profile.provenance, chosen=how, note=note)), note


def _version_note(profile: DeviceProfile, ident: DeviceIdentity) -> str:
    prov, differs = profile.provenance, []
    if prov.torch and ident.torch and _major_minor(prov.torch) != _major_minor(ident.torch):
        differs.append(f"torch {prov.torch} (this process: {ident.torch})")
    if prov.driver and ident.driver and prov.driver != ident.driver:
        differs.append(f"driver {prov.driver} (this machine: {ident.driver})")
    if not differs:
        return ""
    return (f"this device's profile was calibrated with {' and '.join(differs)}: rates may have moved; "
            f"{CALIBRATE_HINT} again")  # fmt: skip


def _nearest(ident: DeviceIdentity, shipped: list[DeviceProfile]) -> DeviceProfile:
    same_kind = [p for p in shipped if p.unified == ident.integrated] or shipped
    want = _capability(ident.capability) or (0, 0)

    def distance(p: DeviceProfile) -> tuple[int, int]:
        have = _capability(p.provenance.capability) or (0, 0)
        return abs(have[0] - want[0]), abs(have[1] - want[1])

    return min(same_kind, key=distance)  # min keeps the first of equals: shipped files, then the built-ins


def choose_profile(ident: DeviceIdentity, cache_dir: Path | None = None) -> tuple[DeviceProfile, str]:
    """The profile for ``ident`` (its ``provenance.chosen`` and ``note`` set) and the note for the run's report
    ("" when the rates are this device's own and current). ``cache_dir``: where calibrated profiles are
    (default ``profile_file.profiles_dir()``)."""
    calibrated, skipped = calibrated_profiles(cache_dir)
    mine = [p for p in calibrated if _same_device(p, ident)]
    if mine:
        newest = max(mine, key=lambda p: p.provenance.date)
        return _chosen(newest, "calibrated", "; ".join([_version_note(newest, ident), *skipped]).strip("; "))
    skipped_note = "; ".join(skipped)
    if ident.kind != "cuda":
        return _chosen(CPU, "nominal", skipped_note)
    shipped = [*shipped_profiles(), *BUILT_IN]
    for profile in shipped:
        integrated_match = ident.integrated and profile.unified and profile.provenance.capability == ident.capability
        if integrated_match or (not ident.integrated and not profile.unified and _same_device(profile, ident)):
            measured = all(profile.provenance.source_of(f).kind in ("measured", "derived") for f in _COMPUTE)
            note = "" if measured else (f"times predicted with published figures for {profile.provenance.device}, "
                                        f"not measured: {CALIBRATE_HINT}")  # fmt: skip
            return _chosen(profile, "shipped", "; ".join(n for n in (note, skipped_note) if n))
    other = _nearest(ident, shipped)
    sm = f"sm_{ident.capability.replace('.', '')}"
    note = (f"{ident.name} ({sm}) has no profile of its own: times predicted with {other.provenance.device}'s rates "
            f"(profile {other.name}); {CALIBRATE_HINT}")  # fmt: skip
    return _chosen(other, "nearest", "; ".join(n for n in (note, skipped_note) if n))
