"""FLOP counts per stage, from header shapes and token counts: what the planner divides by a device's rates.

Linear layers: 2 x M x K x N per weight matrix (M tokens through a K->N weight), split into the FLOPs that
run on quantized weights and those on BF16 weights (the keep-list), because the two run at different
rates. Attention: 4 x S_q x S_kv x inner_dim (QK^T and PV) per attention. Convolutions: 2 x k^3 x C_in x
C_out per output voxel. Check: W1's transformer forward is 57.5 TFLOP (53.1 linear + 4.45 attention; the compute
floor it gives is in docs/benchmarks.md, "denoising at the compute floor"); ``tests/test_planner.py`` holds us to
5 %. ``block_linear_shapes`` / ``block_flops``: one transformer block from the config alone, shared by the planner's
step model (``plan.step_time``) and ``calibrate``'s mini transformer, so both price a block the same way. Pure
arithmetic; never imports torch.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from ltx2_edge.checkpoint.header import TensorInfo
from ltx2_edge.plan.activations import TokenCounts, video_decoder_levels


@dataclass(frozen=True)
class FlopCount:
    """FLOPs by kernel class: linear on quantized weights, linear on BF16 weights, attention, convolution."""

    linear_quantized: float = 0.0
    linear_bf16: float = 0.0
    attention: float = 0.0
    conv: float = 0.0

    def __add__(self, other: FlopCount) -> FlopCount:
        return FlopCount(
            self.linear_quantized + other.linear_quantized,
            self.linear_bf16 + other.linear_bf16,
            self.attention + other.attention,
            self.conv + other.conv,
        )

    def scaled(self, factor: float) -> FlopCount:
        """Every class times ``factor`` (a batch, a number of prompts)."""
        return FlopCount(*(factor * x for x in (self.linear_quantized, self.linear_bf16, self.attention, self.conv)))

    @property
    def total(self) -> float:
        return self.linear_quantized + self.linear_bf16 + self.attention + self.conv


def is_linear_weight(info: TensorInfo) -> bool:
    """A 2-D ``*.weight``: a Linear layer's matrix (norms are 1-D; scale-shift tables are not ``.weight``)."""
    return info.name.endswith(".weight") and len(info.shape) == 2


def linear_flops(
    tensors: Iterable[TensorInfo], rows: Callable[[str], int], quantized: Callable[[str], bool]
) -> FlopCount:
    """Sum 2 x rows(name) x K x N over the Linear weights; ``quantized(name)`` says which class each joins."""
    q = bf = 0.0
    for info in tensors:
        if not is_linear_weight(info):
            continue
        f = 2.0 * rows(info.name) * info.shape[0] * info.shape[1]
        if quantized(info.name):
            q += f
        else:
            bf += f
    return FlopCount(linear_quantized=q, linear_bf16=bf)


def transformer_rows(tokens: TokenCounts) -> Callable[[str], int]:
    """Token count through each transformer weight, by name (names relative to ``model.diffusion_model.``).

    Text K/V projections see the 1024 text tokens; A/V cross-attention projects K/V from the other stream;
    adaLN and the A/V modulation run per token (LTX-2's timesteps are per token).
    """
    v, a, t = tokens.video, tokens.audio, tokens.text
    kv = (".to_k.", ".to_v.")

    def rows(name: str) -> int:
        if name.startswith("transformer_blocks."):
            local = name.split(".", 2)[2]
            module = local.split(".", 1)[0]
            is_kv = any(k in "." + local for k in kv)
            if module == "attn2":
                return t if is_kv else v
            if module == "audio_attn2":
                return t if is_kv else a
            if module == "audio_to_video_attn":
                return a if is_kv else v
            if module == "video_to_audio_attn":
                return v if is_kv else a
            return a if module.startswith("audio_") else v
        if "caption_projection" in name:
            return t
        return a if name.startswith(("audio_", "av_ca_audio", "av_ca_v2a")) else v

    return rows


TEXT_KV = ("attn2.to_k.weight", "attn2.to_v.weight", "audio_attn2.to_k.weight", "audio_attn2.to_v.weight")
"""A block's text cross-attention K/V projections: computed once per run when ``accel.step_invariants`` freezes
them (every block resident), every step otherwise."""


