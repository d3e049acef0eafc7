"""``ltx2-edge calibrate``: measure this device's rates at the model's shapes and write its profile (<= 60 s).

Steps, each a tick of the progress bar: the GEMMs (bf16, fp8 rowwise where the GPU has FP8, int8), attention, the
video VAE's conv3d, host->device and device copies, checkpoint reads warm and cold; then the timings the rates leave
out (``plan.timings``): the transformer's loads and a denoising step's non-GEMM work on mini transformers
(``load_rates``, ``block_timing``), the decoders' loads and forward (with ``--checkpoint-path``), Gemma loaded whole
and its first encode (with ``--gemma-root``), the MP4 encoder (``encode_rate``); the runtime's own device memory
(after every library above has initialised); last a fresh process's start-up (``startup``; not with ``--quick``),
which times Gemma's load and first encode again as a run's fresh process meets them. Shapes come from
``--checkpoint-path``'s config, else LTX-2 19B's on a GPU and the tiny model's on a CPU (what CPU runs use), at W1
(``calibrate.shapes``). A rate that
cannot be measured here keeps the figure of the profile runs use now, marked "not measured" with the reason.
The document goes to ``--out`` or the cache folder (``profile_file.profiles_dir()``), atomically; a table of every
rate beside the profile it replaces ends the run.

This module orchestrates and prints; the timing is ``measure``'s, ``transfers``' and the timing modules', the file
format ``profile_file``'s. It never writes anything but the profile and the steps' scratch files (removed after).
"""

from __future__ import annotations

import dataclasses
import sys
import time
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

import torch
from tqdm import tqdm

from ltx2_edge.calibrate import block_timing, encode_rate, load_rates, measure, mini_model, startup, transfers
from ltx2_edge.calibrate.choice import choose_profile
from ltx2_edge.calibrate.identity import device_identity, nvml_used_bytes, software
from ltx2_edge.calibrate.measure import Measurement, Timing
from ltx2_edge.calibrate.profile_file import SCHEMA, SCHEMA_VERSION, device_slug, profiles_dir, write_profile
from ltx2_edge.calibrate.shapes import W1, W1_BATCH, conv_shapes, gemm_shapes, w1_tokens
from ltx2_edge.calibrate.timings_file import timings_to_document
from ltx2_edge.checkpoint.configs import ltx2_config
from ltx2_edge.checkpoint.header import read_config
from ltx2_edge.checkpoint.prequantized import find_checkpoint_copy
from ltx2_edge.checkpoint.validate import inspect_gemma_folder
from ltx2_edge.errors import CheckpointError, RequestError
from ltx2_edge.mp4.mux import VIDEO_ENCODER
from ltx2_edge.plan.profiles import DeviceProfile
from ltx2_edge.plan.provenance import RATE_FIELDS, RATE_LABELS, RATE_UNITS, rate_origin
from ltx2_edge.plan.timings import Timings
from ltx2_edge.quant.policy import QuantPolicy
from ltx2_edge.quant.precision import resolve_precision
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
    """``--device`` (None: the first GPU, else the CPU), ``--checkpoint-path``, ``--out``, ``--quick``, ``--quiet``,
    ``--gemma-root`` (with ``--checkpoint-path``: the start-up step builds the run's setup on both)."""

    device: str | None = None
    checkpoint_path: Path | None = None
    out: Path | None = None
    quick: bool = False
    quiet: bool = False
    gemma_root: Path | None = None


@dataclass
class TimingResults:
    """What the timing steps measured (``plan.timings`` sections) and their raw figures for the profile's detail."""

    timings: Timings = Timings()
    detail: dict[str, Any] | None = None
    notes: list[str] | None = None
    step_seconds: dict[str, float] = dataclasses.field(default_factory=dict)  # each calibrate step's own wall time


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


def streamed_file(checkpoint: Path, device: torch.device) -> tuple[Path, str]:
    """The file a run on ``checkpoint`` streams its blocks from (``--prequantized auto``): the pre-quantized copy
    of this device's precision where one was made from it, else the checkpoint; and why, for the profile."""
    precision, _ = resolve_precision("auto", device)
    if precision == "bf16":
        return checkpoint, f"{checkpoint}"
    try:
        copy = find_checkpoint_copy(checkpoint, precision)
    except CheckpointError as exc:
        return checkpoint, f"{checkpoint} (its {precision} copy is refused, so runs read this: {exc})"
    if copy is None:
        return checkpoint, f"{checkpoint}"
    return copy.path, f"{copy.path}, the {precision} copy runs on {checkpoint.name} stream their blocks from"


def _reads(device: torch.device, checkpoint: Path | None, sizes: Sizes) -> list[Measurement]:
    if checkpoint is not None:
        path, what = streamed_file(Path(checkpoint), device)
        blocks = transfers.checkpoint_blocks(path, sizes.checkpoint_read_bytes)
        return transfers.read_rates(device, path, blocks, sizes.timing, sizes.cold_reps, what)
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


