"""LoRA fused into the weights before 8-bit quantization vs a low-rank side path, on one LTX-2 19B block at W1.

Layers: every 2-D ``transformer_blocks.0.*`` weight of the full-size checkpoint layout that the default policy
runs in 8 bits (``QuantPolicy.from_flags``; for ``--precision bf16``, the same layers run in BF16). Per layer,
for one batched CFG forward (token counts include the guidance batch of 2, ``TOKEN_RULE``):
  fused: the quantized Linear built as the loader builds it (``LoraFuser`` on the BF16 weight, then
         ``quantize_weight``), so a step costs exactly the plain quantized Linear;
  side:  the plain quantized Linear plus ``y.addmm_(x @ A^T, B^T, alpha=strength)`` with A/B in BF16 on the
         device (2 extra kernels a layer), at each ``--ranks`` rank;
  memory: side-path bytes 2*rank*(in+out) a layer (0 fused); load: quantize alone, fuse+quantize (the
         loader's path), and the side path's A/B copy, each on the device, from a LoRA file in the page cache;
  fidelity: relative L2 error against fp32 ``x @ (W + s*B@A)^T + bias`` of both paths, on random data:
         W, bias kaiming-uniform as the checkpoint generator draws them, A kaiming-uniform, B Gaussian scaled so
         ``||s*B@A||_F = --delta * ||W||_F`` (default 3%), x ~ N(0, 1) in BF16.
Timing: a sample runs every layer of the block once in order, fused then side path (weights leave the L2
cache between uses, as in a forward), with CUDA events between layers; median of ``--repeats`` after
``--warmup``. On CUDA each layer call replays its own CUDA graph, as W1's default run replays its forward
(``--eager`` times launches instead). On CPU the times are no performance figure and the JSON says so. The
precision is resolved by ``resolve_precision``; the JSON records what ran and why, and each layer's kernel
with its fallback note. Totals scale one block by 48 blocks and 20 steps (one batched forward a step).

GPU:  PYTHONPATH=src python bench/lora_paths.py --out bench/results/lora_paths.json --device cuda
CPU self-check:  PYTHONPATH=src python bench/lora_paths.py --out /tmp/l.json --tokens 16 --ranks 4,8 --layers audio_ff

This script never edits a checkpoint and never writes anywhere but ``--out`` and a temporary directory.
"""

from __future__ import annotations

import argparse
import functools
import json
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import save_file

from ltx2_edge.checkpoint.configs import ltx2_config
from ltx2_edge.checkpoint.layout import expected_tensors
from ltx2_edge.inputs import LoraSpec
from ltx2_edge.models.lora import LoraFuser, inspect_lora
from ltx2_edge.plan.activations import token_counts
from ltx2_edge.quant.kernels import quantize_weight
from ltx2_edge.quant.linear import QUANT_LINEAR_CLASSES
from ltx2_edge.quant.policy import QuantPolicy, pattern_matches
from ltx2_edge.quant.precision import resolve_precision

W1 = (512, 288, 97, 24.0)  # width, height, frames, fps
BATCH, STEPS, BLOCKS = 2, 20, 48  # CFG batch of one batched forward a step; W1's steps; LTX-2 19B's blocks
BLOCK = "transformer_blocks.0."
CHECKPOINT_PREFIX = "model.diffusion_model."
TOKEN_RULE = "*attn2.to_k / *attn2.to_v: text tokens (1024); audio_*: audio tokens; others: video tokens; all x 2"


class Layer(NamedTuple):
    """One Linear of the block: model name (``transformer_blocks.0...``), shape and tokens it sees a forward."""

    name: str
    out_features: int
    in_features: int
    tokens: int


def tokens_for(name: str, video: int, audio: int, text: int) -> int:
    """Rows a Linear sees in one batched CFG forward (``TOKEN_RULE``): its stream's tokens times the batch."""
    short = name.removeprefix(BLOCK)
    if short.split(".")[0] in ("attn2", "audio_attn2") and short.split(".")[1] in ("to_k", "to_v"):
        return text * BATCH
    return (audio if short.startswith("audio_") else video) * BATCH


