"""Builds ltx-core's modules from the official single-file checkpoint: on ``meta`` first, then weights assigned.

Each loader names the file prefix its component lives under (the official names, as ltx-core's SDOps map them),
builds the module with ltx-core's own configurator from the checkpoint's config metadata, and assigns the
tensors read one at a time from the file (``models.weights.load_into``), cast to the run's dtype like the
official builder does. Nothing here decides *whether* to load: the pipeline asks, under the plan.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from ltx_core.model.audio_vae import AudioDecoder, AudioDecoderConfigurator, Vocoder, VocoderConfigurator
from ltx_core.model.transformer import LTXModelConfigurator, X0Model
from ltx_core.model.upsampler import LatentUpsampler, LatentUpsamplerConfigurator
from ltx_core.model.video_vae import VideoDecoder, VideoDecoderConfigurator, VideoEncoder, VideoEncoderConfigurator

from ltx2_edge.checkpoint.header import read_config
from ltx2_edge.checkpoint.names import CONNECTORS, TRANSFORMER_PREFIX
from ltx2_edge.checkpoint.names import VIDEO_ENCODER as VIDEO_ENCODER_PREFIXES
from ltx2_edge.models.quantized_loading import load_quantized
from ltx2_edge.models.weights import WeightTransform, load_into, require_materialized
from ltx2_edge.quant.policy import QuantPolicy


def _prefix_map(*pairs: tuple[str, str], exclude: tuple[str, ...] = ()) -> Callable[[str], str | None]:
    def key_map(name: str) -> str | None:
        if name.startswith(exclude):
            return None
        for file_prefix, module_prefix in pairs:
            if name.startswith(file_prefix):
                return module_prefix + name[len(file_prefix) :]
        return None

    return key_map


def _build(configurator: type, config: dict) -> torch.nn.Module:
    with torch.device("meta"):
        return configurator.from_config(config)


def load_transformer(
    checkpoint: Path,
    device: torch.device,
    dtype: torch.dtype,
    policy: QuantPolicy | None = None,
    transform: WeightTransform | None = None,
) -> X0Model:
    """The 48-block audio-video transformer wrapped in ltx-core's ``X0Model`` (predicts denoised latents).

    With an 8-bit ``policy`` its chosen Linears are built in 8 bits layer by layer (``quantized_loading``);
    the report of what was quantized is kept on the returned model as ``quant_report``. ``transform`` sees each
    weight as read, by ``LTXModel`` name, before any cast or quantization (``models.lora.LoraFuser``).
    """
    model = _build(LTXModelConfigurator, read_config(checkpoint))
    key_map = transformer_key_map()
    report = None
    if policy is None or policy.precision == "bf16":
        load_into(model, [checkpoint], key_map, device, dtype, transform=transform)
    else:
        report = load_quantized(model, [checkpoint], key_map, torch.device(device), dtype, policy, transform=transform)
    require_materialized(model, "transformer")
    wrapped = X0Model(model).eval()
    wrapped.quant_report = report
    return wrapped


def transformer_key_map() -> Callable[[str], str | None]:
    """Official file name -> ``LTXModel`` name (the text connectors under the same prefix excluded)."""
    # The connectors live under the transformer's prefix in the official file but belong to the text stage.
    return _prefix_map((TRANSFORMER_PREFIX, ""), exclude=CONNECTORS)


def build_transformer_meta(config: dict) -> X0Model:
    """The transformer on the meta device (for planning, streaming layouts and quantization policies)."""
    return X0Model(_build(LTXModelConfigurator, config))


def load_video_decoder(checkpoint: Path, device: torch.device, dtype: torch.dtype) -> VideoDecoder:
    """The video VAE decoder with its per-channel latent statistics."""
    model = _build(VideoDecoderConfigurator, read_config(checkpoint))
    key_map = _prefix_map(("vae.decoder.", ""), ("vae.per_channel_statistics.", "per_channel_statistics."))
    load_into(model, [checkpoint], key_map, device, dtype)
    require_materialized(model, "video decoder")
    return model.eval()


def load_video_encoder(checkpoint: Path, device: torch.device, dtype: torch.dtype) -> VideoEncoder:
    """The video VAE encoder (image conditioning, latent upsampling) with the same per-channel latent statistics
    as the decoder. Its file tensors are those under ``VIDEO_ENCODER_PREFIXES`` (what the planner sums)."""
    model = _build(VideoEncoderConfigurator, read_config(checkpoint))
    encoder, statistics = VIDEO_ENCODER_PREFIXES
    key_map = _prefix_map((encoder, ""), (statistics, "per_channel_statistics."))
    load_into(model, [checkpoint], key_map, device, dtype)
    require_materialized(model, "video encoder")
    return model.eval()


def load_audio_decoder(checkpoint: Path, device: torch.device, dtype: torch.dtype) -> AudioDecoder:
    """The audio VAE decoder (latent -> mel spectrogram)."""
    model = _build(AudioDecoderConfigurator, read_config(checkpoint))
    key_map = _prefix_map(("audio_vae.decoder.", ""), ("audio_vae.per_channel_statistics.", "per_channel_statistics."))
    load_into(model, [checkpoint], key_map, device, dtype)
    require_materialized(model, "audio decoder")
    return model.eval()


def load_vocoder(checkpoint: Path, device: torch.device, dtype: torch.dtype) -> Vocoder:
    """The vocoder (mel -> 24 kHz waveform). Only one ``vocoder.`` prefix is stripped, as ltx-core does."""
    model = _build(VocoderConfigurator, read_config(checkpoint))
    load_into(model, [checkpoint], _prefix_map(("vocoder.", "")), device, dtype)
    require_materialized(model, "vocoder")
    return model.eval()


def load_spatial_upsampler(path: Path, device: torch.device, dtype: torch.dtype) -> LatentUpsampler:
    """The latent upsampler from its own file (``ltx-2-spatial-upscaler-x2-1.0.safetensors``): tensors under the
    module's own names, config in the file's metadata, as ltx-pipelines' ``ModelLedger.spatial_upsampler`` reads
    it. Check the file first with ``checkpoint.upsampler_file.inspect_upsampler``."""
    model = _build(LatentUpsamplerConfigurator, read_config(path))
    load_into(model, [path], _prefix_map(("", "")), device, dtype)
    require_materialized(model, "spatial upsampler")
    return model.eval()
