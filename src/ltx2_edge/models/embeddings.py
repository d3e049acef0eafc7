"""LTX-2's embeddings processor (feature extractor V1 + video and audio connectors), sized from the configs.

ltx-core's ``EmbeddingsProcessorConfigurator`` sizes the feature extractor for Gemma 3 12B whatever the
checkpoint says, so it cannot build a smaller model. This module builds the same ltx-core classes
(``FeatureExtractorV1``, ``Embeddings1DConnector`` through its two configurators, ``EmbeddingsProcessor``) from
the checkpoint's ``transformer`` config and the Gemma text config, on ``meta``, and loads them with the official
key names (``EMBEDDINGS_PROCESSOR_KEY_OPS``) through ``weights.load_into``: only the processor's tensors are read.

It never re-implements the model (the forward is ltx-core's) and supports only the LTX-2 19B layout (feature
extractor V1): a V2 (22B) checkpoint is refused, not half-loaded. Every tensor, the connectors'
``learnable_registers`` included (ltx-core creates them in bfloat16), ends up in the requested dtype, as the
official loader casts the whole state dict.
"""

from __future__ import annotations

from pathlib import Path

import torch
from ltx_core.text_encoders.gemma.embeddings_connector import (
    AudioEmbeddings1DConnectorConfigurator,
    Embeddings1DConnectorConfigurator,
)
from ltx_core.text_encoders.gemma.embeddings_processor import EmbeddingsProcessor
from ltx_core.text_encoders.gemma.encoders.encoder_configurator import EMBEDDINGS_PROCESSOR_KEY_OPS
from ltx_core.text_encoders.gemma.feature_extractor import FeatureExtractorV1

from ltx2_edge.checkpoint.header import read_config, read_header
from ltx2_edge.checkpoint.names import AGGREGATE_EMBED_WEIGHT
from ltx2_edge.errors import CheckpointError
from ltx2_edge.models.weights import load_into, require_materialized

# Keys whose presence marks ltx-core's FeatureExtractorV2 (the 22B models): not this project's model.
_V2_CONFIG_KEYS = (
    "caption_proj_before_connector",
    "caption_projection_first_linear",
    "caption_proj_input_norm",
    "caption_projection_second_linear",
)


def build_embeddings_processor(ltx_config: dict, gemma_text_config: dict) -> EmbeddingsProcessor:
    """ltx-core's ``EmbeddingsProcessor`` on ``meta`` for the checkpoint ``ltx_config`` and Gemma ``text_config``.

    The feature extractor flattens all ``num_hidden_layers + 1`` hidden states into
    ``Linear(hidden * (layers + 1), hidden, bias=False)`` (as ltx-core's ``_create_feature_extractor``: V1 projects
    to Gemma's width, which the connectors must share). Raises ``CheckpointError`` for a V2 config or widths
    that disagree.
    """
    transformer = ltx_config.get("transformer")
    if not isinstance(transformer, dict):
        raise CheckpointError("the checkpoint config has no 'transformer' section: is this an LTX-2 checkpoint?")
    v2 = [k for k in _V2_CONFIG_KEYS if k in transformer]
    if v2:
        raise CheckpointError(
            f"the checkpoint uses feature extractor V2 ({v2[0]} in its config, an LTX-2 22B layout); "
            "ltx2-edge supports LTX-2 19B checkpoints only"
        )
    hidden = int(gemma_text_config["hidden_size"])
    layers = int(gemma_text_config["num_hidden_layers"])
    with torch.device("meta"):
        video = Embeddings1DConnectorConfigurator.from_config(ltx_config)
        audio = AudioEmbeddings1DConnectorConfigurator.from_config(ltx_config)
        aggregate = torch.nn.Linear(hidden * (layers + 1), hidden, bias=False)
        processor = EmbeddingsProcessor(
            feature_extractor=FeatureExtractorV1(aggregate_embed=aggregate, is_av=True),
            video_connector=video,
            audio_connector=audio,
        )
    for name, connector in (("video", video), ("audio", audio)):
        if connector.inner_dim != hidden:
            raise CheckpointError(
                f"the {name} connector is {connector.inner_dim} wide but Gemma's hidden size is {hidden}: "
                "the checkpoint and the Gemma folder do not belong together"
            )
    return processor


def gemma_shape_from_checkpoint(checkpoint_path: Path) -> dict:
    """``{"hidden_size", "num_hidden_layers"}`` of the Gemma the checkpoint's feature extractor was made for."""
    header = read_header(checkpoint_path)
    info = header.tensors.get(AGGREGATE_EMBED_WEIGHT)
    if info is None or len(info.shape) != 2 or info.shape[1] % info.shape[0] != 0:
        raise CheckpointError(
            f"{checkpoint_path} has no usable {AGGREGATE_EMBED_WEIGHT!r}: not an LTX-2 19B checkpoint with a text "
            "projection"
        )
    hidden, flat = info.shape
    return {"hidden_size": hidden, "num_hidden_layers": flat // hidden - 1}


def load_embeddings_processor(
    checkpoint_path: Path,
    device: torch.device | str,
    dtype: torch.dtype,
    gemma_text_config: dict | None = None,
) -> EmbeddingsProcessor:
    """Build and load the embeddings processor from the official LTX-2 checkpoint, in eval mode.

    ``gemma_text_config`` sizes the feature extractor; without it the size is read from the checkpoint's
    header (the aggregate projection's shape). Reads only the processor's tensors.
    """
    path = Path(checkpoint_path)
    text_config = gemma_text_config if gemma_text_config is not None else gemma_shape_from_checkpoint(path)
    processor = build_embeddings_processor(read_config(path), text_config)
    load_into(processor, [path], EMBEDDINGS_PROCESSOR_KEY_OPS.apply_to_key, device, dtype)
    require_materialized(processor, f"embeddings processor from {path}")
    return processor.eval()
