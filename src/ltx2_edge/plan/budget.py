"""The memory budget: how big it is, what it covers, and how a size on the command line becomes bytes.

Two shapes of budget (README.md, "Memory budget and 8-bit weights"; measured in docs/benchmarks.md):

* **one pool** (unified memory: a Jetson, whose ``is_integrated`` is true, or any GPU with ``--unified``):
  the budget bounds device allocations + pinned host buffers + anonymous host memory holding weights or
  activations. Page cache of memory-mapped checkpoint files does not count (the kernel reclaims it), so
  there the checkpoint file itself is where streamed weights wait.
* **discrete**: the budget caps device memory; host memory (pinned + anonymous) has its own cap,
  ``--host-budget``, by default what the OS reports available minus a margin.

This module is pure: it never asks the OS or the GPU anything. Callers pass what they measured
(``is_integrated``, the OS-available figure), so every rule here is testable on any machine.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from fractions import Fraction
from typing import Literal

from ltx2_edge.errors import RequestError

GiB = 1024**3
DEFAULT_BUDGET_BYTES = 32 * GiB
HOST_MARGIN_FRACTION = 0.10
HOST_MARGIN_CAP_BYTES = 4 * GiB
MAX_SIZE_BYTES = 2**63 - 1  # what the memory figures below are compared with (8 EiB)
_MAX_SIZE_CHARS = 64
_SIZE_ALLOWED = "a positive size below 8 EiB such as 32GiB, 24GB or none"

# Binary units for the bare letters (k, m, g, t), as docker and java -Xmx read them; "GB" is decimal.
_UNITS: dict[str, int] = {
    "": 1,
    "b": 1,
    "k": 1024,
    "kib": 1024,
    "kb": 1000,
    "m": 1024**2,
    "mib": 1024**2,
    "mb": 1000**2,
    "g": 1024**3,
    "gib": 1024**3,
    "gb": 1000**3,
    "t": 1024**4,
    "tib": 1024**4,
    "tb": 1000**4,
}
_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*([a-z]*)\s*$")


def parse_size(text: str, field: str = "budget") -> int | None:
    """``"32GiB"``, ``"24GB"``, ``"16g"``, ``"1.5TiB"``, ``"1073741824"`` -> bytes; ``"none"`` -> None (unlimited).

    ``field`` names the option in the error (``budget``, ``host-budget``), so each reports its own name.
    Raises ``RequestError`` for zero, negative, empty or unknown-unit sizes.
    """
    raw = str(text)
    if raw.strip().lower() == "none":
        return None
    match = _SIZE_RE.match(raw.lower()) if len(raw) <= _MAX_SIZE_CHARS else None
    if match is None or match.group(2) not in _UNITS:
        raise RequestError(field, text, _SIZE_ALLOWED)
    value = int(Fraction(match.group(1)) * _UNITS[match.group(2)])  # exact: no float overflow, no rounding
    if not 0 < value <= MAX_SIZE_BYTES:
        raise RequestError(field, text, _SIZE_ALLOWED)
    return value


def format_gib(n: int | None) -> str:
    """Bytes as ``"12.3 GiB"``; None as ``"unlimited"``."""
    return "unlimited" if n is None else f"{n / GiB:.1f} GiB"


def default_host_budget(host_available_bytes: int) -> int:
    """What the OS reports available minus a margin of min(10 %, 4 GiB), never below zero."""
    margin = min(int(host_available_bytes * HOST_MARGIN_FRACTION), HOST_MARGIN_CAP_BYTES)
    return max(host_available_bytes - margin, 0)


@dataclass(frozen=True)
class Budget:
    """A memory budget the planner must fit.

    ``device_bytes``: the cap on device memory, or, when ``unified``, on the one pool (device + pinned host
    + anonymous host). None means unlimited. ``host_bytes``: the separate cap on pinned + anonymous host
    memory of a discrete GPU; None when unified (the pool already covers host) or unlimited.
    ``host_note`` says where the host figure came from, for the report.
    """

    device_bytes: int | None
    host_bytes: int | None
    unified: bool
    host_note: str = ""

    @classmethod
    def for_device(
        cls,
        budget_bytes: int | None = DEFAULT_BUDGET_BYTES,
        *,
        is_integrated: bool,
        unified: bool = False,
        host_budget: int | None | Literal["auto"] = "auto",
        host_available_bytes: int | None = None,
    ) -> Budget:
        """The budget for one device.

        ``budget_bytes``: the ``--budget`` value (None = unlimited). ``is_integrated``: the device's
        ``is_integrated`` property (Jetson); with ``unified`` (``--unified``) it selects the one-pool rule.
        ``host_budget``: the ``--host-budget`` value, None for unlimited, ``"auto"`` when not given: then
        ``host_available_bytes`` (the OS's available-memory figure) minus a margin. A ``--host-budget`` on a
        unified device is refused rather than ignored: the one ``--budget`` already covers host memory.
        """
        if is_integrated or unified:
            if host_budget != "auto":
                why = "integrated GPU" if is_integrated else "--unified"
                raise RequestError(
                    "host-budget",
                    host_budget,
                    f"not used with one memory pool ({why}): --budget already covers host memory",
                )
            return cls(device_bytes=budget_bytes, host_bytes=None, unified=True)
        if host_budget == "auto":
            if host_available_bytes is None:
                raise RequestError(
                    "host-budget", "auto", "pass --host-budget, or the OS-available host memory to derive it"
                )
            note = f"OS-available {format_gib(host_available_bytes)} minus margin"
            return cls(budget_bytes, default_host_budget(host_available_bytes), False, note)
        return cls(budget_bytes, host_budget, False, "--host-budget" if host_budget is not None else "")

    def with_device_bytes(self, device_bytes: int | None) -> Budget:
        """The same budget with another device (or pool) size: what the minimum-budget search varies."""
        return Budget(device_bytes, self.host_bytes, self.unified, self.host_note)

    def describe(self) -> str:
        """One line for the report, e.g. ``32.0 GiB, one pool (device + pinned + anonymous host)``."""
        if self.unified:
            return (
                f"{format_gib(self.device_bytes)}, one pool (device + pinned + anonymous host;"
                " page cache of the checkpoint files not counted)"
            )
        host = format_gib(self.host_bytes)
        note = f" ({self.host_note})" if self.host_note else ""
        return f"device {format_gib(self.device_bytes)}; host {host}{note} for pinned + anonymous memory"
