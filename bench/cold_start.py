"""Cold and warm loads against the disk (issue 16, item 2): the transformer and Gemma from the BF16 originals and from
their pre-quantized copies, each in a fresh process, right after the page cache of its files was dropped (cold) and
again with them cached (warm), and with --readahead-seconds the transformer cold after ``models.prefetch``'s
warm-up ran that long (the text stage's share of a cold start); bytes read and read GB/s against the disk's
measured read rate; optionally whole W1 runs (`ltx2-edge generate`, fresh processes) cold and warm, held to the
issue's bound cold <= 1.15 x (bytes read from the disk / the disk's read rate + the warm run's time).

The page cache is dropped per file with posix_fadvise(DONTNEED), else (as root) /proc/sys/vm/drop_caches; mincore
checks that the pages left (``calibrate.transfers.drop_page_cache``). Where they cannot leave (tmpfs, a read-only
/proc) the cold rows say why and only warm rows are measured. Bytes come from /proc/self/io (``read_meter``): what the
process read, and how much of it the storage device delivered. The disk's rate is measured here with the
calibrate command's own read (``calibrate.transfers.read_rates``: the first transformer blocks of the BF16 original
through ``FileSource``, 4 preadv threads), beside the device profile's rates.

Usage (a CUDA box; the copies are written beside the originals when missing with --make-copies):
  python bench/cold_start.py --checkpoint-path F --gemma-root D --make-copies --generate --out R.json
CPU test: tests/test_cold_report_bench.py (tiny model, in-process, --fresh-process off).
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import ltx2_edge  # noqa: F401  (torchaudio placeholder before ltx_core)

BOUND = 1.15  # the cold target over (disk bytes / disk rate + warm time)
GB = 1e9


def _files(component: str, path: Path) -> list[Path]:
    """The files a load of ``component`` reads (a Gemma folder: its shards)."""
    if component == "gemma":
        from ltx2_edge.models.gemma import find_gemma_files

        return find_gemma_files(path)[1]
    return [path]


def drop(paths: list[Path]) -> tuple[bool, str]:
    """Evict every one of ``paths`` from the page cache: (all done, how or why not)."""
    from ltx2_edge.calibrate.transfers import drop_page_cache

    hows = []
    for path in paths:
        done, how = drop_page_cache(path, 0, path.stat().st_size)
        if not done:
            return False, f"{path.name}: {how}"
        hows.append(how)
    return True, hows[-1] if hows else "nothing to drop"


def load_once(spec: dict) -> dict:
    """One load of ``spec["component"]`` (transformer or gemma) from ``spec["path"]``, timed to the device's last
    copy, with what it read."""
    import torch

    from ltx2_edge.models.gemma import load_gemma_text_model
    from ltx2_edge.models.loaders import load_transformer
    from ltx2_edge.quant.policy import QuantPolicy
    from ltx2_edge.read_meter import ReadMeter

    device, dtype = torch.device(spec["device"]), getattr(torch, spec["dtype"])
    policy = QuantPolicy.from_flags(spec["precision"])
    sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)
    sync()
    meter = ReadMeter()
    start = time.perf_counter()
    if spec["component"] == "transformer":
        model = load_transformer(Path(spec["path"]), device, dtype, policy)
    else:
        model = load_gemma_text_model(Path(spec["path"]), device, dtype, policy=policy)
    sync()
    seconds = time.perf_counter() - start
    sample = meter.stop()
    del model
    return {"seconds": round(seconds, 4), "reads": None if sample is None else sample.to_dict()}


def _run_child(spec: dict, fresh: bool) -> dict:
    if not fresh:
        return load_once(spec)
    done = subprocess.run([sys.executable, __file__, "--child", json.dumps(spec)], capture_output=True, text=True,
                          check=False)  # fmt: skip
    if done.returncode != 0:
        raise RuntimeError(f"load of {spec['component']} from {spec['path']} failed: {done.stderr.strip()[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _row(component: str, variant: str, path: Path, temperature: str, spec: dict, fresh: bool, disk_gbps) -> dict:
    row = {"component": component, "variant": variant, "file": str(path), "temperature": temperature}
    if temperature in ("cold", "cold+readahead"):
        dropped, how = drop(_files(component, path))
        row["cache"] = how
        if not dropped:
            return {**row, "measured": False}
    if temperature == "cold+readahead":  # the warm-up the engine runs during the text stage, for that long
        row["readahead"] = _warm_up(path, spec["readahead_seconds"])
    got = _run_child({**spec, "component": component, "path": str(path)}, fresh)
    reads = got["reads"] or {}
    row.update(measured=True, seconds=got["seconds"], bytes=reads.get("bytes"), disk_bytes=reads.get("disk_bytes"),
               gbps=round(reads["bytes"] / got["seconds"] / GB, 3) if reads.get("bytes") else None)  # fmt: skip
    if disk_gbps and reads.get("disk_bytes") is not None:
        floor = reads["disk_bytes"] / (disk_gbps * GB)  # what the disk alone needs for what it delivered
        ratio = round(got["seconds"] / floor, 3) if floor else None
        row.update(disk_floor_seconds=round(floor, 4), vs_disk_floor=ratio)
    return row


def _warm_up(path: Path, seconds: float) -> dict:
    """``models.prefetch.warm_transformer``'s warm-up of ``path``'s blocks, given ``seconds`` (the text stage's
    time) before the load starts."""
    import psutil

    from ltx2_edge.checkpoint.header import read_header
    from ltx2_edge.checkpoint.names import TRANSFORMER_BLOCKS
    from ltx2_edge.streaming.readahead import Readahead, block_ranges, host_allowance

    ranges = block_ranges(read_header(path), TRANSFORMER_BLOCKS, host_allowance(psutil.virtual_memory().available))
    ahead = Readahead(ranges).start()
    time.sleep(seconds)
    ahead.cancel()
    return {**ahead.join().to_dict(), "given_seconds": seconds}


def _generate(args: argparse.Namespace, variant: str, files: dict, temperature: str, out_dir: Path) -> dict:
    """One `ltx2-edge generate` reading ``files`` (the originals, ``--prequantized off``; or the copies, given as
    they are: a pre-quantized file passed is read as given)."""
    row: dict = {"variant": variant, "temperature": temperature}
    mode = "off" if variant == "original" else "auto"
    reads = [files["transformer"], *_files("gemma", files["gemma"])]
    if temperature == "cold":
        dropped, how = drop(reads)
        row["cache"] = how
        if not dropped:
            return {**row, "measured": False}
    out = out_dir / f"{variant}-{temperature}.mp4"
    argv = ["generate", "--checkpoint-path", str(files["transformer"]), "--gemma-root", str(files["gemma"]),
            "--prompt", "A red kite dances over a windy beach at sunset.", "--output-path", str(out), "--overwrite",
            "--quiet", "--prequantized", mode, "--quantization", args.quantization, "--device", args.device,
            *shlex.split(args.generate_args)]  # fmt: skip
    start = time.perf_counter()
    if args.fresh_process == "on":
        done = subprocess.run([sys.executable, "-m", "ltx2_edge", *argv], capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"generate ({variant}) failed: {done.stderr.strip()[-2000:]}")
    else:
        from ltx2_edge import cli

        if cli.main(argv) != 0:
            raise RuntimeError(f"generate ({variant}) failed")
    wall = time.perf_counter() - start
    report = json.loads(out.with_suffix(".report.json").read_text())
    total = report.get("reads") or {}
    row.update(measured=True, process_seconds=round(wall, 3), total_seconds=round(report["total_seconds"], 3),
               stages={s["stage"]: round(s["seconds"], 3) for s in report["stages"]},
               bytes=total.get("bytes"), disk_bytes=total.get("disk_bytes"), read_seconds=total.get("seconds"),
               checkpoint=report["model"]["checkpoint"], gemma_root=report["model"]["gemma_root"])  # fmt: skip
    return row


def _bounds(runs: list[dict], disk_gbps: float | None) -> list[dict]:
    """Each cold run against the issue's bound, from its warm twin: the report's end-to-end seconds (the process's
    wall time, with its imports and CUDA start, beside them)."""
    out = []
    for cold in (r for r in runs if r["temperature"] == "cold" and r["measured"]):
        warm = next((r for r in runs if r["temperature"] == "warm" and r["variant"] == cold["variant"]), None)
        if warm is None or not disk_gbps or cold.get("disk_bytes") is None:
            continue
        bound = cold["disk_bytes"] / (disk_gbps * GB) + warm["total_seconds"]
        out.append({"variant": cold["variant"], "cold_seconds": cold["total_seconds"],
                    "warm_seconds": warm["total_seconds"], "disk_bytes": cold["disk_bytes"],
                    "cold_process_seconds": cold["process_seconds"], "warm_process_seconds": warm["process_seconds"],
                    "bound_seconds": round(bound, 3), "cold_over_bound": round(cold["total_seconds"] / bound, 3),
                    "met": cold["total_seconds"] <= BOUND * bound})  # fmt: skip
    return out


def _ensure_copies(args: argparse.Namespace, precision: str, paths: dict) -> dict:
    """Write the missing copies ``paths["prequantized"]`` from the originals (``--make-copies``): seconds each."""
    from ltx2_edge.quant.convert import quantize_checkpoint, quantize_gemma_folder

    made = {}
    for what in ("transformer", "gemma"):
        original, copy = paths["original"][what], paths["prequantized"][what]
        if not copy.exists() and original.exists() and args.make_copies:
            start = time.perf_counter()
            if what == "transformer":
                quantize_checkpoint(original, copy, precision, device=args.device)
            else:
                quantize_gemma_folder(original, copy, precision, device=args.device)
            made[what] = round(time.perf_counter() - start, 2)
    return made


def main(argv: list[str] | None = None) -> dict:
    """Run the measurements; write ``--out`` and print a table. Returns the result."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint-path", type=Path, required=True, help="the BF16 LTX-2 checkpoint")
    p.add_argument("--gemma-root", type=Path, required=True, help="the BF16 Gemma 3 folder")
    p.add_argument("--device", default="cuda")
    p.add_argument("--dtype", default="bfloat16", choices=("bfloat16", "float32"))
    p.add_argument("--quantization", default="auto", choices=("auto", "fp8", "int8"))
    p.add_argument("--make-copies", action="store_true", help="write missing pre-quantized copies beside the files")
    p.add_argument(
        "--transformer-copy",
        type=Path,
        default=None,
        help="the checkpoint's pre-quantized copy (default: beside it, where runs look); the original "
        "may be absent (a disk too small for both: its rows say so)",
    )
    p.add_argument("--gemma-copy", type=Path, default=None, help="the Gemma folder's copy (default: beside it)")
    p.add_argument("--components", default="transformer,gemma")
    p.add_argument("--variants", default="original,prequantized")
    p.add_argument("--cold", choices=("on", "off"), default="on", help="off: warm rows only")
    p.add_argument("--fresh-process", choices=("on", "off"), default="on", help="off: loads in this process (tests)")
    p.add_argument("--disk-sample-gb", type=float, default=4.0, help="bytes of the original the disk rate reads")
    p.add_argument(
        "--readahead-seconds",
        type=float,
        default=0.0,
        help="also the transformer cold after a warm-up of this long (the text stage's seconds: ~5)",
    )
    p.add_argument("--generate", action="store_true", help="also whole runs, cold and warm, per --generate-variants")
    p.add_argument("--generate-variants", default=None, help="default: --variants")
    p.add_argument("--generate-args", default="", help="extra generate flags (W1 by default), e.g. '--width 64'")
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args(argv)

    import torch

    from ltx2_edge.calibrate.measure import Timing
    from ltx2_edge.calibrate.transfers import checkpoint_blocks, read_rates
    from ltx2_edge.checkpoint.header import read_header
    from ltx2_edge.checkpoint.names import TRANSFORMER_BLOCKS
    from ltx2_edge.checkpoint.prequantized import prequantized_name
    from ltx2_edge.memory import runtime
    from ltx2_edge.quant.precision import resolve_precision

    device = torch.device(args.device)
    precision, _ = resolve_precision(args.quantization, device)
    copies = {"transformer": args.transformer_copy or prequantized_name(args.checkpoint_path, precision),
              "gemma": args.gemma_copy or prequantized_name(args.gemma_root, precision)}  # fmt: skip
    paths = {"original": {"transformer": args.checkpoint_path, "gemma": args.gemma_root}, "prequantized": copies}
    made = _ensure_copies(args, precision, paths)
    profile, _ = runtime.device_profile(device)
    # The disk's rate from whichever checkpoint file is there (a small disk may hold the copy alone).
    rate_file = next((p for p in (args.checkpoint_path, copies["transformer"]) if p.exists()), args.checkpoint_path)
    blocks = checkpoint_blocks(rate_file, int(args.disk_sample_gb * GB))
    prefixes = tuple(f"{TRANSFORMER_BLOCKS}{i}." for i in blocks)
    sample = sum(t.nbytes for n, t in read_header(rate_file).tensors.items() if n.startswith(prefixes))
    disk = {"file": str(rate_file), "sample_bytes": sample, "cold_gbps": None, "cold_how": "not measured: --cold off",
            "warm_gbps": None}  # fmt: skip
    if args.cold == "on":  # the calibrate command's read: warm first, then once after dropping the page cache
        warm_m, cold_m = read_rates(device, rate_file, blocks, Timing(3, 0.0), 1, str(rate_file))
        disk.update(cold_gbps=cold_m.value, cold_how=cold_m.how, warm_gbps=warm_m.value)
    disk_gbps = disk["cold_gbps"]
    result: dict = {"device": str(device), "precision": precision, "copies_made_seconds": made, "disk": disk,
                    "profile": {"name": profile.name, "file_read_cold_gbps": profile.file_read_cold_gbps,
                                "file_read_warm_gbps": profile.file_read_warm_gbps}, "loads": []}  # fmt: skip
    disk_rate = disk_gbps or profile.file_read_cold_gbps
    result["disk"]["rate_used_gbps"] = disk_rate
    spec = {"device": args.device, "dtype": args.dtype, "precision": precision,
            "readahead_seconds": args.readahead_seconds}  # fmt: skip
    temperatures = ("cold", "warm") if args.cold == "on" else ("warm",)
    fresh = args.fresh_process == "on"
    for component in args.components.split(","):
        for variant in args.variants.split(","):
            path = paths[variant][component]
            if not path.exists():
                why = "no such file" + (" (--make-copies writes it)" if variant == "prequantized" else "")
                result["loads"].append({"component": component, "variant": variant, "file": str(path),
                                        "measured": False, "why": why})  # fmt: skip
                continue
            extra = ("cold+readahead",) if args.readahead_seconds > 0 and component == "transformer" else ()
            for temperature in (*temperatures[:1], *extra, *temperatures[1:]) if args.cold == "on" else temperatures:
                result["loads"].append(_row(component, variant, path, temperature, spec, fresh, disk_rate))
    if args.generate:
        runs = []
        with tempfile.TemporaryDirectory(prefix="cold-start-") as tmp:
            for variant in (args.generate_variants or args.variants).split(","):
                if all(p.exists() for p in paths[variant].values()):
                    runs += [_generate(args, variant, paths[variant], t, Path(tmp)) for t in temperatures]
        result["generate"] = runs
        result["bounds"] = _bounds(runs, disk_rate)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    _print(result)
    return result


