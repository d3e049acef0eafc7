"""Benchmark peer: diffusers 0.42.1 ``LTX2Pipeline`` on W1, built from our configs with random weights.

Timing and memory do not depend on weight values, so the pipeline is built from the same configs as our generated
checkpoint (``ltx2_config`` / ``gemma_config``; parameter counts are checked against its headers): every module on
``meta`` first, then each parameter filled with small normal values on the GPU (no NaN, no uninitialised memory
that could change kernel speed) and kept where the offload mode keeps it (pageable host for model offload, pinned
host for group offloading, which pins everything anyway). Stages are timed by wrapping what the pipeline calls
(prompt encoding + connectors, each denoising step via ``callback_on_step_end``, VAE decode, audio decode +
vocoder, MP4 encoding) with device-synchronised timers (``StageClock``, which peer_official.py uses too). A failure
(an out-of-memory under the cap, say) is the result: recorded with its stage and a one-line error.

It runs in its own environment (diffusers 0.42.1 needs huggingface_hub >= 1.32, which transformers 4.57 refuses),
so from ltx2_edge it imports only the pure config and header modules. It never downloads anything.
Usage: python bench/peer_diffusers.py --gemma-root D --out R.json --offload model|group|none [--device-cap-gib 32]
       [--checkpoint-path F] [--negative-prompt TEXT] [--tiny] (--tiny: our tiny configs, a CPU wiring check)
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import time
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from ltx2_edge.checkpoint.configs import gemma_config, ltx2_config
from ltx2_edge.checkpoint.header import read_header

GiB = 1024**3
GROUP_RESIDENT = ("vae", "audio_vae", "vocoder")  # not group-offloaded (see run())
PROMPT = "A red kite dances over a windy beach at sunset while waves crash and gulls call."
# diffusers LTX2VideoTransformer3DModel argument <- our transformer config key (same name where not listed).
TRANSFORMER_SAME = ("in_channels", "out_channels", "num_attention_heads", "attention_head_dim", "cross_attention_dim",
                    "audio_in_channels", "audio_out_channels", "audio_num_attention_heads", "audio_attention_head_dim",
                    "audio_cross_attention_dim", "num_layers", "caption_channels", "norm_eps", "attention_bias",
                    "timestep_scale_multiplier", "rope_type")  # fmt: skip
TRANSFORMER_RENAMED = {"cross_attn_timestep_scale_multiplier": "av_ca_timestep_scale_multiplier",
                       "rope_theta": "positional_embedding_theta"}  # fmt: skip


def _transformer_and_connectors(t: dict[str, Any], gemma_layers: int) -> tuple[dict, dict]:
    rope = {"rope_theta": t["positional_embedding_theta"], "rope_type": t["rope_type"],
            "rope_double_precision": t["frequencies_precision"] == "float64"}  # fmt: skip
    pos = t["positional_embedding_max_pos"]
    transformer = {k: t[k] for k in TRANSFORMER_SAME} | {k: t[v] for k, v in TRANSFORMER_RENAMED.items()}
    transformer |= {"pos_embed_max_pos": pos[0], "base_height": pos[1], "base_width": pos[2],
                    "audio_pos_embed_max_pos": t["audio_positional_embedding_max_pos"][0],
                    "rope_double_precision": rope["rope_double_precision"]}  # fmt: skip
    connectors = {"caption_channels": t["caption_channels"], "text_proj_in_factor": gemma_layers + 1,
                  "connector_rope_base_seq_len": t["connector_positional_embedding_max_pos"][0],
                  "causal_temporal_positioning": t["causal_temporal_positioning"], **rope}  # fmt: skip
    for side in ("video", "audio"):  # LTX-2.0: both connectors 3840 wide, like the text
        connectors |= {f"{side}_connector_num_attention_heads": t["connector_num_attention_heads"],
                       f"{side}_connector_attention_head_dim": t["connector_attention_head_dim"],
                       f"{side}_connector_num_layers": t["connector_num_layers"],
                       f"{side}_connector_num_learnable_registers": t["connector_num_learnable_registers"]}  # fmt: skip
    return transformer, connectors


def _video_vae(vae: dict[str, Any], size: str) -> dict[str, Any]:
    # ltx-core's decoder: res_x groups between channel-halving upsamplers; diffusers lists them encoder-first.
    layers, factors, residual = [0], [], []
    for kind, params in vae["decoder_blocks"]:
        if kind == "res_x":
            layers[-1] += params["num_layers"]
        elif kind == "compress_all":
            factors.append(params["multiplier"])
            residual.append(params["residual"])
            layers.append(0)
        else:
            raise ValueError(f"decoder block {kind!r} has no diffusers mapping here: extend _video_vae")
    n, base = len(factors), vae["decoder_base_channels"]
    # diffusers derives the compression from its block count (64x here); ltx-core's is 2x per compressing block.
    kinds = [kind for kind, _ in vae["encoder_blocks"]]
    space = sum(k in ("compress_space_res", "compress_all_res") for k in kinds)
    time_ = sum(k in ("compress_time_res", "compress_all_res") for k in kinds)
    out = {"latent_channels": vae["latent_channels"], "patch_size": vae["patch_size"],
           "spatial_compression_ratio": vae["patch_size"] * 2**space, "temporal_compression_ratio": 2**time_,
           "decoder_block_out_channels": tuple(base * 2 ** (i + 1) for i in range(n)),
           "decoder_layers_per_block": tuple(reversed(layers)), "upsample_factor": tuple(reversed(factors)),
           "upsample_residual": tuple(reversed(residual)), "decoder_spatio_temporal_scaling": (True,) * n,
           "upsample_type": ("spatiotemporal",) * n, "decoder_inject_noise": (False,) * (n + 1),
           "decoder_causal": vae["causal_decoder"], "timestep_conditioning": vae["timestep_conditioning"],
           "decoder_spatial_padding_mode": vae["spatial_padding_mode"]}  # fmt: skip
    if size == "tiny":  # the encoder never runs for text-to-video: only its size matters, and tiny's is small
        out |= {"block_out_channels": (16, 16, 16, 16), "layers_per_block": (1, 1, 1, 1, 1)}
    return out


def component_configs(size: str) -> dict[str, dict[str, Any]]:
    """diffusers constructor arguments for each LTX-2 component, mapped from our checkpoint's config."""
    cfg, gemma = ltx2_config(size), gemma_config(size)  # type: ignore[arg-type]
    transformer, connectors = _transformer_and_connectors(cfg["transformer"], gemma["text_config"]["num_hidden_layers"])
    audio, voc = cfg["audio_vae"], cfg["vocoder"]
    dd = audio["model"]["params"]["ddconfig"]
    audio_vae = {"base_channels": dd["ch"], "output_channels": dd["out_ch"], "ch_mult": tuple(dd["ch_mult"]),
                 "attn_resolutions": tuple(dd["attn_resolutions"]) or None, "latent_channels": dd["z_channels"],
                 "sample_rate": audio["model"]["params"]["sampling_rate"],
                 "mel_hop_length": audio["preprocessing"]["stft"]["hop_length"]}  # fmt: skip
    audio_vae |= {k: dd[k] for k in ("num_res_blocks", "in_channels", "resolution", "norm_type", "causality_axis",
                                     "mid_block_add_attention", "mel_bins", "double_z")}  # fmt: skip
    vocoder = {"in_channels": dd["out_ch"] * dd["mel_bins"], "hidden_channels": voc["upsample_initial_channel"],
               "out_channels": 2 if voc["stereo"] else 1, "upsample_kernel_sizes": voc["upsample_kernel_sizes"],
               "upsample_factors": voc["upsample_rates"], "resnet_kernel_sizes": voc["resblock_kernel_sizes"],
               "resnet_dilations": voc["resblock_dilation_sizes"],
               "output_sampling_rate": voc["output_sampling_rate"]}  # fmt: skip
    return {"transformer": transformer, "connectors": connectors, "vae": _video_vae(cfg["vae"], size),
            "audio_vae": audio_vae, "vocoder": vocoder, "text_encoder": gemma}  # fmt: skip