def _rates_so_far(previous: DeviceProfile, results: list[Measurement]) -> DeviceProfile:
    """``previous`` with this run's rates measured so far (the step timings' FLOP floors use this device's own)."""
    rates = {m.field: m.value for m in results if m.value is not None and m.field != "runtime_overhead_bytes"}
    return replace(previous, **rates)


def _timing_steps(opts: CalibrateOptions, device: torch.device, config: dict, results: list[Measurement],
                  previous: DeviceProfile, out: TimingResults, label: Any) -> list[tuple[str, Any]]:  # fmt: skip
    """The timing steps (each appends its section to ``out``), to run after the rates."""
    dtype = default_dtype(device)
    precision, _ = resolve_precision("auto", device)
    policy = QuantPolicy.from_flags(precision)
    scratch = profiles_dir().parent
    state: dict[str, Any] = {}
    out.detail, out.notes = {}, []
    quick = opts.quick

    def transformer() -> None:
        ckpt = opts.checkpoint_path
        with mini_model.source_file(ckpt, config, 4, scratch, device) as path:
            loads = load_rates.transformer_loads(path, config, device, dtype, policy, 1 if quick else 2, not quick)
            pinned = load_rates.pinned_loads(path, config, device, dtype, policy)
        populate = load_rates.populate_rate(device) if not isinstance(pinned, str) else pinned
        stages: dict = {}
        decoder = None
        if ckpt is not None:  # the decoders and connectors from the checkpoint itself, whatever its block count
            stages, decoder = load_rates.stage_loads(ckpt, device, dtype)
        gemma: load_rates.GemmaLoad | str = "not measured (no --gemma-root)"
        if ckpt is not None and opts.gemma_root is not None:
            gemma = load_rates.gemma_load(opts.gemma_root, device, dtype, policy, ckpt)
        if isinstance(pinned, str):
            out.notes.append(f"pinned blocks {pinned}")
        if ckpt is not None and path == ckpt:
            src = str(ckpt)
        else:
            src = "a scratch file of random weights" + (f" ({ckpt} has fewer than 4 blocks)" if ckpt else "")
        if isinstance(pinned, str):
            pin_how = pinned
        else:
            pin_how = (f"4 of 4 blocks streamed from pinned memory {pinned.seconds:.3f} s (packing them "
                       f"{pinned.parts['pack_s']:.3f} s, released in {pinned.released:.3f} s)") + (
                f"; a pinned buffer of {populate[1] / 1e9:.1f} GB made at {populate[0]:.2f} GB/s"
                if not isinstance(populate, str) else f"; the pinned buffer's making {populate}")  # fmt: skip
        unresolved = (
            ""
            if load_rates.resolved_blocks(loads) or load_rates.WIDE in loads.seconds
            else (": no clear difference, so each block is charged a quarter of the 4-block load (an upper bound)")
        )
        how = (f"the run's loaders on {src} in the page cache: {precision} transformers of 2 and 4 blocks "
               f"({loads.seconds[2]:.3f} / {loads.seconds[4]:.3f} s{unresolved})"
               + (f", of {load_rates.WIDE} blocks {loads.seconds[load_rates.WIDE]:.3f} s (the per-block rate's)"
                  if load_rates.WIDE in loads.seconds else "") + f", {pin_how}"
               + ("" if stages else "; the decoders and connectors not measured (no --checkpoint-path)")
               + (f"; Gemma from {opts.gemma_root} loaded whole in {gemma.seconds:.3f} s ({gemma.bytes / 1e9:.2f} GB), "
                  f"its first encode of 2 prompts {gemma.encode_s:.3f} s, the embeddings processor's first pass "
                  f"{gemma.embeddings_first_s:.3f} s" if isinstance(gemma, load_rates.GemmaLoad)
                  else f"; Gemma {gemma}"))  # fmt: skip
        copy = next((m.value for m in results if m.field == "h2d_pinned_gbps" and m.value), None)
        timings = load_rates.load_timings(loads, pinned, stages, how, populate, copy, gemma)
        out.detail["load"] = {"transformer_s": loads.seconds, "stages": stages,
                              "pinned": pinned if isinstance(pinned, str) else [pinned.seconds, pinned.released,
                                                                                pinned.parts],
                              "populate": populate,
                              "gemma": gemma if isinstance(gemma, str) else dataclasses.asdict(gemma)}  # fmt: skip
        state["models"] = loads.models
        decode = load_rates.decode_timings(decoder, config, device, dtype, quick) if decoder is not None else None
        del decoder
        out.timings = replace(out.timings, load=timings, decode=decode)

    def steps() -> None:
        models = state.pop("models")
        rates = _rates_so_far(previous, results)
        try:
            step, detail = block_timing.measure_step_timings(models, config, device, dtype, rates, precision, quick,
                                                             label)  # fmt: skip
        except block_timing.StepTimingRefused as exc:  # the rest of the profile still stands; runs say what's missing
            out.notes.append(f"denoise step timings not measured: {exc}")
            return
        finally:
            del models
        out.detail["step"] = detail
        out.timings = replace(out.timings, step=step)

    def mp4() -> None:
        sizes = encode_rate.QUICK_SIZES if quick else encode_rate.SIZES
        frames = (6, 3) if quick else (48, 16)
        out.timings = replace(out.timings, encode=encode_rate.encode_timings(scratch, VIDEO_ENCODER, frames, sizes))

    return [("loads", transformer), ("denoise steps", steps), ("MP4 encode", mp4)]


