"""Where the text-encode stage's seconds go: Gemma build, weight reads, host->device copies, encoding (issue 3).

The reference run measured ~21 s for our Gemma part against ~7-11 s for ltx-pipelines' whole text encode on the
same folder. This times, for the Gemma folder given: a plain read of every shard (bytes/s of the storage), the
safetensors tensors read to CPU only, our ``load_gemma_text_model`` (bf16, resident) split into its parts, and
two encodes of the W1 prompt pair. JSON to --out.

Usage: PYTHONPATH=src python bench/gemma_load_profile.py --gemma-root D --out result.json [--device cuda]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from safetensors import safe_open

import ltx2_edge  # noqa: F401  (torchaudio placeholder before ltx_core)
from ltx2_edge.inputs import DEFAULT_NEGATIVE_PROMPT
from ltx2_edge.models import gemma
from ltx2_edge.models.weights import load_into


def timed(fn, sync: bool) -> tuple[object, float]:  # noqa: ANN001
    start = time.perf_counter()
    out = fn()
    if sync:
        torch.cuda.synchronize()
    return out, round(time.perf_counter() - start, 3)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--gemma-root", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--device", default="cuda")
    args = ap.parse_args()
    dev = torch.device(args.device)
    sync = dev.type == "cuda"
    dtype = torch.bfloat16
    config_path, shards, tokenizer_root = gemma.find_gemma_files(args.gemma_root)
    rec: dict = {"shards": [str(s) for s in shards], "bytes": sum(s.stat().st_size for s in shards)}

    def read_all() -> None:
        for s in shards:
            with s.open("rb", buffering=0) as f:
                while f.read(64 << 20):
                    pass

    _, rec["plain_read_s"] = timed(read_all, False)

    def cpu_tensors() -> int:
        n = 0
        for s in shards:
            with safe_open(str(s), framework="pt", device="cpu") as f:
                for k in f.keys():  # noqa: SIM118  (safe_open has no __iter__)
                    if gemma.language_model_key(k) is not None:
                        n += f.get_tensor(k).numel()
        return n

    _, rec["safetensors_cpu_s"] = timed(cpu_tensors, False)
    tok, rec["tokenizer_s"] = timed(lambda: gemma.PromptTokenizer(tokenizer_root), False)
    model, rec["build_meta_s"] = timed(lambda: gemma.build_gemma_text_model(gemma.read_text_config(config_path)), False)
    _, rec["load_into_s"] = timed(lambda: load_into(model, shards, gemma.language_model_key, dev, dtype), sync)
    _, rec["populate_s"] = timed(lambda: gemma.populate_buffers(model, dev), sync)
    text = gemma.GemmaText(model.eval(), tok, dev)
    prompts = ["A red kite dances over a windy beach at sunset while waves crash and gulls call.",
               DEFAULT_NEGATIVE_PROMPT]  # fmt: skip
    with torch.inference_mode():
        _, rec["encode_first_s"] = timed(lambda: text.encode(prompts), sync)
        _, rec["encode_again_s"] = timed(lambda: text.encode(prompts), sync)
    rec["load_into_gbps"] = round(rec["bytes"] / rec["load_into_s"] / 1e9, 2)
    print(json.dumps(rec))
    args.out.write_text(json.dumps(rec, indent=1))


if __name__ == "__main__":
    main()