def checkpoint_sizes(checkpoint: Path, gemma_root: Path) -> dict[str, int]:
    """Parameter counts per component from our files' headers (no weight is read)."""
    groups = dict.fromkeys(("transformer", "connectors", "vae", "audio_vae", "vocoder", "text_encoder"), 0)
    for info in read_header(checkpoint).tensors.values():
        n, head = info.name, info.name.split(".", 1)[0]
        if "embeddings_connector" in n or head == "text_embedding_projection":
            groups["connectors"] += info.numel
        elif n.startswith("model.diffusion_model."):
            groups["transformer"] += info.numel
        elif head in groups:
            groups[head] += info.numel
    for shard in sorted(gemma_root.glob("model*.safetensors")):
        groups["text_encoder"] += sum(i.numel for i in read_header(shard).tensors.values())
    return groups


def _fill(shape: torch.Size, device: torch.device, name: str) -> torch.Tensor:
    """bf16 values that keep activations O(1) through deep stacks: N(0, 1/fan_in) matrices, N(1, .02) norm scales."""
    t = torch.empty(shape, dtype=torch.bfloat16, device=device)
    if len(shape) >= 2:
        return t.normal_(0.0, 1.0 / math.sqrt(math.prod(shape[1:])))
    return t.normal_(1.0 if "norm" in name and name.endswith("weight") else 0.0, 0.02)


