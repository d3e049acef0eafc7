"""What an official LTX-2 19B checkpoint and a Gemma 3 folder hold: every tensor's file name, shape and init role.

The layout is never written by hand: ltx-core's own configurators (and transformers' Gemma 3 class) build each
component on the ``meta`` device from the config, and their state-dict keys are mapped back to the names the
official files use. Every mapped name is then fed through ltx-core's own ``SDOps`` (the ones its loaders use)
and must come back as the module's key, so this layout cannot drift from what ltx-core loads.
This module never allocates weight memory and never reads or writes a file.

Roles tell ``init_scheme`` how torch would initialise the tensor (see ``ROLES``).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

import ltx2_edge  # noqa: F401  (installs the torchaudio placeholder before ltx_core loads)
from ltx2_edge.errors import CheckpointError

Shape = tuple[int, ...]

# Role -> how torch initialises it (the rule itself lives in init_scheme.py).
ROLES: dict[str, str] = {
    "weight": "Linear/Conv/ConvTranspose weight: kaiming-uniform, U(-1/sqrt(fan_in), 1/sqrt(fan_in))",
    "bias": "Linear/Conv bias: U(-1/sqrt(fan_in), 1/sqrt(fan_in)) with the fan-in of its weight",
    "matmul_weight": "an (in, out) matrix used as x @ W (Gemma 3's mm_input_projection_weight): U(+-1/sqrt(in))",
    "norm_weight": "LayerNorm/GroupNorm/RMSNorm scale: 1",
    "norm_bias": "LayerNorm/GroupNorm shift: 0",
    "gemma_norm_weight": "Gemma RMSNorm w, applied as x * (1 + w): 0",
    "embedding": "embedding table: N(0, 0.02)",
    "scale_shift_table": "adaLN table: N(0, 1) / sqrt(dim)",
    "learnable_registers": "connector registers: U(-1, 1), as ltx-core creates them",
    "latent_mean": "VAE per-channel statistics, mean-of-means: 0",
    "latent_std": "VAE per-channel statistics, std-of-means: 1",
}

LTX23_UNSUPPORTED = (
    "LTX-2.3 (22B) checkpoints are not supported yet; use an LTX-2 19B file such as ltx-2-19b-dev.safetensors"
)

# The feature extractor's input width when no Gemma config is given: Gemma 3 12B, as ltx-core hard-codes it.
_GEMMA_12B_TEXT = {"hidden_size": 3840, "num_hidden_layers": 48}


@dataclass(frozen=True)
class _Component:
    """One ltx-core module stored in the checkpoint, with the names its loader reads."""

    name: str
    build: Callable[[], torch.nn.Module]
    sd_ops: Any  # ltx_core.loader.sd_ops.SDOps
    to_file: Callable[[str], str]  # module key -> official file name


def _vae_names(prefix: str, part: str) -> Callable[[str], str]:
    def to_file(key: str) -> str:
        # Both halves of a VAE share one set of latent statistics, stored once beside them.
        if key.startswith("per_channel_statistics."):
            return prefix + key
        return prefix + part + key

    return to_file


def _prefix(p: str) -> Callable[[str], str]:
    return lambda key: p + key


def _embeddings_processor_names(key: str) -> str:
    for module_prefix, file_prefix in (
        ("feature_extractor.", "text_embedding_projection."),
        ("video_connector.", "model.diffusion_model.video_embeddings_connector."),
        ("audio_connector.", "model.diffusion_model.audio_embeddings_connector."),
    ):
        if key.startswith(module_prefix):
            return file_prefix + key[len(module_prefix) :]
    raise RuntimeError(f"embeddings processor key {key!r} has no official name: ltx-core changed, update layout.py")


def meta_embeddings_processor(config: dict, gemma_text_config: dict | None = None) -> torch.nn.Module:
    """ltx-core's ``EmbeddingsProcessor`` on meta, its feature extractor sized from the Gemma text config.

    ltx-core's ``EmbeddingsProcessorConfigurator`` hard-codes Gemma 3 12B (3840 x 49 inputs); this builds the
    same classes for any Gemma width and depth. Without ``gemma_text_config`` it is exactly ltx-core's module.
    """
    from ltx_core.text_encoders.gemma.embeddings_connector import (
        AudioEmbeddings1DConnectorConfigurator,
        Embeddings1DConnectorConfigurator,
    )
    from ltx_core.text_encoders.gemma.embeddings_processor import EmbeddingsProcessor
    from ltx_core.text_encoders.gemma.feature_extractor import FeatureExtractorV1

    text = gemma_text_config or _GEMMA_12B_TEXT
    flat = text["hidden_size"] * (text["num_hidden_layers"] + 1)  # +1: the embedding layer's output
    caption = config["transformer"]["caption_channels"]
    with torch.device("meta"):
        return EmbeddingsProcessor(
            feature_extractor=FeatureExtractorV1(torch.nn.Linear(flat, caption, bias=False), is_av=True),
            video_connector=Embeddings1DConnectorConfigurator.from_config(config),
            audio_connector=AudioEmbeddings1DConnectorConfigurator.from_config(config),
        )


def _components(config: dict, gemma_text_config: dict | None) -> list[_Component]:
    from ltx_core.model.audio_vae.model_configurator import (
        AUDIO_VAE_DECODER_COMFY_KEYS_FILTER,
        AUDIO_VAE_ENCODER_COMFY_KEYS_FILTER,
        VOCODER_COMFY_KEYS_FILTER,
        AudioDecoderConfigurator,
        AudioEncoderConfigurator,
        VocoderConfigurator,
    )
    from ltx_core.model.transformer.model_configurator import LTXV_MODEL_COMFY_RENAMING_MAP, LTXModelConfigurator
    from ltx_core.model.video_vae.model_configurator import (
        VAE_DECODER_COMFY_KEYS_FILTER,
        VAE_ENCODER_COMFY_KEYS_FILTER,
        VideoDecoderConfigurator,
        VideoEncoderConfigurator,
    )
    from ltx_core.text_encoders.gemma.encoders.encoder_configurator import EMBEDDINGS_PROCESSOR_KEY_OPS

    def on_meta(configurator: Any) -> Callable[[], torch.nn.Module]:
        def build() -> torch.nn.Module:
            with torch.device("meta"):
                return configurator.from_config(config)

        return build

    return [
        _Component(
            "transformer",
            on_meta(LTXModelConfigurator),
            LTXV_MODEL_COMFY_RENAMING_MAP,
            _prefix("model.diffusion_model."),
        ),
        _Component(
            "embeddings_processor",
            lambda: meta_embeddings_processor(config, gemma_text_config),
            EMBEDDINGS_PROCESSOR_KEY_OPS,
            _embeddings_processor_names,
        ),
        _Component(
            "video_decoder",
            on_meta(VideoDecoderConfigurator),
            VAE_DECODER_COMFY_KEYS_FILTER,
            _vae_names("vae.", "decoder."),
        ),
        _Component(
            "video_encoder",
            on_meta(VideoEncoderConfigurator),
            VAE_ENCODER_COMFY_KEYS_FILTER,
            _vae_names("vae.", "encoder."),
        ),
        _Component(
            "audio_decoder",
            on_meta(AudioDecoderConfigurator),
            AUDIO_VAE_DECODER_COMFY_KEYS_FILTER,
            _vae_names("audio_vae.", "decoder."),
        ),
        _Component(
            "audio_encoder",
            on_meta(AudioEncoderConfigurator),
            AUDIO_VAE_ENCODER_COMFY_KEYS_FILTER,
            _vae_names("audio_vae.", "encoder."),
        ),
        _Component("vocoder", on_meta(VocoderConfigurator), VOCODER_COMFY_KEYS_FILTER, _prefix("vocoder.")),
    ]


def _role(module: torch.nn.Module, attr: str) -> str | None:
    """The init role of ``module.<attr>``, from the module's type (None: unknown, the caller refuses it)."""
    from ltx_core.model.audio_vae.ops import PerChannelStatistics as AudioStatistics
    from ltx_core.model.video_vae.ops import PerChannelStatistics as VideoStatistics
    from transformers.models.gemma3.modeling_gemma3 import Gemma3RMSNorm

    nn = torch.nn
    if isinstance(module, nn.Linear | nn.modules.conv._ConvNd):
        return {"weight": "weight", "bias": "bias"}.get(attr)
    if isinstance(module, Gemma3RMSNorm):
        return "gemma_norm_weight" if attr == "weight" else None
    if isinstance(module, nn.LayerNorm | nn.GroupNorm | nn.RMSNorm):
        return {"weight": "norm_weight", "bias": "norm_bias"}.get(attr)
    if isinstance(module, nn.Embedding):
        return "embedding" if attr == "weight" else None
    if isinstance(module, VideoStatistics | AudioStatistics):
        return {"mean-of-means": "latent_mean", "std-of-means": "latent_std"}.get(attr)
    if "scale_shift_table" in attr:
        return "scale_shift_table"
    if attr == "learnable_registers":
        return "learnable_registers"
    if attr == "mm_input_projection_weight":
        return "matmul_weight"
    return None