def measure_all(opts: CalibrateOptions, device: torch.device, stream: TextIO, before_total: int | None = None,
                previous: DeviceProfile | None = None, timing: TimingResults | None = None,
                ) -> tuple[list[Measurement], str]:  # fmt: skip
    """Every step under a progress bar; returns the measurements (in step order) and what shapes were used.
    ``before_total``: NVML's device-wide used bytes before this process touched the GPU (the runtime step's
    fallback when NVML cannot attribute memory to this process). ``timing``: filled with the timing steps'
    results (``previous``: the profile runs use now, whose rates stand in for any not measured yet); None skips
    those steps."""
    sizes = SIZES[(device.type, opts.quick)]
    config, workload = _model(opts.checkpoint_path, device)
    dtype, timing_rule = default_dtype(device), sizes.timing
    tokens = w1_tokens(config)
    results: list[Measurement] = []
    steps = [
        ("GEMM bf16/int8/fp8", lambda: _gemms(config, device, dtype, timing_rule)),
        ("attention", lambda: [measure.attention_rate(config, tokens, device, dtype, timing_rule)]),
        (
            "VAE conv3d",
            lambda: [measure.conv_rate(conv_shapes(config, tokens), device, dtype, timing_rule, sizes.conv_frames)],
        ),  # fmt: skip
        ("copies", lambda: transfers.copy_rates(device, sizes.copy_bytes, timing_rule)),
        ("checkpoint reads", lambda: _reads(device, opts.checkpoint_path, sizes)),
    ]
    with tqdm(total=len(steps) + (5 if timing is not None else 1), desc="calibrate", unit="step", file=stream,
              disable=opts.quiet) as bar:  # fmt: skip
        timing_steps = []
        if timing is not None:
            timing_steps = _timing_steps(opts, device, config, results, previous or choose_profile(
                device_identity(device))[0], timing, bar.set_postfix_str)  # fmt: skip
        runtime = [("runtime memory", lambda: [transfers.runtime_memory(device, before_total)])]
        for label, step in [*steps, *((n, _none(f)) for n, f in timing_steps), *runtime]:
            bar.set_postfix_str(label)
            began = time.perf_counter()
            results.extend(step())
            bar.update()
            if device.type == "cuda":
                torch.cuda.empty_cache()  # each step's tensors go before the next allocates (and before NVML reads)
            if timing is not None:
                timing.step_seconds[label] = round(time.perf_counter() - began, 2)
        if timing is not None:
            bar.set_postfix_str("start-up")
            began = time.perf_counter()
            _startup(opts, device, timing)
            timing.step_seconds["start-up"] = round(time.perf_counter() - began, 2)
            bar.update()
    tokens_text = f"{tokens.video} video, {tokens.audio} audio, {tokens.text} text tokens"
    w1 = f"{W1['width']}x{W1['height']}x{W1['num_frames']}"
    return results, f"{workload} at W1 ({w1}: {tokens_text}, CFG batch {W1_BATCH})"


def _none(fn: Any) -> Any:
    def run() -> list[Measurement]:
        fn()
        return []

    return run


