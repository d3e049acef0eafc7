"""The official LTX-2 19B and Gemma 3 file names and tensor-name prefixes, written once.

Every module that finds a component by name (the planner, the loaders, the block sources, LoRA fusing, the
upsampler check) imports its prefix from here, so a name cannot drift between the part that plans a stage and the
part that loads it. Pure strings and numbers: this module never imports torch and never opens a file.
"""

from __future__ import annotations

# The single-file checkpoint (``ltx-2-19b-*.safetensors``): the transformer under this prefix.
TRANSFORMER_PREFIX = "model.diffusion_model."
TRANSFORMER_BLOCKS = TRANSFORMER_PREFIX + "transformer_blocks."  # the 48 BasicAVTransformerBlocks
LTX2_BLOCK_TENSOR = TRANSFORMER_BLOCKS + "{i}.{name}"  # one block's tensor, as the block sources read it
CONNECTORS = (TRANSFORMER_PREFIX + "video_embeddings_connector.", TRANSFORMER_PREFIX + "audio_embeddings_connector.")
TEXT_PROJECTION = "text_embedding_projection."
EMBEDDINGS = (TEXT_PROJECTION, *CONNECTORS)  # Gemma features -> the transformer's video and audio contexts
AGGREGATE_EMBED_WEIGHT = TEXT_PROJECTION + "aggregate_embed.weight"
# The video VAE, the audio VAE and the vocoder (each decoder reads the shared per-channel statistics).
VIDEO_DECODER = ("vae.decoder.", "vae.per_channel_statistics.")
VIDEO_ENCODER = ("vae.encoder.", "vae.per_channel_statistics.")
AUDIO_DECODER = ("audio_vae.decoder.", "audio_vae.per_channel_statistics.", "vocoder.")
# What LTX-2 (19B) files carry under metadata "model_version".
MODEL_VERSION = "2.0.0"
# The tokenizer pads/truncates every prompt to this many tokens (the text encoder's sequence length).
TEXT_CONTEXT_TOKENS = 1024

# The Gemma 3 folder (``model-0000k-of-0000N.safetensors``): the language model under this prefix.
GEMMA_PREFIX = "language_model.model."
GEMMA_LAYERS = GEMMA_PREFIX + "layers."
GEMMA_LAYER_TENSOR = GEMMA_LAYERS + "{i}.{name}"

# LoRA files name the transformer's modules ``diffusion_model.<module>`` (ltx-pipelines drops the prefix).
LORA_PREFIX = "diffusion_model."

# The official spatial latent upsampler x2, a file of its own beside the checkpoint.
UPSAMPLER_FILE = "ltx-2-spatial-upscaler-x2-1.0.safetensors"
