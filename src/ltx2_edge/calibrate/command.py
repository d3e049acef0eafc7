"""``ltx2-edge calibrate``: measure this device's rates at the model's shapes and write its profile (<= 60 s).

Steps, each a tick of the progress bar: the GEMMs (bf16, fp8 rowwise where the GPU has FP8, int8), attention, the
video VAE's conv3d, host->device and device copies, checkpoint reads warm and cold, and last the runtime's own
device memory (after every library above has initialised). Shapes come from ``--checkpoint-path``'s config, else
LTX-2 19B's on a GPU and the tiny model's on a CPU (what CPU runs use), at W1 (``calibrate.shapes``). A rate that
cannot be measured here keeps the figure of the profile runs use now, marked "not measured" with the reason.
The document goes to ``--out`` or the cache folder (``profile_file.profiles_dir()``), atomically; a table of every
rate beside the profile it replaces ends the run.

This module orchestrates and prints; the timing is ``measure``'s and ``transfers``', the file format
``profile_file``'s. It never writes anything but the profile and ``transfers``' scratch file.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

import torch
from tqdm import tqdm

from ltx2_edge.calibrate import measure, transfers
from ltx2_edge.calibrate.choice import choose_profile
from ltx2_edge.calibrate.identity import device_identity, nvml_used_bytes, software
from ltx2_edge.calibrate.measure import Measurement, Timing
from ltx2_edge.calibrate.profile_file import SCHEMA, SCHEMA_VERSION, device_slug, profiles_dir, write_profile
from ltx2_edge.calibrate.shapes import W1, W1_BATCH, conv_shapes, gemm_shapes, w1_tokens
from ltx2_edge.checkpoint.configs import ltx2_config
from ltx2_edge.checkpoint.header import read_config
from ltx2_edge.errors import RequestError
from ltx2_edge.plan.profiles import DeviceProfile
from ltx2_edge.plan.provenance import RATE_FIELDS, RATE_LABELS, RATE_UNITS, rate_origin
from ltx2_edge.run_types import default_dtype

MiB = 1 << 20


@dataclass(frozen=True)
class Sizes:
    """How much each step moves: timing, copy size, scratch blocks, checkpoint bytes read, conv frames, cold reads."""

    timing: Timing
    copy_bytes: int
    scratch_blocks: int
    scratch_block_bytes: int
    checkpoint_read_bytes: int
    conv_frames: int
    cold_reps: int


SIZES: dict[tuple[str, bool], Sizes] = {  # (device type, --quick)
    ("cuda", False): Sizes(Timing(7, 0.02), 512 * MiB, 4, 256 * MiB, 2048 * MiB, 25, 2),
    ("cuda", True): Sizes(Timing(3, 0.005), 64 * MiB, 4, 32 * MiB, 512 * MiB, 9, 1),
    ("cpu", False): Sizes(Timing(5, 0.01), 64 * MiB, 4, 16 * MiB, 256 * MiB, 9, 1),
    ("cpu", True): Sizes(Timing(3, 0.001), 8 * MiB, 2, 4 * MiB, 64 * MiB, 5, 1),
}


@dataclass(frozen=True)
class CalibrateOptions:
    """``--device`` (None: the first GPU, else the CPU), ``--checkpoint-path``, ``--out``, ``--quick``, ``--quiet``."""

    device: str | None = None
    checkpoint_path: Path | None = None
    out: Path | None = None
    quick: bool = False
    quiet: bool = False


def resolve_device(name: str | None) -> torch.device:
    """``--device`` as a torch device, refused in one line when this machine has no such device."""
    if name is None:
        return torch.device("cuda:0") if torch.cuda.is_available() else torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise RequestError("device", name, "cpu, cuda or cuda:N") from None
    if device.type == "cpu":
        return device
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    index = 0 if device.index is None else device.index
    if device.type != "cuda" or index >= count:
        gpus = f"cuda:N with N below {count} (the GPUs this torch sees)" if count else "cuda (this torch sees no GPU)"
        raise RequestError("device", name, f"cpu, or {gpus}")
    return torch.device("cuda", index)


def _model(checkpoint: Path | None, device: torch.device) -> tuple[dict, str]:
    if checkpoint is not None:
        return read_config(checkpoint), f"the config of {checkpoint}"
    size = "full" if device.type == "cuda" else "tiny"
    return ltx2_config(size), f"LTX-2 19B {size} shapes (ltx2-edge's {size} config)"


def _reads(device: torch.device, checkpoint: Path | None, sizes: Sizes) -> list[Measurement]:
    if checkpoint is not None:
        blocks = transfers.checkpoint_blocks(checkpoint, sizes.checkpoint_read_bytes)
        return transfers.read_rates(device, checkpoint, blocks, sizes.timing, sizes.cold_reps, f"{checkpoint}")
    scratch = profiles_dir().parent  # the cache's disk: /tmp is often RAM, and a RAM file is never cold
    with transfers.scratch_checkpoint(scratch, sizes.scratch_blocks, sizes.scratch_block_bytes) as path:
        blocks = list(range(sizes.scratch_blocks))
        return transfers.read_rates(device, path, blocks, sizes.timing, sizes.cold_reps, "a scratch checkpoint")


def _fp8_capable(device: torch.device) -> bool:
    return device.type != "cuda" or torch.cuda.get_device_capability(device) >= (8, 9)


def _gemms(config: dict, device: torch.device, dtype: torch.dtype, timing: Timing) -> list[Measurement]:
    shapes = gemm_shapes(config, w1_tokens(config), W1_BATCH)
    out = [measure.gemm_rate(shapes, precision, device, dtype, timing) for precision in ("bf16", "int8")]
    if _fp8_capable(device):
        out.append(measure.gemm_rate(shapes, "fp8", device, dtype, timing))
    else:
        sm = "sm_{}{}".format(*torch.cuda.get_device_capability(device))
        out.append(Measurement("fp8_rowwise_tflops", out[1].value,
                               f"not measured: {sm} has no FP8 tensor cores (fp8 requests run int8 weights there), "
                               "so the int8 rate stands in", kind="not measured"))  # fmt: skip
    return out


def measure_all(opts: CalibrateOptions, device: torch.device, stream: TextIO, before_total: int | None = None,
                ) -> tuple[list[Measurement], str]:  # fmt: skip
    """Every step under a progress bar; returns the measurements (in step order) and what shapes were used.
    ``before_total``: NVML's device-wide used bytes before this process touched the GPU (the runtime step's
    fallback when NVML cannot attribute memory to this process)."""
    sizes = SIZES[(device.type, opts.quick)]
    config, workload = _model(opts.checkpoint_path, device)
    dtype, timing = default_dtype(device), sizes.timing
    tokens = w1_tokens(config)
    steps = [
        ("GEMM bf16/int8/fp8", lambda: _gemms(config, device, dtype, timing)),
        ("attention", lambda: [measure.attention_rate(config, tokens, device, dtype, timing)]),
        (
            "VAE conv3d",
            lambda: [measure.conv_rate(conv_shapes(config, tokens), device, dtype, timing, sizes.conv_frames)],
        ),  # fmt: skip
        ("copies", lambda: transfers.copy_rates(device, sizes.copy_bytes, timing)),
        ("checkpoint reads", lambda: _reads(device, opts.checkpoint_path, sizes)),
        ("runtime memory", lambda: [transfers.runtime_memory(device, before_total)]),
    ]
    results: list[Measurement] = []
    with tqdm(total=len(steps), desc="calibrate", unit="step", file=stream, disable=opts.quiet) as bar:
        for label, step in steps:
            bar.set_postfix_str(label)
            results.extend(step())
            bar.update()
            if device.type == "cuda":
                torch.cuda.empty_cache()  # each step's tensors go before the next allocates (and before NVML reads)
    tokens_text = f"{tokens.video} video, {tokens.audio} audio, {tokens.text} text tokens"
    w1 = f"{W1['width']}x{W1['height']}x{W1['num_frames']}"
    return results, f"{workload} at W1 ({w1}: {tokens_text}, CFG batch {W1_BATCH})"


def _entry(m: Measurement, previous: DeviceProfile) -> dict[str, Any]:
    if m.value is None:
        value = getattr(previous, m.field)
        how = f"{m.how}; the figure of profile {previous.name} stands in ({rate_origin(previous, m.field)})"
        kind = "not measured"
    else:
        value, how, kind = m.value, m.how, m.kind
    if m.field == "runtime_overhead_bytes":
        value = int(value)
    else:
        value = float(f"{value:.4g}")
    return {"value": value, "unit": RATE_UNITS[m.field], "kind": kind, "how": how,
            "samples": [float(f"{s:.4g}") for s in m.samples], "detail": m.detail}  # fmt: skip


def build_document(results: list[Measurement], workload: str, device: torch.device, previous: DeviceProfile,
                   opts: CalibrateOptions, seconds: float) -> dict[str, Any]:  # fmt: skip
    """The profile document (``profile_file``'s schema) of these measurements."""
    ident = device_identity(device)
    by_field = {m.field: m for m in results}
    missing = [f for f in RATE_FIELDS if f not in by_field]
    if missing:
        raise RuntimeError(f"calibration produced no {', '.join(missing)}: a step is missing")
    now = datetime.now(UTC)
    quick = " (--quick)" if opts.quick else ""
    cpu = device.type == "cpu"
    info: dict[str, Any] = {"name": ident.name, "capability": ident.capability, "integrated": ident.integrated}
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info.update(total_memory_bytes=int(props.total_memory), multiprocessors=int(props.multi_processor_count))
    return {
        "schema": SCHEMA,
        "schema_version": SCHEMA_VERSION,
        "name": device_slug(ident.name, ident.capability),
        "source": f"measured by ltx2-edge calibrate{quick} on {ident.name}, {now:%Y-%m-%d}",
        "device": info,
        "software": software(),
        "date": f"{now:%Y-%m-%d}",
        "measured_at": now.isoformat(timespec="seconds"),
        "options": {"device": str(device), "checkpoint_path": str(opts.checkpoint_path or ""), "quick": opts.quick},
        "quick": opts.quick,
        "seconds": round(seconds, 1),
        "workload": workload,
        "flags": {"unified": ident.integrated or cpu, "sdpa_materializes_scores": cpu},  # CPUs: one pool, math SDPA
        "replaces": {"profile": previous.name, "chosen": previous.provenance.chosen},
        "rates": {f: _entry(by_field[f], previous) for f in RATE_FIELDS},
    }


def _shown(field: str, value: float) -> str:
    return f"{value / 1024**3:.2f} GiB" if field == "runtime_overhead_bytes" else f"{value:.4g}"


def table(doc: dict[str, Any], previous: DeviceProfile) -> str:
    """Every rate: value, kind, the profile it replaces and the ratio, then how it was measured."""
    was = f"was ({previous.name})"
    rows = [("rate", "value", "unit", "kind", was, "ratio")]
    for field in RATE_FIELDS:
        entry, old = doc["rates"][field], getattr(previous, field)
        ratio = f"{entry['value'] / old:.2f}x" if old else "-"
        unit = "" if field == "runtime_overhead_bytes" else entry["unit"]
        rows.append((RATE_LABELS[field], _shown(field, entry["value"]), unit, entry["kind"], _shown(field, old),
                     ratio))  # fmt: skip
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    dev = doc["device"]
    soft = doc["software"]
    head = (f"{dev['name']} (capability {dev['capability']}), torch {soft['torch']}, CUDA {soft['cuda'] or '-'}, "
            f"driver {soft['driver'] or '-'}; {doc['workload']}; {doc['seconds']} s")  # fmt: skip
    hows = [f"  {RATE_LABELS[f]}: {doc['rates'][f]['how']}" for f in RATE_FIELDS]
    return "\n".join([head, "", *lines, "", "how:", *hows])


def run_calibrate(opts: CalibrateOptions, stream: TextIO | None = None) -> tuple[Path, DeviceProfile]:
    """Measure, write the profile, print the table (stdout) with the progress bar on ``stream`` (stderr)."""
    started = time.perf_counter()
    device = resolve_device(opts.device)  # counts GPUs without creating a CUDA context
    before_total = nvml_used_bytes(device)[1] if device.type == "cuda" else None  # before CUDA holds any memory
    if opts.checkpoint_path is not None and not Path(opts.checkpoint_path).is_file():
        raise RequestError("checkpoint-path", str(opts.checkpoint_path), "an existing LTX-2 .safetensors file")
    previous, _ = choose_profile(device_identity(device))
    results, workload = measure_all(opts, device, stream or sys.stderr, before_total)
    doc = build_document(results, workload, device, previous, opts, time.perf_counter() - started)
    path = Path(opts.out) if opts.out is not None else profiles_dir() / f"{doc['name']}.json"
    if path.exists() and path.is_dir():
        raise RequestError("out", str(path), "a file path ending in .json (it is a folder)")
    profile = write_profile(doc, path)
    print(table(doc, previous))
    used = path.parent.resolve() == profiles_dir().resolve()
    where = "runs on this device use it from now on" if used else f"runs read profiles from {profiles_dir()}"
    print(f"\nwrote {path} ({where}); to ship it with ltx2-edge, copy it into src/ltx2_edge/plan/device_profiles/")
    return path, replace(profile, provenance=replace(profile.provenance, chosen="calibrated"))