def _module_tensors(module: torch.nn.Module) -> dict[str, tuple[Shape, str]]:
    """Every state-dict entry of ``module`` (persistent buffers included) with its shape and role."""
    modules = dict(module.named_modules())
    out: dict[str, tuple[Shape, str]] = {}
    for key, tensor in module.state_dict(keep_vars=True).items():
        owner, _, attr = key.rpartition(".")
        role = _role(modules[owner], attr)
        if role is None:
            raise RuntimeError(
                f"{key} ({type(modules[owner]).__name__}.{attr}) has no init role: teach layout._role about it"
            )
        out[key] = (tuple(tensor.shape), role)
    return out


def _check_round_trip(component: str, sd_ops: Any, file_name: str, key: str) -> None:
    mapped = sd_ops.apply_to_key(file_name)
    if mapped is not None:
        mapped = sd_ops.apply_to_key_value(mapped, torch.empty(0, device="meta"))[0].new_key
    if mapped != key:
        raise RuntimeError(
            f"{component}: file name {file_name!r} loads as {mapped!r} through ltx-core's {sd_ops.name}, "
            f"not as the module key {key!r}: layout.py is out of date with ltx-core"
        )


def expected_tensors(config: dict, gemma_text_config: dict | None = None) -> dict[str, tuple[Shape, str]]:
    """Name -> (shape, role) of every tensor an LTX-2 19B single-file checkpoint holds for ``config``.

    ``config`` is the checkpoint's ``config`` metadata (``configs.ltx2_config``). ``gemma_text_config`` (the
    Gemma folder's ``text_config``) sizes the feature extractor ``text_embedding_projection.aggregate_embed``:
    [caption_channels, hidden_size * (num_hidden_layers + 1)]; left out, it is Gemma 3 12B's [3840, 188160].
    Raises ``CheckpointError`` for an LTX-2.3 (22B) config, whose text path has another layout.
    """
    if config.get("transformer", {}).get("caption_proj_before_connector", False):
        raise CheckpointError(LTX23_UNSUPPORTED)
    out: dict[str, tuple[Shape, str]] = {}
    for component in _components(config, gemma_text_config):
        for key, (shape, role) in _module_tensors(component.build()).items():
            file_name = component.to_file(key)
            _check_round_trip(component.name, component.sd_ops, file_name, key)
            previous = out.setdefault(file_name, (shape, role))
            if previous != (shape, role):  # the shared VAE statistics must agree between encoder and decoder
                raise RuntimeError(f"{file_name}: {component.name} wants {shape}, another component {previous[0]}")
    return out


