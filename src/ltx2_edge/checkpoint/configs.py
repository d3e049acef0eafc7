"""Model configurations for generated checkpoints: ``tiny`` (CPU tests, the demo) and ``full`` (the 19B shape).

``ltx2_config(size)`` is exactly what the official single-file checkpoint stores as JSON under the safetensors
metadata key ``"config"``; ``gemma_config(size)`` is the Gemma 3 folder's ``config.json``. The full-size values
are LTX-2 19B's (48 blocks, 4096-wide video stream, 2048-wide audio stream, Gemma 3 12B); tiny keeps every
structural feature (audio<->video cross-attention, connectors with learnable registers, 8x/32x VAE
compression, 128 latent channels, 24 kHz vocoder) at toy widths.
"""

from __future__ import annotations

import copy
from typing import Any, Literal

Size = Literal["tiny", "full"]
SIZES: tuple[str, ...] = ("tiny", "full")


_TRANSFORMER_FULL: dict[str, Any] = {
    "_class_name": "AVTransformer3DModel",
    "activation_fn": "gelu-approximate",
    "attention_bias": True,
    "attention_head_dim": 128,
    "attention_type": "default",
    "caption_channels": 3840,
    "cross_attention_dim": 4096,
    "cross_attention_norm": True,
    "double_self_attention": False,
    "dropout": 0.0,
    "in_channels": 128,
    "norm_elementwise_affine": False,
    "norm_eps": 1e-06,
    "norm_num_groups": 32,
    "num_attention_heads": 32,
    "num_embeds_ada_norm": 1000,
    "num_layers": 48,
    "num_vector_embeds": None,
    "only_cross_attention": False,
    "out_channels": 128,
    "upcast_attention": False,
    "use_linear_projection": False,
    "qk_norm": "rms_norm",
    "standardization_norm": "rms_norm",
    "positional_embedding_type": "rope",
    "positional_embedding_theta": 10000.0,
    "positional_embedding_max_pos": [20, 2048, 2048],
    "timestep_scale_multiplier": 1000,
    "av_ca_timestep_scale_multiplier": 1000,
    "causal_temporal_positioning": True,
    "audio_num_attention_heads": 32,
    "audio_attention_head_dim": 64,
    "audio_in_channels": 128,
    "audio_out_channels": 128,
    "audio_cross_attention_dim": 2048,
    "audio_positional_embedding_max_pos": [20],
    "use_audio_video_cross_attention": True,
    "share_ff": False,
    "av_cross_ada_norm": True,
    "use_embeddings_connector": True,
    "connector_attention_head_dim": 128,
    "connector_num_attention_heads": 30,
    "connector_num_layers": 2,
    "connector_positional_embedding_max_pos": [4096],
    "connector_num_learnable_registers": 128,
    "use_middle_indices_grid": True,
    "rope_type": "split",
    "frequencies_precision": "float64",
}

_TRANSFORMER_TINY_DELTA: dict[str, Any] = {
    "attention_head_dim": 16,
    "num_attention_heads": 2,
    "cross_attention_dim": 32,
    "caption_channels": 32,  # == tiny Gemma hidden size == connector width
    "num_layers": 2,
    "audio_num_attention_heads": 2,
    "audio_attention_head_dim": 8,
    "audio_cross_attention_dim": 16,
    "connector_attention_head_dim": 16,
    "connector_num_attention_heads": 2,
    "connector_num_layers": 1,
}