def _print(result: dict) -> None:
    print(f"disk: {result['disk']['cold_gbps']} GB/s cold, {result['disk']['warm_gbps']} GB/s warm (measured); "
          f"profile {result['profile']['name']}: {result['profile']['file_read_cold_gbps']} / "
          f"{result['profile']['file_read_warm_gbps']} GB/s")  # fmt: skip
    print("| component | file | temperature | s | GB read | GB from disk | GB/s | s / disk floor |")
    print("|---|---|---|---|---|---|---|---|")
    for r in result["loads"]:
        if not r["measured"]:
            print(f"| {r['component']} | {Path(r['file']).name} | {r.get('temperature', '-')} | not measured: "
                  f"{r.get('why') or r.get('cache')} | | | | |")  # fmt: skip
            continue
        gb = lambda n: "-" if n is None else f"{n / GB:.2f}" if n >= 1e7 else f"{n / GB:.5f}"  # noqa: E731
        print(f"| {r['component']} | {Path(r['file']).name} | {r['temperature']} | {r['seconds']:.2f} | "
              f"{gb(r['bytes'])} | {gb(r['disk_bytes'])} | {r['gbps']} | {r.get('vs_disk_floor')} |")  # fmt: skip
    for b in result.get("bounds", ()):
        print(f"generate ({b['variant']}): cold {b['cold_seconds']:.1f} s, warm "
              f"{b['warm_seconds']:.1f} s, bound {b['bound_seconds']:.1f} s: {b['cold_over_bound']:.2f}x "
              f"({'met' if b['met'] else 'not met'}, target <= {BOUND}x)")  # fmt: skip


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--child":
        print(json.dumps(load_once(json.loads(sys.argv[2]))))
    else:
        main()
