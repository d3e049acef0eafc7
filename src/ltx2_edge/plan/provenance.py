"""Where a device profile's rates come from, and how a run chose the profile: data, and the lines that say so.

Every rate of a ``DeviceProfile`` has a ``RateSource``: ``measured`` (by ``ltx2-edge calibrate`` or a benchmark
in ``docs/benchmarks.md``), ``derived`` (computed from measured figures), ``published`` (a vendor's
specification), ``assumed``, ``nominal`` (placeholders for tests and CPU runs) or ``not measured`` (a stand-in
value; ``how`` says why and where it comes from). ``Provenance`` names the device the figures describe, when and
with which torch and driver they were measured, and, once a run has chosen the profile (``calibrate.choice``),
how it was chosen: this device's calibrated profile, a shipped profile of this device, or another device's.

Pure data and strings: this module never imports torch, never reads a file and never measures anything.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ltx2_edge.plan.profiles import DeviceProfile

# The profile fields that are rates (or the runtime's bytes): what ``calibrate`` measures and a file must hold.
RATE_FIELDS: tuple[str, ...] = (
    "bf16_tflops",
    "fp8_rowwise_tflops",
    "int8_tops",
    "attention_tflops",
    "conv_tflops",
    "h2d_pinned_gbps",
    "h2d_pageable_gbps",
    "file_read_cold_gbps",
    "file_read_warm_gbps",
    "memory_bandwidth_gbps",
    "runtime_overhead_bytes",
)
RATE_LABELS: dict[str, str] = {
    "bf16_tflops": "bf16 GEMM",
    "fp8_rowwise_tflops": "fp8 rowwise GEMM",
    "int8_tops": "int8 GEMM",
    "attention_tflops": "attention (SDPA)",
    "conv_tflops": "video VAE conv3d",
    "h2d_pinned_gbps": "host->device pinned",
    "h2d_pageable_gbps": "host->device pageable",
    "file_read_cold_gbps": "checkpoint read, cold",
    "file_read_warm_gbps": "checkpoint read, warm",
    "memory_bandwidth_gbps": "device memory bandwidth",
    "runtime_overhead_bytes": "runtime's own device memory",
}
RATE_UNITS: dict[str, str] = {
    "bf16_tflops": "TFLOP/s",
    "fp8_rowwise_tflops": "TFLOP/s",
    "int8_tops": "TOP/s",
    "attention_tflops": "TFLOP/s",
    "conv_tflops": "TFLOP/s",
    "h2d_pinned_gbps": "GB/s",
    "h2d_pageable_gbps": "GB/s",
    "file_read_cold_gbps": "GB/s",
    "file_read_warm_gbps": "GB/s",
    "memory_bandwidth_gbps": "GB/s",
    "runtime_overhead_bytes": "bytes",
}
KINDS: tuple[str, ...] = ("measured", "derived", "published", "assumed", "nominal", "not measured")
# How a run chose its profile: "" when no run chose it (a profile used directly, as tests and benchmarks do).
CHOICES: tuple[str, ...] = ("calibrated", "shipped", "nearest", "nominal", "")
CALIBRATE_HINT = "run `ltx2-edge calibrate` on this device"


@dataclass(frozen=True)
class RateSource:
    """Where one rate comes from: ``kind`` (one of ``KINDS``) and ``how`` (what was timed, or why not)."""

    kind: str
    how: str = ""

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"RateSource kind={self.kind!r} is not allowed: one of {', '.join(KINDS)}")


@dataclass(frozen=True)
class Provenance:
    """What a profile's figures describe and, once a run chose it, how.

    ``device``/``capability``: the device the figures were measured on or published for (``"NVIDIA H100 80GB
    HBM3"``, ``"9.0"``; a CPU's model and machine). ``date``: the day of the measurement (``YYYY-MM-DD``, "" for
    published figures). ``torch``/``driver``: the software it was measured with. ``file``: the JSON it was read
    from ("" = built into ``profiles.py``). ``rates``: ``(field, RateSource)`` for each of ``RATE_FIELDS``.
    ``chosen``: one of ``CHOICES``; ``note``: what the user must know about the choice (another device's rates,
    another torch), "" when nothing.
    """

    device: str = ""
    capability: str = ""
    date: str = ""
    torch: str = ""
    driver: str = ""
    file: str = ""
    rates: tuple[tuple[str, RateSource], ...] = ()
    chosen: str = ""
    note: str = ""

    def __post_init__(self) -> None:
        if self.chosen not in CHOICES:
            raise ValueError(f"Provenance chosen={self.chosen!r} is not allowed: one of {CHOICES}")
        unknown = [f for f, _ in self.rates if f not in RATE_FIELDS]
        if unknown:
            raise ValueError(f"Provenance rates name unknown fields {unknown}: the fields are {RATE_FIELDS}")

    def source_of(self, field: str) -> RateSource:
        """The ``RateSource`` of ``field`` (``assumed`` with no detail when the profile does not say)."""
        for name, source in self.rates:
            if name == field:
                return source
        return RateSource("assumed", "the profile does not say where this figure comes from")


def rate_origin(profile: DeviceProfile, field: str) -> str:
    """Where ``field``'s figure comes from, in the report's words: "measured on this device, <date>",
    "published", "another device's (...)", "not measured: ...", ..."""
    prov = profile.provenance
    src = prov.source_of(field)
    when = f", {prov.date}" if prov.date and src.kind in ("measured", "derived") else ""
    if prov.chosen == "nearest":
        return f"another device's ({src.kind} on {prov.device or profile.name}{when})"
    here = prov.chosen in ("calibrated", "shipped")
    if src.kind == "measured":
        return f"measured on this device{when}" if here else f"measured on {prov.device or profile.name}{when}"
    if src.kind == "derived":
        whose = "this device's" if here else f"{prov.device or profile.name}'s"
        return f"derived from {whose} measurements{when}"
    if src.kind == "not measured":
        why = src.how.removeprefix("not measured").lstrip(": ")
        return f"not measured: {why}" if why else "not measured"
    if src.kind == "nominal":
        return "nominal, not measured"
    return src.kind  # published, assumed


def _kind_summary(profile: DeviceProfile) -> str:
    by_kind: dict[str, list[str]] = {}
    for field in RATE_FIELDS:
        by_kind.setdefault(profile.provenance.source_of(field).kind, []).append(RATE_LABELS[field])
    return "; ".join(f"{kind}: {', '.join(labels)}" for kind, labels in by_kind.items())


def origin_line(profile: DeviceProfile) -> str:
    """One line for ``ltx2-edge plan`` and the report: whose rates predict the times, and how they were chosen."""
    prov = profile.provenance
    device = prov.device or profile.name
    sm = f", sm_{prov.capability.replace('.', '')}" if prov.capability and prov.capability[0].isdigit() else ""
    when = f", {prov.date}" if prov.date else ""
    where = f" ({prov.file})" if prov.file else ""
    if prov.chosen == "calibrated":
        head = f"rates measured on this device ({device}{sm}) by ltx2-edge calibrate{when}{where}"
    elif prov.chosen == "shipped":
        head = f"rates from the shipped profile {profile.name} for this device ({device}{sm}{when}){where}"
    elif prov.chosen == "nearest":
        head = f"times predicted with {device}'s rates (profile {profile.name}{when}){where}"
    elif prov.chosen == "nominal":
        head = f"nominal {profile.name} figures, not measured"
    else:
        head = f"rates of {device}{sm}{when} (profile {profile.name}){where}"
    note = f"; {prov.note}" if prov.note else ""
    return f"{head}{note}. {_kind_summary(profile)}"


def profile_origin(profile: DeviceProfile) -> dict[str, Any]:
    """Where a run's device profile came from, as plain JSON types for the report's header.

    ``line`` is ``origin_line``; ``rates`` maps every rate field to ``rate_origin``; the rest is the profile's
    ``Provenance`` (device, capability, date, torch, driver, file, how it was chosen, the note).
    """
    prov = profile.provenance
    return {
        "profile": profile.name,
        "chosen": prov.chosen or "given",
        "line": origin_line(profile),
        "device": prov.device,
        "capability": prov.capability,
        "measured_on": prov.date,
        "torch": prov.torch,
        "driver": prov.driver,
        "file": prov.file,
        "note": prov.note,
        "rates": {field: rate_origin(profile, field) for field in RATE_FIELDS},
    }