_VAE_FULL: dict[str, Any] = {
    "_class_name": "CausalVideoAutoencoder",
    "dims": 3,
    "in_channels": 3,
    "out_channels": 3,
    "latent_channels": 128,
    "encoder_blocks": [
        ["res_x", {"num_layers": 4}],
        ["compress_space_res", {"multiplier": 2}],
        ["res_x", {"num_layers": 6}],
        ["compress_time_res", {"multiplier": 2}],
        ["res_x", {"num_layers": 6}],
        ["compress_all_res", {"multiplier": 2}],
        ["res_x", {"num_layers": 2}],
        ["compress_all_res", {"multiplier": 2}],
        ["res_x", {"num_layers": 2}],
    ],
    "decoder_blocks": [
        ["res_x", {"num_layers": 5, "inject_noise": False}],
        ["compress_all", {"residual": True, "multiplier": 2}],
        ["res_x", {"num_layers": 5, "inject_noise": False}],
        ["compress_all", {"residual": True, "multiplier": 2}],
        ["res_x", {"num_layers": 5, "inject_noise": False}],
        ["compress_all", {"residual": True, "multiplier": 2}],
        ["res_x", {"num_layers": 5, "inject_noise": False}],
    ],
    "scaling_factor": 1.0,
    "norm_layer": "pixel_norm",
    "patch_size": 4,
    "latent_log_var": "uniform",
    "use_quant_conv": False,
    "causal_decoder": False,
    "timestep_conditioning": False,
    "normalize_latent_channels": False,
    "encoder_base_channels": 128,
    "decoder_base_channels": 128,
    "spatial_padding_mode": "reflect",
}

_VAE_TINY_DELTA: dict[str, Any] = {
    # The encoder's base width is fixed at 128 by ltx-core (encoder_base_channels is not read), so tiny keeps
    # only the three 2x compressions needed for the 8x/32x latent grid, at multiplier 1.
    "encoder_blocks": [
        ["compress_all_res", {"multiplier": 1}],
        ["compress_all_res", {"multiplier": 1}],
        ["compress_all_res", {"multiplier": 1}],
    ],
    "decoder_blocks": [
        ["res_x", {"num_layers": 1, "inject_noise": False}],
        ["compress_all", {"residual": True, "multiplier": 2}],
        ["compress_all", {"residual": True, "multiplier": 2}],
        ["compress_all", {"residual": True, "multiplier": 2}],
        ["res_x", {"num_layers": 1, "inject_noise": False}],
    ],
    "encoder_base_channels": 8,
    "decoder_base_channels": 8,
}

_AUDIO_VAE_FULL: dict[str, Any] = {
    "model": {
        "params": {
            "ddconfig": {
                "double_z": True,
                "mel_bins": 64,
                "z_channels": 8,
                "resolution": 256,
                "downsample_time": False,
                "in_channels": 2,
                "out_ch": 2,
                "ch": 128,
                "ch_mult": [1, 2, 4],
                "num_res_blocks": 2,
                "attn_resolutions": [],
                "dropout": 0.0,
                "mid_block_add_attention": False,
                "norm_type": "pixel",
                "causality_axis": "height",
            },
            "sampling_rate": 16000,
        }
    },
    "preprocessing": {
        "stft": {"filter_length": 1024, "hop_length": 160, "win_length": 1024, "causal": True},
        "mel": {"n_mel_channels": 64, "mel_fmin": 0, "mel_fmax": 8000},
    },
}

_VOCODER_FULL: dict[str, Any] = {
    "resblock": "1",
    "stereo": True,
    "upsample_initial_channel": 1024,
    "upsample_rates": [6, 5, 2, 2, 2],
    "upsample_kernel_sizes": [16, 15, 8, 4, 4],
    "resblock_kernel_sizes": [3, 7, 11],
    "resblock_dilation_sizes": [[1, 3, 5], [1, 3, 5], [1, 3, 5]],
    "output_sampling_rate": 24000,
}