def gemma_layout(gemma_config: dict) -> dict[str, tuple[Shape, str]]:
    """Name -> (shape, role) of every tensor in a Gemma 3 folder's ``model*.safetensors`` for ``gemma_config``.

    Names are the official Gemma 3 release's (``language_model.model.*``, ``vision_tower.vision_model.*``,
    ``multi_modal_projector.*``); ``lm_head`` is tied to the embedding and not stored.
    """
    from ltx_core.text_encoders.gemma.encoders.encoder_configurator import GEMMA_LLM_KEY_OPS
    from transformers import Gemma3Config, Gemma3ForConditionalGeneration

    with torch.device("meta"):
        # from_dict writes into the dict it is given (attn_implementation): hand it a copy.
        model = Gemma3ForConditionalGeneration(Gemma3Config.from_dict(copy.deepcopy(gemma_config)))
    renames = (
        ("model.language_model.", "language_model.model."),
        ("model.vision_tower.", "vision_tower."),
        ("model.multi_modal_projector.", "multi_modal_projector."),
    )
    out: dict[str, tuple[Shape, str]] = {}
    for key, (shape, role) in _module_tensors(model).items():
        if key == "lm_head.weight":
            continue
        file_name = next((new + key[len(old) :] for old, new in renames if key.startswith(old)), None)
        if file_name is None:
            raise RuntimeError(f"Gemma key {key!r} has no official name: transformers changed, update layout.py")
        # ltx-core's GemmaTextEncoder holds the HF model as `.model`, hence the extra prefix.
        _check_round_trip("gemma", GEMMA_LLM_KEY_OPS, file_name, "model." + key)
        out[file_name] = (shape, role)
    return out


def gemma_expected_tensors(gemma_config: dict) -> dict[str, Shape]:
    """Name -> shape of every tensor a Gemma 3 folder's weight shards hold (see ``gemma_layout``)."""
    return {name: shape for name, (shape, _) in gemma_layout(gemma_config).items()}