@functools.lru_cache(maxsize=1)
def _block_weights() -> dict[str, tuple[int, int]]:
    tensors = expected_tensors(ltx2_config("full"))  # builds the model on meta: seconds, so once per process
    shapes = {n.removeprefix(CHECKPOINT_PREFIX).removesuffix(".weight"): s for n, (s, _) in tensors.items()}
    return {n: s for n, s in shapes.items() if n.startswith(BLOCK) and len(s) == 2}


def w1_tokens() -> tuple[int, int, int]:
    """W1's (video, audio, text) tokens of one guidance sample: 1872, 101, 1024."""
    counts = token_counts(ltx2_config("full"), *W1)
    return counts.video, counts.audio, counts.text


def block_layers(precision: str, patterns: tuple[str, ...] = (), tokens: int | None = None) -> list[Layer]:
    """The block's Linears the loader quantizes (bf16: the same set), filtered by ``patterns`` if any.

    ``tokens`` replaces every layer's W1 token count (CPU self-checks). ``ValueError`` if nothing is left.
    """
    policy = QuantPolicy.from_flags("int8" if precision == "bf16" else precision)
    layers = [
        Layer(n, s[0], s[1], tokens or tokens_for(n, *w1_tokens()))
        for n, s in sorted(_block_weights().items())
        if policy.precision_for(n) != "bf16" and (not patterns or any(pattern_matches(p, n) for p in patterns))
    ]
    if not layers:
        raise ValueError(f"--layers {','.join(patterns)} matches no 8-bit Linear of {BLOCK[:-1]}: e.g. attn1,ff")
    return layers