def ltx2_config(size: Size) -> dict[str, Any]:
    """The checkpoint's ``config`` metadata for ``size`` (a fresh copy each call)."""
    if size not in SIZES:
        raise ValueError(f"size={size!r} is not allowed: one of {', '.join(SIZES)}")
    transformer = copy.deepcopy(_TRANSFORMER_FULL)
    vae = copy.deepcopy(_VAE_FULL)
    audio_vae = copy.deepcopy(_AUDIO_VAE_FULL)
    vocoder = copy.deepcopy(_VOCODER_FULL)
    if size == "tiny":
        transformer.update(copy.deepcopy(_TRANSFORMER_TINY_DELTA))
        vae.update(copy.deepcopy(_VAE_TINY_DELTA))
        # ltx-core sizes the audio latent statistics by ``ch`` (128 = 8 latent channels x 16 mel bins), so ``ch``
        # stays 128; tiny shrinks depth instead: one resblock per level, no channel growth.
        audio_vae["model"]["params"]["ddconfig"].update(ch_mult=[1, 1, 1], num_res_blocks=1)
        # 64 / 2**5 upsampling stages = 2 channels at the last stage (16 left it with 0-channel convolutions).
        vocoder["upsample_initial_channel"] = 64
    return {"transformer": transformer, "vae": vae, "audio_vae": audio_vae, "vocoder": vocoder}


def gemma_config(size: Size) -> dict[str, Any]:
    """The Gemma 3 folder's ``config.json`` for ``size``: Gemma3ForConditionalGeneration, text + vision."""
    if size not in SIZES:
        raise ValueError(f"size={size!r} is not allowed: one of {', '.join(SIZES)}")
    text: dict[str, Any] = {
        "attention_bias": False,
        "attention_dropout": 0.0,
        "attn_logit_softcapping": None,
        "cache_implementation": "hybrid",
        "final_logit_softcapping": None,
        "head_dim": 256,
        "hidden_activation": "gelu_pytorch_tanh",
        "hidden_size": 3840,
        "initializer_range": 0.02,
        "intermediate_size": 15360,
        "max_position_embeddings": 131072,
        "model_type": "gemma3_text",
        "num_attention_heads": 16,
        "num_hidden_layers": 48,
        "num_key_value_heads": 8,
        "query_pre_attn_scalar": 256,
        "rms_norm_eps": 1e-06,
        "rope_local_base_freq": 10000.0,
        "rope_scaling": {"factor": 8.0, "rope_type": "linear"},
        "rope_theta": 1000000.0,
        "sliding_window": 1024,
        "sliding_window_pattern": 6,
        "use_cache": True,
        "vocab_size": 262208,
    }
    vision: dict[str, Any] = {
        "attention_dropout": 0.0,
        "hidden_act": "gelu_pytorch_tanh",
        "hidden_size": 1152,
        "image_size": 896,
        "intermediate_size": 4304,
        "layer_norm_eps": 1e-06,
        "model_type": "siglip_vision_model",
        "num_attention_heads": 16,
        "num_channels": 3,
        "num_hidden_layers": 27,
        "patch_size": 14,
        "vision_use_head": False,
    }
    mm_tokens_per_image = 256
    if size == "tiny":
        text.update(
            hidden_size=32,
            intermediate_size=64,
            num_attention_heads=2,
            num_key_value_heads=1,
            head_dim=16,
            query_pre_attn_scalar=16,
            num_hidden_layers=3,
            sliding_window=64,
            sliding_window_pattern=2,
            vocab_size=4096,
        )
        vision.update(
            hidden_size=16,
            intermediate_size=32,
            num_attention_heads=2,
            num_hidden_layers=1,
            image_size=56,
            patch_size=14,
        )
        mm_tokens_per_image = 4
    return {
        "architectures": ["Gemma3ForConditionalGeneration"],
        "boi_token_index": 255999 if size == "full" else 4093,
        "eoi_token_index": 256000 if size == "full" else 4094,
        "eos_token_id": [1, 106],
        "image_token_index": 262144 if size == "full" else 4095,
        "initializer_range": 0.02,
        "mm_tokens_per_image": mm_tokens_per_image,
        "model_type": "gemma3",
        "text_config": text,
        "torch_dtype": "bfloat16",
        "transformers_version": "4.57.6",
        "vision_config": vision,
    }
