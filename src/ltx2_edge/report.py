"""What a run says: per-stage records (time, peak memory, technique), a printed table, and the JSON file.

Measurement is honest: on CUDA the device is synchronised before a timer is read and the peak is the
allocator's ``max_memory_allocated`` since the stage began; on CPU the peak is the process's resident set,
sampled every few milliseconds while the stage runs.
"""

from __future__ import annotations

import json
import os
import platform
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import psutil
import torch

GIB = 1024**3


@dataclass
class StageRecord:
    """One stage of one run."""

    stage: str
    seconds: float
    peak_bytes: int
    memory_kind: str  # "cuda allocated" or "process RSS"
    technique: str
    details: dict[str, Any] = field(default_factory=dict)


class _RssSampler:
    """Samples this process's RSS on a daemon thread; ``peak`` is the largest value seen."""

    def __init__(self, interval_s: float = 0.005) -> None:
        self._proc = psutil.Process(os.getpid())
        self._interval = interval_s
        self._stop = threading.Event()
        self.peak = self._proc.memory_info().rss
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self.peak = max(self.peak, self._proc.memory_info().rss)

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        return max(self.peak, self._proc.memory_info().rss)


@dataclass
class RunReport:
    """Everything a run reports; ``to_json`` is what lands beside the video as ``OUT.report.json``."""

    request: dict[str, Any]
    device: dict[str, Any]
    versions: dict[str, str]
    stages: list[StageRecord] = field(default_factory=list)
    total_seconds: float = 0.0
    output_path: str | None = None
    notes: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    @contextmanager
    def measure(self, stage: str, technique: str, device: torch.device) -> Iterator[StageRecord]:
        """Time ``stage`` and record its peak memory; the yielded record's ``details`` can be filled inside."""
        record = StageRecord(stage, 0.0, 0, "", technique)
        cuda = device.type == "cuda"
        sampler = None
        if cuda:
            torch.cuda.synchronize(device)
            torch.cuda.reset_peak_memory_stats(device)
        else:
            sampler = _RssSampler()
        start = time.perf_counter()
        try:
            yield record
        finally:
            if cuda:
                torch.cuda.synchronize(device)
            record.seconds = time.perf_counter() - start
            if cuda:
                record.peak_bytes = int(torch.cuda.max_memory_allocated(device))
                # What the budget's allocator cap really holds: allocated plus the allocator's cached blocks.
                record.details["peak_reserved_bytes"] = int(torch.cuda.max_memory_reserved(device))
                record.memory_kind = "cuda allocated"
            elif sampler is not None:
                record.peak_bytes = sampler.stop()
                record.memory_kind = "process RSS"
            self.stages.append(record)

    def table(self) -> str:
        """The per-stage table as printed at the end of a run."""
        rows = [("stage", "time s", "peak GiB", "memory", "technique")]
        for s in self.stages:
            rows.append((s.stage, f"{s.seconds:.2f}", f"{s.peak_bytes / GIB:.2f}", s.memory_kind, s.technique))
            # Parts of a stage worth their own line (compilation inside the denoise stage): time only.
            for label, seconds, note in s.details.get("sub_rows", ()):
                rows.append((f"  {label}", f"{seconds:.2f}", "", "", note))
        rows.append(("total", f"{self.total_seconds:.2f}", "", "", ""))
        widths = [max(len(r[i]) for r in rows) for i in range(5)]
        lines = [" | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
        lines.insert(1, "-+-".join("-" * w for w in widths))
        return "\n".join(lines)

    def to_json(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return {
            "request": self.request,
            "device": self.device,
            "versions": self.versions,
            "stages": [asdict(s) for s in self.stages],
            "total_seconds": self.total_seconds,
            "output_path": self.output_path,
            "notes": self.notes,
            **self.extra,
        }

    def write(self, path: Path) -> None:
        """Write the JSON atomically (temp file + rename)."""
        tmp = path.with_name(f".{path.name}.partial-{os.getpid()}")
        try:
            tmp.write_text(json.dumps(self.to_json(), indent=2, default=str))
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)


def device_info(device: torch.device) -> dict[str, Any]:
    """What ran the job: GPU name, memory, compute capability, or the CPU."""
    info: dict[str, Any] = {
        "type": device.type,
        "host": platform.node(),
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "host_memory_bytes": psutil.virtual_memory().total,
    }
    if device.type == "cuda":
        p = torch.cuda.get_device_properties(device)
        info.update(
            name=p.name,
            total_memory_bytes=p.total_memory,
            capability=f"{p.major}.{p.minor}",
            integrated=bool(getattr(p, "is_integrated", False)),
            cuda=torch.version.cuda,
        )
    return info


def versions() -> dict[str, str]:
    """Versions of what produced the numbers."""
    from importlib.metadata import PackageNotFoundError, version

    from ltx2_edge import __version__

    out = {"python": platform.python_version(), "torch": torch.__version__, "ltx2-edge": __version__}
    for pkg in ("ltx-core", "transformers", "av", "safetensors"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = "not installed"
    return out