def materialize(module: torch.nn.Module, storage: str, fill_device: torch.device) -> None:
    """Replace every meta parameter by random bf16 values kept in ``storage`` (cuda, cpu or pinned); parameters
    shared between modules stay shared."""
    done: dict[int, torch.nn.Parameter] = {}
    for prefix, sub in module.named_modules():
        for name, p in list(sub._parameters.items()):
            if p is None:
                continue
            if id(p) not in done:
                data = _fill(p.shape, fill_device, f"{prefix}.{name}")
                if storage == "pinned":
                    data = torch.empty(p.shape, dtype=data.dtype, pin_memory=True).copy_(data)
                elif storage != fill_device.type:
                    data = data.to(storage)
                done[id(p)] = torch.nn.Parameter(data, requires_grad=False)
            sub._parameters[name] = done[id(p)]


def build_pipeline(size: str, gemma_root: Path, storage: str, fill_device: torch.device) -> tuple[Any, dict[str, int]]:
    """The LTX2Pipeline with random weights; also each component's parameter count."""
    import diffusers
    from accelerate import init_empty_weights
    from diffusers.pipelines.ltx2 import LTX2TextConnectors, LTX2Vocoder
    from transformers import AutoTokenizer, Gemma3Config, Gemma3ForConditionalGeneration

    classes = {"transformer": diffusers.LTX2VideoTransformer3DModel, "connectors": LTX2TextConnectors,
               "vae": diffusers.AutoencoderKLLTX2Video, "audio_vae": diffusers.AutoencoderKLLTX2Audio,
               "vocoder": LTX2Vocoder, "text_encoder": lambda **c: Gemma3ForConditionalGeneration(Gemma3Config(**c)),
               }  # fmt: skip
    modules, sizes = {}, {}
    for name, config in component_configs(size).items():
        with init_empty_weights(include_buffers=False):  # parameters on meta; buffers (RoPE tables) computed
            module = classes[name](**config)
        materialize(module, storage, fill_device)
        if hasattr(module, "tie_weights"):
            module.tie_weights()  # as from_pretrained does: Gemma's output head shares the embedding matrix
        sizes[name] = sum(p.numel() for p in module.parameters())  # shared parameters counted once
        modules[name] = module.eval()
    # LTX-2's published scheduler settings (diffusers' Lightricks/LTX-2 scheduler_config.json).
    scheduler = diffusers.FlowMatchEulerDiscreteScheduler(
        use_dynamic_shifting=True, base_shift=0.95, max_shift=2.05, base_image_seq_len=1024, max_image_seq_len=4096,
        shift_terminal=0.1, time_shift_type="exponential")  # fmt: skip
    tokenizer = AutoTokenizer.from_pretrained(str(gemma_root), local_files_only=True)
    return diffusers.LTX2Pipeline(scheduler=scheduler, tokenizer=tokenizer, **modules), sizes


