"""What a run says: per-stage records (time, peak memory, technique, file reads), a printed table, and the JSON file.

Measurement is honest: on CUDA the device is synchronised before a timer is read and the peak is the
allocator's ``max_memory_allocated`` since the stage began; on CPU the peak is the process's resident set,
sampled every few milliseconds while the stage runs. Every stage also records what the process read from files
while it ran (``read_meter``: bytes, bytes from the disk, seconds of reading) against the plan's prediction for
its loads and the device profile's checkpoint read rates, so a cold start shows whether the disk bound it.
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

from ltx2_edge.atomic import temp_path
from ltx2_edge.read_meter import ReadMeter, ReadSample

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
        reads = ReadMeter()
        start = time.perf_counter()
        try:
            yield record
        finally:
            if cuda:
                torch.cuda.synchronize(device)
            record.seconds = time.perf_counter() - start
            sample = reads.stop()
            if sample is not None:
                record.details["reads"] = reads_details(sample, self.extra.get("plan"), stage)
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
            reads = s.details.get("reads")
            if reads and reads["bytes"]:
                rows.append(("  file reads", f"{reads['seconds']:.2f}", "", "", reads["summary"]))
        rows.append(("total", f"{self.total_seconds:.2f}", "", "", ""))
        total = self.reads_total()
        if total is not None and total["bytes"]:
            rows.append(("  file reads", f"{total['seconds']:.2f}", "", "", total["summary"]))
        widths = [max(len(r[i]) for r in rows) for i in range(5)]
        lines = [" | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
        lines.insert(1, "-+-".join("-" * w for w in widths))
        return "\n".join(lines)

    def reads_total(self) -> dict[str, Any] | None:
        """Every stage's file reads summed, against the plan's loads and the profile's rates (None when no stage
        measured its reads). ``disk_bound_seconds``: the bytes that came from the disk at the profile's cold rate,
        the floor a cold start is held to."""
        rows = [s.details["reads"] for s in self.stages if "reads" in s.details]
        if not rows:
            return None
        sample = ReadSample(sum(r["bytes"] for r in rows), sum(r["disk_bytes"] for r in rows),
                            round(sum(r["seconds"] for r in rows), 4), round(sum(r["span_seconds"] for r in rows), 4),
                            rows[0]["resolution_s"])  # fmt: skip
        return reads_details(sample, self.extra.get("plan"), None)

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
            "reads": self.reads_total(),
            **self.extra,
        }

    def write(self, path: Path) -> None:
        """Write the JSON atomically (temp file + rename)."""
        tmp = temp_path(path)  # short whatever the target's name: a name at NAME_MAX still gets its temporary
        try:
            tmp.write_text(json.dumps(self.to_json(), indent=2, default=str))
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)


# The plan stages one report row covers: the text row runs Gemma, then the connectors (the plan's embeddings stage).
_PLAN_STAGES = {"text_encode": ("text_encode", "embeddings")}


def reads_details(sample: ReadSample, plan: dict[str, Any] | None, stage: str | None) -> dict[str, Any]:
    """A stage's reads (``stage`` None: the whole run's) as the report holds them: the measurement, the plan's
    predicted load bytes and seconds (warm and cold), the profile's checkpoint read rates, the seconds those rates
    give for what was read (the disk's bytes at the cold rate, the rest at the warm one) and one line saying it."""
    out: dict[str, Any] = sample.to_dict()
    profile = (plan or {}).get("profile") or {}
    warm, cold = profile.get("file_read_warm_gbps"), profile.get("file_read_cold_gbps")
    names = _PLAN_STAGES.get(stage, (stage,)) if stage is not None else None
    planned = [p for p in (plan or {}).get("stages", ()) if names is None or p.get("name") in names]
    if planned and "file_read_bytes" in planned[0]:
        out.update(predicted_bytes=sum(p["file_read_bytes"] for p in planned),
                   predicted_warm_seconds=round(sum(p["warm_load_seconds"] for p in planned), 4),
                   predicted_cold_seconds=round(sum(p["cold_load_seconds"] for p in planned), 4))  # fmt: skip
    line = f"read {_bytes(sample.bytes)} in {sample.seconds:.2f} s"
    if sample.gbps is not None:
        line += f" = {sample.gbps:.2f} GB/s"
    line += f", {_bytes(sample.disk_bytes)} from the disk"
    if warm and cold:
        disk_s = sample.disk_bytes / (cold * 1e9)
        expected = disk_s + (sample.bytes - sample.disk_bytes) / (warm * 1e9)
        out.update(profile_warm_gbps=warm, profile_cold_gbps=cold, disk_bound_seconds=round(disk_s, 4),
                   expected_seconds=round(expected, 4))  # fmt: skip
        if expected > 0 and sample.seconds > 0:
            out["vs_expected"] = round(sample.seconds / expected, 3)
            bound = "disk-bound" if disk_s * 2 > expected else "page-cache reads"
            line += (f": {bound}, {out['vs_expected']:.2f}x the {expected:.2f} s the profile's rates give ({cold:g} "
                     f"GB/s cold, {warm:g} warm)")  # fmt: skip
    if "predicted_bytes" in out:
        line += (f"; planned {_bytes(out['predicted_bytes'])}: {out['predicted_warm_seconds']:.2f} s warm / "
                 f"{out['predicted_cold_seconds']:.1f} s cold")  # fmt: skip
    out["summary"] = line
    return out


def _bytes(n: int) -> str:
    return f"{n / 1e9:.2f} GB" if n >= 1e8 else f"{n / 1e6:.1f} MB"


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
