"""Resident weight loading, old reader against new (issue 7's end-to-end gap): Gemma's language model and the
transformer, each with the run's default 8-bit policy, loaded through ``streaming.tensor_reader`` and through
``safetensors``' ``get_tensor`` (what the loaders used before, and what ltx-pipelines uses), alternating, in one
process on page-cached files.

The ``safetensors`` variant swaps ``TensorReader.read`` for a generator over ``safe_open(device=...)`` — the
earlier loaders' exact read — so everything else (key maps, quantization, module assembly) is shared.
Usage: PYTHONPATH=src python bench/load_speed.py --checkpoint-path F --gemma-root D --out result.json
       [--repeats 2] [--device cuda] [--precision fp8]
"""

from __future__ import annotations

import argparse
import gc
import json
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import torch
from safetensors import safe_open

import ltx2_edge  # noqa: F401  (torchaudio placeholder before ltx_core)
from ltx2_edge.checkpoint.header import TensorInfo
from ltx2_edge.models.gemma import load_gemma_text_model
from ltx2_edge.models.loaders import load_transformer
from ltx2_edge.quant.policy import QuantPolicy
from ltx2_edge.streaming.tensor_reader import TensorReader

_new_read = TensorReader.read


def _safetensors_read(self: TensorReader, entries: Sequence[tuple[Path, TensorInfo]]) -> Iterator[torch.Tensor]:
    handles: dict[Path, object] = {}
    for path, info in entries:
        if path not in handles:
            handles[path] = safe_open(str(path), framework="pt", device=str(self.device))
        self.bytes_read += info.nbytes
        yield handles[path].get_tensor(info.name)  # type: ignore[attr-defined]


def _timed_load(what: str, variant: str, load, device: torch.device) -> dict:  # noqa: ANN001
    TensorReader.read = _new_read if variant == "reader" else _safetensors_read  # type: ignore[method-assign]
    counted = {"bytes": 0}
    real_close = TensorReader.close

    def close(self: TensorReader) -> None:
        counted["bytes"] += self.bytes_read
        real_close(self)

    TensorReader.close = close  # type: ignore[method-assign]
    try:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        model = load()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        seconds = time.perf_counter() - start
    finally:
        TensorReader.read, TensorReader.close = _new_read, real_close  # type: ignore[method-assign]
    del model
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    rec = {"model": what, "variant": variant, "seconds": seconds, "bytes_read": counted["bytes"],
           "gb_per_s": counted["bytes"] / seconds / 1e9}  # fmt: skip
    print(f"[load_speed] {what:11s} {variant:11s} {seconds:6.2f} s  {rec['gb_per_s']:.2f} GB/s", flush=True)
    return rec


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint-path", type=Path, required=True)
    ap.add_argument("--gemma-root", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--precision", default="fp8", choices=("fp8", "int8", "bf16"))
    a = ap.parse_args()
    dev = torch.device(a.device)
    dtype = torch.bfloat16 if dev.type == "cuda" else torch.float32
    policy = QuantPolicy.from_flags(a.precision, (), False)
    loads = {
        "gemma": lambda: load_gemma_text_model(a.gemma_root, dev, dtype, policy=policy),
        "transformer": lambda: load_transformer(a.checkpoint_path, dev, dtype, policy),
    }
    records = []
    for _ in range(a.repeats):
        for what, load in loads.items():
            for variant in ("safetensors", "reader"):
                records.append(_timed_load(what, variant, load, dev))
    summary = {}
    for what in loads:
        best = {v: min(r["seconds"] for r in records if r["model"] == what and r["variant"] == v)
                for v in ("safetensors", "reader")}  # fmt: skip
        summary[what] = {**best, "speedup": best["safetensors"] / best["reader"]}
        print(f"[load_speed] {what}: safetensors {best['safetensors']:.2f} s, reader {best['reader']:.2f} s "
              f"({summary[what]['speedup']:.2f}x)")  # fmt: skip
    device_name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu"
    a.out.write_text(json.dumps({"device": device_name, "precision": a.precision, "records": records,
                                 "summary": summary}, indent=2))  # fmt: skip


if __name__ == "__main__":
    main()