class StageClock:
    """Device-synchronised stage timers with per-stage peak allocations; ``current`` names the stage running
    (after an exception: the stage it was raised in)."""

    def __init__(self, device: torch.device) -> None:
        self.device, self.seconds, self.peaks = device, {}, {}
        self.current: str | None = None
        self._started = 0.0

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)  # a timer must see the end of the GPU work it brackets

    def start(self, stage: str) -> None:
        self.sync()
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        self.current, self._started = stage, time.perf_counter()

    def stop(self) -> None:
        self.sync()
        stage, self.current = self.current, None
        self.seconds[stage] = self.seconds.get(stage, 0.0) + time.perf_counter() - self._started
        if self.device.type == "cuda":
            self.peaks[stage] = max(self.peaks.get(stage, 0), torch.cuda.max_memory_allocated(self.device))

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        self.start(name)
        yield  # no finally: after an exception ``current`` still names this stage
        self.stop()

    def wrap(self, obj: Any, attr: str, stage: str, drain: bool = False) -> None:
        """Time every call of ``obj.attr`` (wrap after offload hooks are installed, so their onloads are inside).
        ``drain``: the call returns a generator that works while iterated: consume it inside the timer."""
        inner = getattr(obj, attr)

        def timed(*a: Any, **k: Any) -> Any:
            with self.stage(stage):
                out = inner(*a, **k)
                return list(out) if drain else out

        setattr(obj, attr, timed)


def one_line(exc: BaseException) -> str:
    """``Type: message`` on one line (whitespace collapsed), at most 300 characters."""
    return f"{type(exc).__name__}: {' '.join(str(exc).split())}"[:300]


def run(args: argparse.Namespace, record: dict[str, Any], clock: StageClock) -> None:
    """Build, offload, generate and encode; what was measured stays in ``record``/``clock`` if it fails."""
    device = clock.device
    if args.device_cap_gib is not None:
        total = torch.cuda.get_device_properties(device).total_memory
        torch.cuda.set_per_process_memory_fraction(args.device_cap_gib * GiB / total)
    storage = {"model": "cpu", "group": "pinned", "none": device.type}[args.offload]
    with clock.stage("build"):  # random weights: not a user's cost, and from_pretrained's is not measured
        pipe, record["parameters"] = build_pipeline("tiny" if args.tiny else "full", args.gemma_root, storage, device)
        if device.type == "cuda":
            torch.cuda.empty_cache()  # the blocks our random fill left cached are not diffusers' to count
    if args.checkpoint_path is not None:
        record["checkpoint_parameters"] = checkpoint_sizes(args.checkpoint_path, args.gemma_root)
    with clock.stage("offload_setup"):
        if args.offload == "model":
            pipe.enable_model_cpu_offload(device=device)
        elif args.offload == "group":
            # The decoders stay on the device (~1.5 GB together): block-level hooks onload a model's top-level
            # layers from its forward(), but the pipeline calls vae.decode(), so group-offloaded decoders failed
            # with "Input type (CUDABFloat16Type) and weight type (CPUBFloat16Type)" (H100, 2026-11-23 call 4).
            # Keeping them resident is what diffusers' exclude_modules is for, and what a user would do.
            pipe.enable_group_offload(onload_device=device, offload_type="block_level", num_blocks_per_group=1,
                                      use_stream=args.use_stream, exclude_modules=list(GROUP_RESIDENT))  # fmt: skip
            record["resident_during_group_offload"] = list(GROUP_RESIDENT)
    for obj, attr, stage in ((pipe, "encode_prompt", "text_encode"), (pipe.connectors, "forward", "text_encode"),
                             (pipe.vae, "decode", "decode_video"), (pipe.audio_vae, "decode", "decode_audio"),
                             (pipe.vocoder, "forward", "decode_audio")):  # fmt: skip
        clock.wrap(obj, attr, stage)
    marks: list[float] = record["step_marks"]
    inner_forward = pipe.transformer.forward

    def transformer_forward(*a: Any, **k: Any) -> Any:
        if not marks:  # the first step begins; weights may be onloaded inside it
            clock.start("denoise")
            marks.append(time.perf_counter())
        return inner_forward(*a, **k)

    def on_step_end(_pipe: Any, i: int, _t: Any, kwargs: dict) -> dict:
        clock.sync()  # a step ends when its GPU work has
        marks.append(time.perf_counter())
        if i == args.steps - 1:
            clock.stop()
        return kwargs

    pipe.transformer.forward = transformer_forward
    started = time.perf_counter()
    video, audio = pipe(
        prompt=PROMPT, negative_prompt=args.negative_prompt, height=args.height, width=args.width,
        num_frames=args.num_frames, frame_rate=24.0, num_inference_steps=args.steps, guidance_scale=3.0,
        audio_guidance_scale=7.0, guidance_rescale=0.7, audio_guidance_rescale=0.7, stg_scale=0.0,
        audio_stg_scale=0.0, modality_scale=1.0, audio_modality_scale=1.0, output_type="np", return_dict=False,
        generator=torch.Generator(device=device).manual_seed(10), callback_on_step_end=on_step_end)  # fmt: skip
    record["finite"] = bool(torch.isfinite(torch.as_tensor(video)).all() and torch.isfinite(audio.float()).all())
    with clock.stage("mux"):
        from diffusers.utils.export_utils import encode_video

        encode_video(video[0], fps=24, audio=audio[0].float().cpu(), output_path=str(args.mp4),
                     audio_sample_rate=pipe.vocoder.config.output_sampling_rate)  # fmt: skip
    record.update(total_seconds=time.perf_counter() - started, mp4_bytes=args.mp4.stat().st_size,
                  video_shape=list(video.shape), audio_shape=list(audio.shape))  # fmt: skip


