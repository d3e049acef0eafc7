"""Calibrate's load timings, with the run's loaders on files in the page cache: the transformer (mini models of 2 and
4 blocks, and of 12 from a real checkpoint: per block and the fixed rest), blocks packed into pinned host memory and
released (``models.streamed_blocks.load_streamed``, tier pinned, all 4 blocks streamed: its parts give the
streaming's fixed cost, its ``gc.collect`` included), a pinned buffer of a run's size, and, on
``--checkpoint-path``, the decoders' and the connectors' loads as the stages load them, and the video decoder's
whole forward at W1's latent (first call, then steady); on ``--gemma-root``, Gemma loaded whole and encoding two
prompts (``gemma_load``, which the start-up's fresh process runs again). Every file region is read once before it
is timed (``mini_model.warm``). Returns numbers; writes nothing.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import psutil
import torch

from ltx2_edge.calibrate import mini_model
from ltx2_edge.calibrate.shapes import w1_tokens
from ltx2_edge.checkpoint.header import read_header
from ltx2_edge.checkpoint.names import AUDIO_DECODER, EMBEDDINGS, VIDEO_DECODER
from ltx2_edge.models import loaders
from ltx2_edge.models.embeddings import load_embeddings_processor
from ltx2_edge.models.gemma import PromptTokenizer, find_gemma_files, language_model_key, load_gemma_text_model
from ltx2_edge.models.streamed_blocks import load_streamed
from ltx2_edge.models.streamed_transformer import TRANSFORMER_BLOCKS
from ltx2_edge.plan.flops import video_decode_flops
from ltx2_edge.plan.timings import DecodeTimings, LoadTimings
from ltx2_edge.quant.policy import QuantPolicy
from ltx2_edge.stages.decode_video import decode_video
from ltx2_edge.stages.text_encode import HiddenStates, connect_prompts
from ltx2_edge.streaming.host_io import HostBuffer

GB = 1e9


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _free(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()


def _timed(fn: Callable[[], object], device: torch.device) -> tuple[object, float]:
    _sync(device)
    start = time.perf_counter()
    out = fn()
    _sync(device)
    return out, time.perf_counter() - start


@dataclass
class TransformerLoads:
    """The mini transformers (kept for the step timings) and what loading them measured."""

    models: dict[int, torch.nn.Module]
    seconds: dict[int, float]
    block_read: float  # file bytes of one block (mean of the first four)
    block_device: int  # device bytes of one block as loaded (8-bit where the policy says)
    fixed_read: int  # file bytes outside the blocks


def _block_device_bytes(model: torch.nn.Module, index: int) -> int:
    block = model.velocity_model.transformer_blocks[index]
    return sum(t.numel() * t.element_size() for t in (*block.parameters(), *block.buffers()))


WIDE = 12  # blocks of the wide load: 2 and 4 blocks differ by ~0.06-0.1 s on an H200, too little to time a rate by


def transformer_loads(path: Path, config: dict, device: torch.device, dtype: torch.dtype, policy: QuantPolicy,
                      reps: int, wide: bool = True) -> TransformerLoads:  # fmt: skip
    """Load 2- and 4-block transformers ``reps`` times each (the fastest counts) and keep one of each; with ``wide``
    and a ``path`` holding ``WIDE`` blocks (a real checkpoint), one ``WIDE``-block load too, timed and dropped, whose
    difference from the 2-block load gives the per-block rate (call 16's 2-vs-4 rate was 27 GB/s where the run's
    loads went at 11-13)."""
    infos = mini_model.transformer_tensors(path, 4)
    mini_model.warm(path, infos)
    blocks = [i for i in infos if mini_model.block_index(i.name) is not None]
    models: dict[int, torch.nn.Module] = {}
    seconds: dict[int, float] = {}
    for layers in (2, 4):
        best = float("inf")
        for _ in range(reps):
            models.pop(layers, None)
            _free(device)
            models[layers], took = mini_model.load_mini(path, config, layers, device, dtype, policy)
            best = min(best, took)
        seconds[layers] = best
    block_device = _block_device_bytes(models[2], 0)
    if wide and _room_for_wide(device, block_device) and mini_model.uses_checkpoint(path, WIDE):
        mini_model.warm(path, mini_model.transformer_tensors(path, WIDE))
        _free(device)
        model, seconds[WIDE] = mini_model.load_mini(path, config, WIDE, device, dtype, policy)
        del model
        _free(device)
    return TransformerLoads(models, seconds, sum(i.nbytes for i in blocks) / 4, block_device,
                            sum(i.nbytes for i in infos) - sum(i.nbytes for i in blocks))  # fmt: skip


def _room_for_wide(device: torch.device, block_device: int) -> bool:
    """A GPU with room for the wide load twice over beside what calibrate holds (a CPU run keeps the 2-vs-4 rate: its
    blocks are float32 in host memory)."""
    if device.type != "cuda":
        return False
    free, _ = torch.cuda.mem_get_info(device)
    return free > 2 * WIDE * block_device


@dataclass(frozen=True)
class PinnedLoads:
    """A 4-block transformer loaded with all 4 blocks streamed from pinned host memory: ``seconds`` to load,
    ``released`` seconds to free it, ``parts`` (``load_streamed``'s times: resident part, wait for the pinned buffer,
    packing) and ``streamed`` (its streamed blocks)."""

    seconds: float
    released: float
    parts: dict[str, float]
    streamed: int = 4


def pinned_loads(path: Path, config: dict, device: torch.device, dtype: torch.dtype, policy: QuantPolicy,
                 ) -> PinnedLoads | str:  # fmt: skip
    """The pinned load as ``models.streamed_transformer`` makes one, or why it cannot run here (a CPU or an integrated
    GPU never makes a pinned copy: one memory pool streams from the file)."""
    if device.type != "cuda":
        return "not measured: a CPU run streams blocks from the file (one memory pool), never from pinned memory"
    meta = mini_model.build_meta(config, 4)
    parts: dict[str, float] = {}
    _sync(device)
    start = time.perf_counter()
    try:
        _, streamer = load_streamed(meta, TRANSFORMER_BLOCKS, [path], mini_model._key_map(4), device, dtype, policy,
                                    0, "pinned", 2, times=parts)  # fmt: skip
    except ValueError as exc:
        return f"not measured: {exc}"
    _sync(device)
    loaded = time.perf_counter() - start
    start = time.perf_counter()
    streamer.close()
    released = time.perf_counter() - start
    del meta
    _free(device)
    return PinnedLoads(loaded, released, parts)


POPULATE_BYTES = 2 * 10**9  # a run pins several GB: the rate of a smaller buffer is not the rate of those
POPULATE_SHARE = 0.1  # of the host memory available, at most


def populate_rate(device: torch.device, nbytes: int | None = None) -> tuple[float, int] | str:
    """(GB/s, bytes) making one pinned host buffer of a run's size as the streamed loads make theirs
    (``streaming.host_io.HostBuffer``: pages faulted in by threads, then registered), or why it is not measured."""
    if device.type != "cuda":
        return "not measured: a CPU run streams blocks from the file (one memory pool), never from pinned memory"
    if nbytes is None:
        nbytes = int(min(POPULATE_BYTES, POPULATE_SHARE * psutil.virtual_memory().available))
    start = time.perf_counter()
    buf = HostBuffer(nbytes, pin=True)
    took = time.perf_counter() - start
    buf.close()
    return nbytes / took / GB, nbytes


RESOLVED = 0.02  # the 4-block load must exceed the 2-block one by this share of it to count as a measured difference


def resolved_blocks(loads: TransformerLoads) -> bool:
    """Whether the 4-block load exceeds the 2-block load by more than timing noise (``RESOLVED``)."""
    return loads.seconds[4] - loads.seconds[2] > RESOLVED * loads.seconds[4]


def load_timings(loads: TransformerLoads, pinned: PinnedLoads | str, stages: dict[str, tuple[float, int]],
                 how: str, populate: tuple[float, int] | str = "not measured",
                 copy_gbps: float | None = None, gemma: GemmaLoad | str | None = None) -> LoadTimings:  # fmt: skip
    """``LoadTimings`` from the transformer loads, the pinned loads and the stages measured on the checkpoint.

    Per block: (``WIDE``-block load - 2-block load) / (``WIDE`` - 2) where the wide load ran, else (4-block load -
    2-block load) / 2; the rest of the 2-block load fixed. Where the 4-block load is not
    clearly slower (within ``RESOLVED`` of it: small blocks, a noisy host, the tiny model) the difference is noise,
    so each block is charged a quarter of the 4-block load (the most it can cost: the fixed part is >= 0) and the
    fixed part whatever keeps the 2-block load as measured; ``resolved_blocks`` says which happened.
    Per pinned block, what it adds over loading it resident (its read and quantization are charged as any block's):
    its copy out of the device at ``copy_gbps`` (the measured pinned transfer rate). The packing calibrate timed
    (``pack_s``) is not charged by the block: on the H200 its blocks took 0.15 s each against the runs' 0.075 s
    (0.067 of it the read), and W1's load with 18 pinned blocks took 0.41 s more than all-resident, which the copies
    (0.14 s) and the fixed cost account for; only without ``copy_gbps`` does the packing less the block's read stand
    in. The streaming's fixed cost: the pinned load less its resident part, its packing and its wait for the pinned
    buffer (which the planner charges from ``populate`` and the resident load).
    ``populate``: ``populate_rate``'s answer (the pinned buffer made at a run's size); ``gemma``: ``gemma_load``'s.
    """
    t2, t4 = loads.seconds[2], loads.seconds[4]
    if WIDE in loads.seconds and loads.seconds[WIDE] > t2:
        per_block = (loads.seconds[WIDE] - t2) / (WIDE - 2)
    else:
        per_block = (t4 - t2) / 2 if resolved_blocks(loads) else t4 / 4
    fixed = max(t2 - 2 * per_block, 0.0)
    pin = release = None
    stream_fixed = 0.0
    if not isinstance(pinned, str):
        p = pinned.parts
        extra = (loads.block_device / (copy_gbps * GB) if copy_gbps
                 else max(p["pack_s"] / pinned.streamed - per_block, 1e-6))  # fmt: skip
        stream_fixed = max(0.0, pinned.seconds - p["resident_s"] - p["buffer_wait_s"] - p["pack_s"])
        pin = loads.block_device / extra / GB
        release = pinned.streamed * loads.block_device / pinned.released / GB if pinned.released > 0 else None
    decoders = stages.get("decoders")
    embeddings = stages.get("embeddings")
    # The as-stored loader's rate: the decoders' (many small tensors, cast on the device) where measured, else the
    # transformer's fixed part (its build included: a lower bound on the rate).
    bf16 = decoders[1] / decoders[0] / GB if decoders else loads.fixed_read / max(fixed, 1e-6) / GB
    return LoadTimings(
        quantized_gbps=loads.block_read / per_block / GB, bf16_gbps=bf16, transformer_fixed_s=fixed,
        pin_gbps=pin, release_gbps=release, stream_fixed_s=stream_fixed,
        populate_gbps=None if isinstance(populate, str) or pin is None else populate[0],
        decoders_s=decoders[0] if decoders else None, decoders_bytes=decoders[1] if decoders else None,
        embeddings_s=embeddings[0] if embeddings else None, embeddings_bytes=embeddings[1] if embeddings else None,
        **({"gemma_s": gemma.seconds, "gemma_bytes": gemma.bytes, "gemma_encode_s": gemma.encode_s,
            "embeddings_first_s": gemma.embeddings_first_s} if isinstance(gemma, GemmaLoad) else {}),
        how=how,
    )  # fmt: skip


def stage_loads(checkpoint: Path, device: torch.device, dtype: torch.dtype) -> tuple[dict[str, tuple[float, int]],
                                                                                       torch.nn.Module]:  # fmt: skip
    """The decode stage's loads (video decoder, audio decoder, vocoder) and the connectors', as those stages load
    them from ``checkpoint``: ``{name: (seconds, file bytes)}``, and the video decoder (kept for the decode timing)."""
    tensors = read_header(checkpoint).tensors
    out: dict[str, tuple[float, int]] = {}
    for name, prefixes in (("decoders", VIDEO_DECODER + AUDIO_DECODER), ("embeddings", EMBEDDINGS)):
        infos = [t for n, t in tensors.items() if n.startswith(prefixes)]
        mini_model.warm(checkpoint, infos)
        out[name] = (0.0, sum(t.nbytes for t in infos))

    def decoders() -> tuple[torch.nn.Module, ...]:
        return (loaders.load_video_decoder(checkpoint, device, dtype), loaders.load_audio_decoder(checkpoint, device,
                dtype), loaders.load_vocoder(checkpoint, device, dtype))  # fmt: skip

    parts, seconds = _timed(decoders, device)
    out["decoders"] = (seconds, out["decoders"][1])
    video_decoder = parts[0]  # type: ignore[index]
    del parts
    processor, seconds = _timed(lambda: load_embeddings_processor(checkpoint, device, dtype), device)
    out["embeddings"] = (seconds, out["embeddings"][1])
    del processor
    _free(device)
    return out, video_decoder


@dataclass(frozen=True)
class GemmaLoad:
    """Gemma's language model loaded whole with the run's loader: ``seconds``, the file ``bytes`` it read, and its
    first ``encode`` of two prompts (CFG's prompt and negative prompt; the context is always 1024 tokens); with the
    checkpoint, then the embeddings processor's load (``embeddings_s``) and its first pass over those two
    (``embeddings_first_s``), as the text stage's second part runs them."""

    seconds: float
    bytes: int
    encode_s: float
    embeddings_s: float | None = None
    embeddings_first_s: float | None = None


GEMMA_ROOM = 1 << 30  # beyond Gemma's file bytes (bf16: more than its 8-bit load holds), for the encode's activations


def gemma_load(gemma_root: Path, device: torch.device, dtype: torch.dtype, policy: QuantPolicy,
               checkpoint: Path | None = None) -> GemmaLoad | str:  # fmt: skip
    """Load Gemma from ``gemma_root`` as the text stage loads it when all its layers fit (warm: its tensors read
    once first), then encode two prompts, then (with ``checkpoint``) load the embeddings processor and pass the
    two through it; or why not (a device without room for Gemma whole)."""
    _, weights, tokenizer_root = find_gemma_files(Path(gemma_root))
    parts = [(f, [t for n, t in read_header(f).tensors.items() if language_model_key(n) is not None]) for f in weights]
    nbytes = sum(t.nbytes for _, infos in parts for t in infos)
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        if free < nbytes + GEMMA_ROOM:
            return (f"not measured: loading Gemma whole needs ~{(nbytes + GEMMA_ROOM) / 2**30:.1f} GiB free, "
                    f"{free / 2**30:.1f} GiB are")  # fmt: skip
    for f, infos in parts:
        mini_model.warm(f, infos)
    tokenizer = PromptTokenizer(tokenizer_root)  # made in the run's setup, before the stage
    text, seconds = _timed(lambda: load_gemma_text_model(gemma_root, device, dtype, tokenizer, policy), device)
    prompts = ["A red kite dances over a windy beach at sunset while waves crash and gulls call.", ""]
    hidden, encode = _timed(functools.partial(text.encode, prompts), device)  # type: ignore[attr-defined]
    del text
    embeddings = first = None
    if checkpoint is not None:
        processor, embeddings = _timed(lambda: load_embeddings_processor(checkpoint, device, dtype), device)
        layers, mask = hidden  # type: ignore[misc]
        _, first = _timed(lambda: connect_prompts(processor, HiddenStates(layers, mask)), device)  # type: ignore[arg-type]
        del processor, layers, mask
    del hidden
    _free(device)
    return GemmaLoad(seconds, nbytes, encode, embeddings, first)


def decode_timings(decoder: torch.nn.Module, config: dict, device: torch.device, dtype: torch.dtype,
                   quick: bool = False) -> DecodeTimings:  # fmt: skip
    """The video decoder untiled on a random latent of W1's size (``quick``: about a tenth of it, a check that the
    step runs rather than a figure to plan with): first call (new shapes), then a steady one."""
    t = w1_tokens(config)
    frames, height, width = t.latent_frames, t.latent_height, t.latent_width
    if quick:
        frames, height, width = min(frames, 3), max(1, height // 2), max(1, width // 2)
    channels = config["vae"].get("latent_channels", 128)
    gen = torch.Generator(device=device).manual_seed(0)
    latent = torch.randn(1, channels, frames, height, width, device=device, dtype=dtype, generator=gen)

    def once() -> None:
        with torch.inference_mode():
            for _ in decode_video(latent, decoder, None):
                pass

    _, first = _timed(once, device)
    _, steady = _timed(once, device)
    flops = video_decode_flops(config["vae"], frames, height, width)
    size = "a small random latent (--quick)" if quick else "a random latent of W1's size"
    how = (f"the run's video decoder, untiled, on {size} ({frames}x{height}x{width}): first call {first:.3f} s, "
           f"then {steady:.3f} s")  # fmt: skip
    return DecodeTimings(flops / steady / 1e12, max(0.0, first - steady), how)