def _startup(opts: CalibrateOptions, device: torch.device, timing: TimingResults) -> None:
    if opts.quick:
        (timing.notes or []).append("start-up not measured (--quick)")
        return
    gemma = opts.gemma_root if opts.checkpoint_path is not None else None
    load = timing.timings.load
    # Gemma again in a fresh process: calibrate's own first encode (the first on the box at those shapes) took 3.6 s
    # on the H200 against the runs' ~1.1 s (call 19); the child meets the caches as a run does.
    text = resolve_precision("auto", device)[0] if gemma is not None and load and load.gemma_s is not None else None
    times, fresh = startup.measure_startup(str(device), opts.checkpoint_path, gemma, text=text)
    timing.timings = replace(timing.timings, startup=times)
    if fresh is None or load is None:
        return
    if timing.detail is not None:
        timing.detail.setdefault("load", {})["gemma_fresh"] = dataclasses.asdict(fresh)
    if fresh.seconds is None or fresh.encode_s is None:
        (timing.notes or []).append(f"Gemma in a fresh process {fresh.why}: calibrate's own Gemma figures stand")
        return
    embeddings = (f", the embeddings processor loaded in {fresh.embeddings_s:.3f} s and first run in "
                  f"{fresh.embeddings_first_s:.3f} s" if fresh.embeddings_s is not None else "")  # fmt: skip
    how = (f"{load.how}; in a fresh process after that (a run's text stage: the caches as calibrate left them) Gemma "
           f"loaded in {fresh.seconds:.3f} s and first encoded in {fresh.encode_s:.3f} s{embeddings}, the figures the "
           "plan uses")  # fmt: skip
    fields: dict[str, Any] = {"gemma_s": fresh.seconds, "gemma_encode_s": fresh.encode_s, "how": how}
    if fresh.embeddings_s is not None and load.embeddings_bytes:
        fields.update(embeddings_s=fresh.embeddings_s, embeddings_first_s=fresh.embeddings_first_s)
    timing.timings = replace(timing.timings, load=replace(load, **fields))


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
                   opts: CalibrateOptions, seconds: float, timing: TimingResults | None = None,
                   ) -> dict[str, Any]:  # fmt: skip
    """The profile document (``profile_file``'s schema) of these measurements (and ``timing``'s sections)."""
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
        **(_timing_entries(timing) if timing is not None else {}),
    }


def _timing_entries(timing: TimingResults) -> dict[str, Any]:
    missing = timing.timings.missing()
    return {
        "timings": timings_to_document(timing.timings),
        "timings_detail": {
            "raw": timing.detail or {},
            "not_measured": missing,
            "notes": timing.notes or [],
            "step_seconds": timing.step_seconds,
        },
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
    return "\n".join([head, "", *lines, "", "how:", *hows, *timing_lines(doc)])


def timing_lines(doc: dict[str, Any]) -> list[str]:
    """The timing sections of ``doc``, one line each (what was measured, how), and those not measured."""
    timings = doc.get("timings")
    if timings is None:
        return []
    lines = ["", "timings beyond the rates (plan.timings):"]
    for name, section in timings.items():
        lines.append(f"  {name}: {section.get('how', '')}")
    detail = doc.get("timings_detail") or {}
    for name in detail.get("not_measured", []):
        lines.append(f"  {name}: not measured")
    lines += [f"  note: {n}" for n in detail.get("notes", [])]
    if detail.get("step_seconds"):
        lines.append(
            "calibrate's own steps, s: " + ", ".join(f"{k} {v:.1f}" for k, v in detail["step_seconds"].items())
        )
    return lines


def run_calibrate(opts: CalibrateOptions, stream: TextIO | None = None) -> tuple[Path, DeviceProfile]:
    """Measure, write the profile, print the table (stdout) with the progress bar on ``stream`` (stderr)."""
    started = time.perf_counter()
    device = resolve_device(opts.device)  # counts GPUs without creating a CUDA context
    before_total = nvml_used_bytes(device)[1] if device.type == "cuda" else None  # before CUDA holds any memory
    if opts.checkpoint_path is not None and not Path(opts.checkpoint_path).is_file():
        raise RequestError("checkpoint-path", str(opts.checkpoint_path), "an existing LTX-2 .safetensors file")
    if opts.gemma_root is not None and (opts.checkpoint_path is None or not Path(opts.gemma_root).is_dir()):
        why = "a Gemma 3 folder" if opts.checkpoint_path is not None else "given together with --checkpoint-path"
        raise RequestError("gemma-root", str(opts.gemma_root), why)
    if opts.gemma_root is not None and not opts.quick:
        inspect_gemma_folder(opts.gemma_root)  # its one-line error now, not from the start-up step 40 s in
    previous, _ = choose_profile(device_identity(device))
    timing = TimingResults()
    results, workload = measure_all(opts, device, stream or sys.stderr, before_total, previous, timing)
    doc = build_document(results, workload, device, previous, opts, time.perf_counter() - started, timing)
    path = Path(opts.out) if opts.out is not None else profiles_dir() / f"{doc['name']}.json"
    if path.exists() and path.is_dir():
        raise RequestError("out", str(path), "a file path ending in .json (it is a folder)")
    profile = write_profile(doc, path)
    print(table(doc, previous))
    used = path.parent.resolve() == profiles_dir().resolve()
    where = "runs on this device use it from now on" if used else f"runs read profiles from {profiles_dir()}"
    print(f"\nwrote {path} ({where}); to ship it with ltx2-edge, copy it into src/ltx2_edge/plan/device_profiles/")
    return path, replace(profile, provenance=replace(profile.provenance, chosen="calibrated"))