def _linear(precision: str, weight: torch.Tensor, bias: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
    """The layer as the loader builds it from a BF16 weight (``quantized_loading.load_quantized``)."""
    if precision == "bf16":
        return lambda x: F.linear(x, weight, bias)
    q, scale = quantize_weight(weight, precision)
    return QUANT_LINEAR_CLASSES[precision](q, scale, bias)


def _sweep(calls: list[Callable[[], object]], device: torch.device, args: argparse.Namespace) -> list[float]:
    """Median seconds of each call; a sample runs all calls in order, as a forward runs a block's layers."""
    samples: list[list[float]] = [[] for _ in calls]
    for i in range(args.warmup + args.repeats):
        if device.type == "cuda":
            events = [torch.cuda.Event(enable_timing=True) for _ in range(len(calls) + 1)]
            events[0].record()
            for call, event in zip(calls, events[1:], strict=True):
                call()
                event.record()
            events[-1].synchronize()  # elapsed_time is only defined once the last event has completed
            times = [a.elapsed_time(b) / 1e3 for a, b in zip(events, events[1:], strict=False)]
        else:
            times = []
            for call in calls:
                start = time.perf_counter()
                call()
                times.append(time.perf_counter() - start)
        if i >= args.warmup:
            for s, t in zip(samples, times, strict=True):
                s.append(t)
    return [statistics.median(s) for s in samples]


def _graphed(fn: Callable[[], object]) -> Callable[[], object]:
    """``fn`` captured into its own CUDA graph; returns the replay (W1 runs its forward as one replayed graph)."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):  # first calls outside capture: kernel choice, Triton compile, cuBLAS workspace
        fn()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        fn()
    return graph.replay


def _timed(fn: Callable[[], object], device: torch.device, repeats: int) -> float:
    """Median wall seconds of ``fn`` (device synchronized) after one warm-up call."""
    sync = torch.cuda.synchronize if device.type == "cuda" else lambda: None
    samples = []
    for i in range(repeats + 1):
        sync()  # host timers around queued GPU work would otherwise time the launches, not the work
        start = time.perf_counter()
        fn()
        sync()
        if i:
            samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def _factor(layer: str, which: str) -> str:  # a factor's name in an official LoRA file; which: "A" or "B"
    return f"diffusion_model.{layer}.lora_{which}.weight"


def _rel_err(y: torch.Tensor, ref: torch.Tensor) -> float:
    return float((y.float() - ref).norm() / ref.norm())


def _uniform(shape: tuple[int, ...], bound: float, g: torch.Generator, device: torch.device) -> torch.Tensor:
    return (torch.rand(shape, generator=g, device=device) * 2 - 1) * bound


def _lora_factors(w: torch.Tensor, rank: int, args: argparse.Namespace, g: torch.Generator) -> list[torch.Tensor]:
    """BF16 ``[A [rank, in], B [out, rank]]`` with ``||s * B @ A||_F = delta * ||W||_F`` before BF16 rounding."""
    a = _uniform((rank, w.shape[1]), w.shape[1] ** -0.5, g, w.device)
    b = torch.randn(w.shape[0], rank, generator=g, device=w.device)
    b *= args.delta * w.float().norm() / (abs(args.strength) * (b @ a).norm())
    return [a.bfloat16(), b.bfloat16()]


def run(args: argparse.Namespace, device: torch.device, precision: str, layers: list[Layer]) -> list[dict]:
    """Measure both paths for every layer and rank; returns the JSON rows."""
    names = [layer.name for layer in layers]
    g = torch.Generator(device).manual_seed(args.seed)
    w, bias, xs, x_of = {}, {}, {}, {}
    for layer in layers:
        shape, bound = (layer.out_features, layer.in_features), layer.in_features**-0.5
        w[layer.name] = _uniform(shape, bound, g, device).bfloat16()
        bias[layer.name] = _uniform((layer.out_features,), bound, g, device).bfloat16()
        key = (layer.tokens, layer.in_features)
        if key not in xs:
            xs[key] = torch.randn(key, generator=g, device=device).bfloat16()
        x_of[layer.name] = xs[key]
    base = {n: _linear(precision, w[n], bias[n]) for n in names}
    wrap = _graphed if device.type == "cuda" and not args.eager else lambda fn: fn
    fused_calls = [wrap(functools.partial(base[n], x_of[n])) for n in names]
    rows = []
    for layer in layers:
        n = layer.name
        kernel, note = ("F.linear bf16", "") if precision == "bf16" else base[n].kernel_for(device.type)
        quantize = functools.partial(quantize_weight, w[n], precision)
        per_row = 2 * layer.in_features if precision == "bf16" else layer.in_features + 4  # 8-bit row + fp32 scale
        rows.append({
            "layer": n, "out": layer.out_features, "in": layer.in_features, "tokens": layer.tokens,
            "kernel": kernel, "kernel_note": note, "weight_bytes": layer.out_features * per_row,
            "load_quantize_s": 0.0 if precision == "bf16" else _timed(quantize, device, args.load_repeats),
            "ranks": {},
        })  # fmt: skip
    targets = {layer.name + ".weight": (layer.out_features, layer.in_features) for layer in layers}
    with tempfile.TemporaryDirectory() as tmp:
        for rank in args.ranks:
            factors = {n: _lora_factors(w[n], rank, args, g) for n in names}
            path = Path(tmp) / f"rank{rank}.safetensors"
            save_file({_factor(n, k): t.cpu() for n, ab in factors.items() for k, t in zip("AB", ab, strict=True)},
                      str(path))  # fmt: skip
            lora = inspect_lora(LoraSpec(path, args.strength), targets)

            def side(n: str, factors: dict = factors) -> torch.Tensor:
                a, b = factors[n]
                return base[n](x_of[n]).addmm_(F.linear(x_of[n], a), b.t(), alpha=args.strength)

            # Both paths in one sweep (all fused layers, then all side-path layers): the pair shares clocks.
            seconds = _sweep(fused_calls + [wrap(functools.partial(side, n)) for n in names], device, args)
            with LoraFuser([lora]) as fuser, safe_open(str(path), framework="pt", device="cpu") as handle:
                for i, (layer, row) in enumerate(zip(layers, rows, strict=True)):
                    n, (a, b) = layer.name, factors[layer.name]
                    delta = args.strength * b.float() @ a.float()
                    ref = torch.addmm(bias[n].float(), x_of[n].float(), (w[n].float() + delta).t())
                    fuse = functools.partial(lambda n: _linear(precision, fuser(n + ".weight", w[n]), bias[n]), n)
                    copy = functools.partial(lambda n: [handle.get_tensor(_factor(n, k)).to(device) for k in "AB"], n)
                    row["ranks"][str(rank)] = {
                        "fused_s": seconds[i],
                        "side_s": seconds[len(layers) + i],
                        "extra_bytes": 2 * rank * (layer.in_features + layer.out_features),
                        "rel_err_fused": _rel_err(fuse()(x_of[n]), ref),
                        "rel_err_side": _rel_err(side(n), ref),
                        "delta_ratio": float(delta.norm() / w[n].float().norm()),
                        "load_fuse_quantize_s": _timed(fuse, device, args.load_repeats),
                        "load_side_copy_s": _timed(copy, device, args.load_repeats),
                    }
                    del delta, ref
    for row in rows:
        row["fused_s"] = statistics.median(v["fused_s"] for v in row["ranks"].values())
    return rows


def document(args: argparse.Namespace, device: torch.device, precision: str, note: str, rows: list) -> dict:
    """The JSON document: settings, what ran, per-layer rows, totals per block, per 48 blocks and per W1 run."""
    fused = sum(r["fused_s"] for r in rows)
    block = {"fused_s": fused, "load_quantize_s": sum(r["load_quantize_s"] for r in rows),
             "weight_bytes": sum(r["weight_bytes"] for r in rows), "ranks": {}}  # fmt: skip
    keys = ("fused_s", "side_s", "extra_bytes", "load_fuse_quantize_s", "load_side_copy_s")
    for rank in map(str, args.ranks):
        per = {k: sum(r["ranks"][rank][k] for r in rows) for k in keys}
        per["side_overhead"] = per["side_s"] / per["fused_s"] - 1  # against the fused times of the same sweeps
        errs = [(r["ranks"][rank]["rel_err_side"], r["ranks"][rank]["rel_err_fused"]) for r in rows]
        per["layers_side_closer"] = sum(side < fused_err for side, fused_err in errs)
        block["ranks"][rank] = per
    totals = {"block": block}
    for label, forwards in (("model_48_blocks", 1), ("w1_run_20_steps", STEPS)):
        k = BLOCKS * forwards
        per_rank = {r: {"side_s": fused * (1 + v["side_overhead"]) * k, "extra_s": fused * v["side_overhead"] * k,
                        "extra_bytes": v["extra_bytes"] * BLOCKS} for r, v in block["ranks"].items()}  # fmt: skip
        totals[label] = {"fused_s": fused * k, "ranks": per_rank}
    on_cpu, (video, audio, text) = device.type != "cuda", w1_tokens()
    launch = "eager launches" if args.eager else "each layer call replayed from its own CUDA graph"
    timing = f"CUDA events, median of {args.repeats} after {args.warmup} warm-up sweeps, {launch}"
    return {
        "device": "cpu" if on_cpu else torch.cuda.get_device_name(device), "torch": torch.__version__,
        "timing": "CPU: not a performance figure" if on_cpu else timing,
        "precision": {"requested": args.precision, "ran": precision, "note": note},
        "workload": {"w1": "512x288x97 @ 24 fps, 20 steps, one batched CFG forward a step (batch 2)",
                     "video_tokens": video, "audio_tokens": audio, "text_tokens": text, "batch": BATCH,
                     "token_rule": TOKEN_RULE if args.tokens is None else f"--tokens {args.tokens} for every layer",
                     "layers": args.layers or "every 8-bit Linear of the block"},
        "lora": {"strength": args.strength, "delta": args.delta, "ranks": list(args.ranks),
                 "init": "W, bias, A kaiming-uniform; B Gaussian, ||s*B@A||_F = delta*||W||_F; x ~ N(0,1)"},
        "rows": rows, "totals": totals,
    }  # fmt: skip


def _print(doc: dict) -> None:
    ranks = [str(r) for r in doc["lora"]["ranks"]]
    print(f"{doc['device']} | {doc['precision']['ran']} {doc['precision']['note']} | {doc['timing']}")
    head = " ".join(f"{'r' + r + ' +%':>8}" for r in ranks)
    print(f"{'layer':28} {'tokens':>6} {'out x in':>12} {'fused ms':>9} {head} err fused/side (rank {ranks[-1]})")
    for row in doc["rows"]:
        per, last = row["ranks"], row["ranks"][ranks[-1]]
        extra = " ".join(f"{100 * (per[r]['side_s'] / per[r]['fused_s'] - 1):8.1f}" for r in ranks)
        errs = f"{last['rel_err_fused']:.5f} / {last['rel_err_side']:.5f}"
        print(f"{row['layer'].removeprefix(BLOCK):28} {row['tokens']:6} {row['out']:>5}x{row['in']:<6} "
              f"{1e3 * row['fused_s']:9.3f} {extra} {errs}")  # fmt: skip
    t = doc["totals"]
    for r in ranks:
        b, w1 = t["block"]["ranks"][r], t["w1_run_20_steps"]["ranks"][r]
        print(
            f"rank {r}: W1 run {t['w1_run_20_steps']['fused_s']:.3f} s fused vs {w1['side_s']:.3f} s side "
            f"({100 * b['side_overhead']:+.1f}%), side +{w1['extra_bytes'] / 2**30:.2f} GiB over 48 blocks; "
            f"loading a block: fuse+quantize {1e3 * b['load_fuse_quantize_s']:.1f} ms vs quantize "
            f"{1e3 * t['block']['load_quantize_s']:.1f} ms + copy A/B {1e3 * b['load_side_copy_s']:.1f} ms; "
            f"side path closer to fp32 on {b['layers_side_closer']}/{len(doc['rows'])} layers"
        )


def _ranks(text: str) -> list[int]:
    ranks = [int(r) for r in text.split(",") if r.strip().isdigit()]
    if len(ranks) != len(text.split(",")) or min(ranks) < 1:
        raise argparse.ArgumentTypeError(f"--ranks {text!r}: positive integers separated by commas, e.g. 32,128,384")
    return ranks


def main(argv: list[str] | None = None) -> dict:
    """Parse ``argv``, run, write ``--out`` and print the table; returns the JSON document."""
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--precision", default="auto", choices=("auto", "fp8", "int8", "bf16"))
    p.add_argument("--ranks", type=_ranks, default=[32, 128, 384])
    p.add_argument("--tokens", type=int, default=None, help="tokens for every layer (default: W1's per stream)")
    p.add_argument("--layers", default="", help="comma-separated policy patterns, e.g. attn1,audio_ff")
    p.add_argument("--strength", type=float, default=1.0)
    p.add_argument("--delta", type=float, default=0.03, help="||s*B@A||_F / ||W||_F")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--load-repeats", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--eager", action="store_true", help="time eager launches instead of CUDA graph replays")
    args = p.parse_args(argv)
    if args.strength == 0 or args.delta <= 0 or min(args.tokens or 1, args.repeats, args.load_repeats) < 1:
        p.error(f"--strength {args.strength} must be non-zero, --delta {args.delta} > 0, and --tokens "
                f"{args.tokens}, --repeats {args.repeats}, --load-repeats {args.load_repeats} >= 1")  # fmt: skip
    device = torch.device(args.device)
    precision, note = resolve_precision(args.precision, device)
    try:
        layers = block_layers(precision, tuple(p for p in args.layers.split(",") if p), args.tokens)
    except ValueError as exc:
        p.error(str(exc))
    torch.set_float32_matmul_precision("highest")  # a TF32 reference would carry errors the size of int8's
    with torch.inference_mode():
        doc = document(args, device, precision, note, run(args, device, precision, layers))
    args.out.write_text(json.dumps(doc, indent=1))
    _print(doc)
    return doc


if __name__ == "__main__":
    main()