def block_linear_shapes(config: dict[str, Any]) -> dict[str, tuple[int, int]]:
    """One block's Linear weights by name inside the block (``attn1.to_q.weight``) -> ``(out_features,
    in_features)``, as ltx-core's ``BasicAVTransformerBlock`` builds them from ``config["transformer"]``
    (``tests/test_calibrate.py`` checks this against the checkpoint layout)."""
    t = config["transformer"]
    dv = t["num_attention_heads"] * t["attention_head_dim"]
    da = t["audio_num_attention_heads"] * t["audio_attention_head_dim"]
    text_v, text_a = t["cross_attention_dim"], t["audio_cross_attention_dim"]
    out: dict[str, tuple[int, int]] = {}

    def attention(module: str, q: tuple[int, int], kv: tuple[int, int], o: tuple[int, int]) -> None:
        for proj, shape in (("to_q", q), ("to_k", kv), ("to_v", kv), ("to_out.0", o)):
            out[f"{module}.{proj}.weight"] = shape

    attention("attn1", (dv, dv), (dv, dv), (dv, dv))
    attention("attn2", (dv, dv), (dv, text_v), (dv, dv))
    out["ff.net.0.proj.weight"] = (4 * dv, dv)
    out["ff.net.2.weight"] = (dv, 4 * dv)
    attention("audio_attn1", (da, da), (da, da), (da, da))
    attention("audio_attn2", (da, da), (da, text_a), (da, da))
    out["audio_ff.net.0.proj.weight"] = (4 * da, da)
    out["audio_ff.net.2.weight"] = (da, 4 * da)
    attention("audio_to_video_attn", (da, dv), (da, da), (dv, da))  # video queries, audio keys, at the audio width
    attention("video_to_audio_attn", (da, da), (da, dv), (da, da))  # audio queries, video keys
    return out


def block_flops(
    config: dict[str, Any], tokens: TokenCounts, batch: int, quantized: Callable[[str], bool], block_prefix: str
) -> tuple[FlopCount, FlopCount]:
    """``(one block's FLOPs, the part of them that is text K/V)`` for ``batch`` guidance samples at ``tokens``.

    ``quantized(name)`` sees ``block_prefix + local name`` (``model.diffusion_model.transformer_blocks.0.``: the
    file names the policy reads). Attention is ``transformer_attention_flops`` over one block.
    """
    rows = transformer_rows(tokens)
    shapes = block_linear_shapes(config)
    infos = [TensorInfo(block_prefix + name, "BF16", shape, 0, 0) for name, shape in shapes.items()]

    def local(name: str) -> str:  # transformer_rows reads names relative to the model
        return "transformer_blocks.0." + name[len(block_prefix) :]

    linear = linear_flops(infos, lambda n: rows(local(n)), quantized)
    kv = linear_flops([i for i in infos if i.name.endswith(TEXT_KV)], lambda n: rows(local(n)), quantized)
    attention = transformer_attention_flops(config, tokens) / config["transformer"]["num_layers"]
    return (linear + FlopCount(attention=attention)).scaled(batch), kv.scaled(batch)


def transformer_attention_flops(config: dict[str, Any], tokens: TokenCounts) -> float:
    """4 x S_q x S_kv x inner per block: video self + text, audio self + text, audio->video, video->audio."""
    t = config["transformer"]
    d_v = t["num_attention_heads"] * t["attention_head_dim"]
    d_a = t["audio_num_attention_heads"] * t["audio_attention_head_dim"]
    v, a, s = tokens.video, tokens.audio, tokens.text
    per_block = 4.0 * (v * v * d_v + v * s * d_v + a * a * d_a + a * s * d_a + v * a * d_a + a * v * d_a)
    return per_block * t["num_layers"]


def gemma_attention_flops(layers: int, q_dim: int, tokens: int) -> float:
    """Gemma self-attention over ``tokens`` (the 1024-token sliding window covers the whole prompt)."""
    return 4.0 * tokens * tokens * q_dim * layers


def video_decode_flops(vae: dict[str, Any], lt: int, lh: int, lw: int) -> float:
    """3x3x3 convolutions of the video decoder on one latent tile: conv_in, ResNet convs, upsampling convs,
    conv_out (to 3 x patch^2 channels)."""
    levels = video_decoder_levels(vae, lt, lh, lw)
    per_voxel = 2.0 * 27
    first = levels[0]
    flops = per_voxel * vae.get("latent_channels", 128) * first.channels * first.voxels
    for lv in levels:
        flops += per_voxel * lv.res_convs * lv.channels * lv.channels * lv.voxels
        flops += per_voxel * lv.channels * lv.up_convs_to * lv.voxels
    last = levels[-1]
    flops += per_voxel * last.channels * vae.get("out_channels", 3) * vae.get("patch_size", 4) ** 2 * last.voxels
    return flops


def vocoder_flops(config: dict[str, Any], mel_frames: int) -> float:
    """HiFi-GAN-style vocoder: transposed upsampling convs and, per level, resblocks of 2 convs per dilation.

    The audio VAE decoder before it adds under 10 % at LTX-2's sizes and is not counted.
    """
    voc = config["vocoder"]
    channels, length = voc["upsample_initial_channel"], mel_frames
    flops = 2.0 * 7 * 128 * channels * length  # conv_pre over the stereo mel (2 x 64 bins)
    kernels = voc["resblock_kernel_sizes"]
    dilations = voc["resblock_dilation_sizes"]
    for rate, up_kernel in zip(voc["upsample_rates"], voc["upsample_kernel_sizes"], strict=True):
        out_channels = channels // 2
        flops += 2.0 * up_kernel * channels * out_channels * length
        channels, length = out_channels, length * rate
        for k, dil in zip(kernels, dilations, strict=True):
            flops += 2 * len(dil) * 2.0 * k * channels * channels * length
    return flops
