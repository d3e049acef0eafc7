"""Working-set formulas: how many bytes of activations each stage holds at its peak, from config and request.

Every function counts bytes of live tensors at the stage's worst moment (weights are counted by the planner,
from the header) and names, in its docstring, the measured figure that calibrates it (docs/benchmarks.md, the
baseline and the official pipeline on the same H100: peak allocated with random full-size weights, W1). Activations are
BF16 (2 bytes) unless said otherwise. Pure arithmetic: this module never imports torch or ltx_core, and
never allocates anything; ``tests/test_planner.py`` checks the token counts and tile splits against ltx-core.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from ltx2_edge.checkpoint.header import TensorInfo
from ltx2_edge.checkpoint.names import TEXT_CONTEXT_TOKENS

ACT_BYTES = 2  # BF16 activations
_VIDEO_TIME_FACTOR = 8  # latent frame = 8 video frames (the first latent frame = 1 video frame)
_VIDEO_SPACE_FACTOR = 32  # latent cell = 32x32 pixels
_AUDIO_LATENT_DOWNSAMPLE = 4  # ltx_core AudioLatentShape.from_duration's audio_latent_downsample_factor

# Calibrations (see each function's docstring for the measurement and the arithmetic behind them).
_EMBED_WORK_COPIES = 6.0  # one prompt's stacked hidden states, live copies inside the feature extractor
_VAE_LEVEL_COPIES = 7.5  # largest decoder level tensor, live copies (incl. conv workspaces)
_AUDIO_LEVEL_COPIES = 22.0  # largest audio decoder/vocoder level tensor, live copies (small tensors, fp32 paths)


@dataclass(frozen=True)
class TokenCounts:
    """Sequence lengths of one guidance sample: video latent cells, audio latent frames, text tokens."""

    video: int
    audio: int
    text: int
    latent_frames: int
    latent_height: int
    latent_width: int


def token_counts(config: dict[str, Any], width: int, height: int, num_frames: int, frame_rate: float) -> TokenCounts:
    """Video tokens = ((F-1)/8+1) x H/32 x W/32; audio tokens = round(F/fps x sample_rate/hop/4).

    The audio formula is ltx_core's ``AudioLatentShape.from_video_pixel_shape`` (25 per second for the
    16 kHz / hop 160 audio VAE); W1 (97 frames at 24 fps) gives 101. Text is always 1024 tokens.
    """
    lt = (num_frames - 1) // _VIDEO_TIME_FACTOR + 1
    lh, lw = height // _VIDEO_SPACE_FACTOR, width // _VIDEO_SPACE_FACTOR
    audio_vae = config["audio_vae"]
    sample_rate = audio_vae["model"]["params"]["sampling_rate"]
    hop = audio_vae["preprocessing"]["stft"]["hop_length"]
    per_second = float(sample_rate) / float(hop) / float(_AUDIO_LATENT_DOWNSAMPLE)
    audio = round(float(num_frames) / float(frame_rate) * per_second)
    return TokenCounts(lt * lh * lw, audio, TEXT_CONTEXT_TOKENS, lt, lh, lw)


def attention_scores_bytes(batch: int, heads: int, s_q: int, s_kv: int) -> int:
    """Score + softmax matrices of math SDPA (the CPU fallback), in FP32. Flash/cuDNN SDPA keeps none."""
    return 2 * batch * heads * s_q * s_kv * 4


def transformer_activation_bytes(
    config: dict[str, Any], tokens: TokenCounts, guidance_batch: int, materialize_scores: bool
) -> int:
    """Peak working set of one batched transformer forward (``guidance_batch`` samples), across all blocks.

    Counted in units of one stream's hidden states (B x S x D x 2 bytes), per stream (video 4096 wide,
    audio 2048 wide):
    * inside a block, the feed-forward is the peak: residual x + modulated x + FF up-projection (4 units)
      + its GELU (4 units) = 10 units (attention needs ~8: x, normed, q, k, v, rotated q/k, output);
    * kept across blocks: per-token modulation (adaLN 6 + embedded 1 + A/V scale-shift 4 + gate 1 = 12
      units, timesteps are per token in LTX-2), RoPE cos/sin (1 unit) and the A/V cross RoPE (0.5 unit);
    * text context: projected (1024 x (4096 + 2048)) plus the two 3840-wide connector outputs, per sample;
    * with math SDPA, the largest score matrix (video self-attention) on top.
    The other stream's residual and modulation stay alive while one stream peaks.
    Calibration: batch 1 at W1 gives 0.37 GiB; the official pipeline (batch-1 forwards, bf16) peaks at
    35.6 GiB with 35.16 GiB of transformer weights, i.e. 0.44 +- 0.05 GiB of activations.
    """
    t = config["transformer"]
    d_v = t["num_attention_heads"] * t["attention_head_dim"]
    d_a = t["audio_num_attention_heads"] * t["audio_attention_head_dim"]
    unit_v = guidance_batch * tokens.video * d_v * ACT_BYTES
    unit_a = guidance_batch * tokens.audio * d_a * ACT_BYTES
    kept_v = (12 + 1 + 0.5) * unit_v + unit_v  # modulation, RoPE, cross RoPE, residual
    kept_a = (12 + 1 + 0.5) * unit_a + unit_a
    peak = max(kept_v + 9 * unit_v + kept_a, kept_a + 9 * unit_a + kept_v)
    caption = t["caption_channels"]
    context = guidance_batch * tokens.text * (d_v + d_a + 2 * caption) * ACT_BYTES
    scores = 0
    if materialize_scores:
        scores = attention_scores_bytes(guidance_batch, t["num_attention_heads"], tokens.video, tokens.video)
    return int(peak + context + scores)


@dataclass(frozen=True)
class GemmaShape:
    """Gemma's text tower dimensions, read from header shapes (no config needed)."""

    layers: int
    hidden: int
    q_dim: int
    kv_dim: int
    intermediate: int
    heads: int

    @classmethod
    def from_tensors(cls, tensors: dict[str, TensorInfo], prefix: str) -> GemmaShape:
        """Dimensions of the tower whose layers are ``{prefix}layers.N.`` (head_dim read from q_norm)."""
        layers = 1 + max(
            int(n[len(prefix) + 7 :].split(".", 1)[0]) for n in tensors if n.startswith(prefix + "layers.")
        )
        first = prefix + "layers.0."
        q_out, hidden = tensors[first + "self_attn.q_proj.weight"].shape
        kv_out = tensors[first + "self_attn.k_proj.weight"].shape[0]
        intermediate = tensors[first + "mlp.gate_proj.weight"].shape[0]
        head_dim = tensors[first + "self_attn.q_norm.weight"].shape[0]
        return cls(layers, hidden, q_out, kv_out, intermediate, q_out // head_dim)

    def hidden_states_bytes(self, prompts: int) -> int:
        """The hidden states of every layer plus the embeddings (layers + 1), kept for the feature extractor."""
        return (self.layers + 1) * prompts * TEXT_CONTEXT_TOKENS * self.hidden * ACT_BYTES


def gemma_activation_bytes(gemma: GemmaShape, prompts: int, materialize_scores: bool) -> int:
    """Gemma over 1024 tokens, all prompts in one batch: kept hidden states + one layer's working set.

    The 49 kept hidden states dominate: 49 x 1024 x 3840 x 2 bytes = 0.36 GiB per prompt. One layer holds
    residual + normed (2 x hidden), q/k/v and the attention output, and the MLP's gate, up and product
    (3 x intermediate). The official pipeline's Gemma peak (22.9 GiB measured, 22.7 GiB of weights incl.
    the vision tower) is *below* what two prompts' kept hidden states imply; we keep the structural count.
    """
    per_token = 2 * gemma.hidden + 2 * gemma.q_dim + 2 * gemma.kv_dim + 3 * gemma.intermediate
    layer = prompts * TEXT_CONTEXT_TOKENS * per_token * ACT_BYTES
    if materialize_scores:
        layer += attention_scores_bytes(prompts, gemma.heads, TEXT_CONTEXT_TOKENS, TEXT_CONTEXT_TOKENS)
    return gemma.hidden_states_bytes(prompts) + layer


def embeddings_activation_bytes(gemma: GemmaShape, prompts: int, connector_width: int) -> int:
    """Embeddings processor, one prompt at a time: all prompts' hidden states + one prompt's extraction.

    The feature extractor stacks the 49 states and normalises them (masked, centred, scaled, re-masked
    copies live together), then the 188160-wide aggregate projection. Calibration: the official pipeline
    peaks at 5.4 GiB with 2.66 GiB of weights and two prompts kept (0.72 GiB), leaving 2.0 GiB = 5.6 copies
    of one prompt's 0.36 GiB; we count 6 (5.6 GiB predicted, +4 %). Plus each prompt's two connector
    outputs (video, audio: 1024 x 3840, kept for the transformer) and a working copy of each.
    """
    one = gemma.hidden_states_bytes(1)
    connectors = prompts * 2 * TEXT_CONTEXT_TOKENS * connector_width * ACT_BYTES * 2
    return int(gemma.hidden_states_bytes(prompts) + _EMBED_WORK_COPIES * one + connectors)


@dataclass(frozen=True)
class DecoderLevel:
    """One resolution level of the video VAE decoder: channels, and the tensor's frames x height x width."""

    channels: int
    frames: int
    height: int
    width: int
    res_convs: int  # 3x3x3 convs at this level (2 per ResNet layer)
    up_convs_to: int  # output channels of the depth-to-space conv leaving this level (0: none)

    @property
    def voxels(self) -> int:
        return self.frames * self.height * self.width


def video_decoder_levels(vae: dict[str, Any], lt: int, lh: int, lw: int) -> list[DecoderLevel]:
    """Walk ``decoder_blocks`` as ltx_core's VideoDecoder builds them (reversed; start at base x 8 channels).

    ``compress_all``/``compress_time``/``compress_space`` upsample by 2 on their axes (time: 2t-1, the first
    frame dropped) and divide channels by ``multiplier``; ``res_x`` keeps the shape.
    """
    channels = vae.get("decoder_base_channels", 128) * 8
    t, h, w = lt, lh, lw
    levels: list[DecoderLevel] = []
    res_convs = 0
    for name, params in reversed(vae["decoder_blocks"]):
        params = {"num_layers": params} if isinstance(params, int) else params
        if name.startswith("res_x"):
            res_convs += 2 * params["num_layers"]
            continue
        stride = {"compress_all": (2, 2, 2), "compress_time": (2, 1, 1), "compress_space": (1, 2, 2)}[name]
        levels.append(DecoderLevel(channels, t, h, w, res_convs, math.prod(stride) * channels // params["multiplier"]))
        channels //= params["multiplier"]
        t = 2 * t - 1 if stride[0] == 2 else t
        h, w = h * stride[1], w * stride[2]
        res_convs = 0
    levels.append(DecoderLevel(channels, t, h, w, res_convs, 0))
    return levels


def video_decode_tile_bytes(vae: dict[str, Any], lt: int, lh: int, lw: int) -> int:
    """Working set of decoding one latent tile (lt x lh x lw) in one forward.

    The largest level tensor (for LTX-2: 128 channels at full frame rate, 1/4 resolution) times a
    calibrated 7.5 live copies (ResNet input, normed, conv output, depth-to-space rearranged copy + its
    residual, conv3d workspaces), plus the RGB output and its uint8-conversion temporaries (3 copies).
    Calibration: W1 decoded untiled peaks at 2.8 GiB with 0.98 GiB of decoder weights (docs/benchmarks.md,
    baseline: decode_video+mux 2.77 GiB), i.e.
    1.82 GiB of activations; the largest level is 229 MB, so 7.5 copies + output give 1.84 GiB.
    """
    levels = video_decoder_levels(vae, lt, lh, lw)
    largest = max(lv.channels * lv.voxels for lv in levels) * ACT_BYTES
    last = levels[-1]
    patch = vae.get("patch_size", 4)
    rgb = vae.get("out_channels", 3) * last.voxels * patch * patch * ACT_BYTES
    return int(_VAE_LEVEL_COPIES * largest + 3 * rgb)


def decoded_frames_bytes(num_frames: int, height: int, width: int) -> int:
    """The decoded video as uint8 RGB frames in host memory (held until muxing)."""
    return num_frames * height * width * 3


def tiled_group_buffers_bytes(group_frames: int, height: int, width: int) -> int:
    """ltx_core's ``tiled_decode`` blending buffers: this and the previous temporal group's output and
    weight tensors (4 x 3 channels, full frame), plus the normalised chunk it yields (1 more)."""
    return 5 * 3 * group_frames * height * width * ACT_BYTES


def audio_decode_bytes(config: dict[str, Any], audio_latent_frames: int) -> int:
    """Audio VAE decoder + vocoder working set for one clip.

    Largest level of either network (audio decoder: ``ch`` channels at 4x latent frames x 64 mel bins;
    vocoder: channels x samples after each upsampling) times a calibrated 22 copies. Calibration: the
    official pipeline's audio decode + vocoder peaks at 0.3 GiB with 0.16 GiB of weights at W1 (101 latent
    frames); the largest level there is 3.3 M elements, and 22 BF16 copies give 0.135 GiB. At this small
    size the figure also absorbs FP32 paths and the vocoder's stacked resblock outputs.
    """
    ddconfig = config["audio_vae"]["model"]["params"]["ddconfig"]
    mel_frames = audio_latent_frames * _AUDIO_LATENT_DOWNSAMPLE
    decoder_elems = ddconfig["ch"] * mel_frames * ddconfig["mel_bins"]
    voc = config["vocoder"]
    channels, length, vocoder_elems = voc["upsample_initial_channel"], mel_frames, 0
    for rate in voc["upsample_rates"]:
        channels, length = channels // 2, length * rate
        vocoder_elems = max(vocoder_elems, channels * length)
    return int(_AUDIO_LEVEL_COPIES * max(decoder_elems, vocoder_elems) * ACT_BYTES)