def finish(record: dict[str, Any], clock: StageClock) -> None:
    """The fields every peer record shares: stage seconds, denoising steps, peak device memory (build excluded)."""
    sec = clock.seconds
    decode = [sec[k] for k in ("decode_video", "decode_audio") if k in sec]
    record["stage_seconds_raw"], record["stage_peak_bytes"] = sec, clock.peaks
    record["stages"] = {"text_encode": sec.get("text_encode"), "denoise": sec.get("denoise"),
                        "decode": sum(decode) if decode else None, "mux": sec.get("mux")}  # fmt: skip
    marks = record.pop("step_marks")
    record["step_seconds"] = [b - a for a, b in zip(marks, marks[1:], strict=False)]
    if len(record["step_seconds"]) == record["steps"]:
        record["denoise_steps_seconds"] = sum(record["step_seconds"])
    record["denoise_load_seconds"] = None  # weights are onloaded inside steps (model: the first; group: every one)
    peaks = [v for k, v in clock.peaks.items() if k != "build"]
    record["peak_allocated_bytes"] = max(peaks) if peaks else None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gemma-root", type=Path, required=True, help="Gemma folder: its tokenizer (and header sizes)")
    ap.add_argument("--checkpoint-path", type=Path, help="our checkpoint: compare parameter counts with its header")
    ap.add_argument("--out", type=Path, required=True, help="where the JSON record goes")
    ap.add_argument("--mp4", type=Path, default=Path("/tmp/peer_diffusers.mp4"))
    ap.add_argument("--offload", choices=("model", "group", "none"), required=True)
    ap.add_argument("--use-stream", action=argparse.BooleanOptionalAction, default=True,
                    help="group offloading copies on a side CUDA stream (default)")  # fmt: skip
    ap.add_argument("--device-cap-gib", type=float, default=None)
    ap.add_argument("--negative-prompt", default="")
    ap.add_argument("--tiny", action="store_true", help="our tiny configs (CPU wiring check)")
    for name, default in (("width", 512), ("height", 288), ("num-frames", 97), ("steps", 20)):
        ap.add_argument(f"--{name}", type=int, default=default)
    args = ap.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if args.offload != "none" and device.type != "cuda":
        raise SystemExit(f"peer_diffusers: error: --offload {args.offload} needs a CUDA device; use --offload none")
    import diffusers
    import transformers

    record: dict[str, Any] = {
        "system": "diffusers 0.42.1 LTX2Pipeline", "offload": args.offload, "device_cap_gib": args.device_cap_gib,
        "use_stream": args.use_stream if args.offload == "group" else None, "guidance": "cfg", "steps": args.steps,
        "versions": {"diffusers": diffusers.__version__, "transformers": transformers.__version__,
                     "torch": torch.__version__},
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu", "step_marks": [],
        "notes": ["random bf16 weights built in-process: total_seconds is the pipeline call + MP4, no weight loading"],
    }  # fmt: skip
    clock = StageClock(device)
    try:
        run(args, record, clock)
        record["status"] = "ok"
    except Exception as exc:  # an OOM under the cap is a result: record where, with the error, never hide it
        record.update(status="failed", failed_stage=clock.current or "outside the timed stages", error=one_line(exc),
                      traceback_tail=traceback.format_exc()[-1500:])  # fmt: skip
    finish(record, clock)
    record["peak_host_rss_self_bytes"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB
    print(json.dumps({k: v for k, v in record.items() if k != "traceback_tail"}, indent=1))
    args.out.write_text(json.dumps(record, indent=1))


if __name__ == "__main__":
    main()
