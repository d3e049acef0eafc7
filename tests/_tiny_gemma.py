"""Tiny text-encoder fixtures in the official layouts, until ltx2_edge.checkpoint.generator makes them.

``write_tiny_gemma(dir)``: a Gemma 3 folder like Google's (config.json, two ``model-*.safetensors`` shards with
``language_model.model.*``, ``vision_tower.*`` and ``multi_modal_projector.*`` tensors in bfloat16, no
``lm_head``, an index, ``preprocessor_config.json`` and a locally trained SentencePiece tokenizer with Gemma's
special ids pad=0 eos=1 bos=2 unk=3). ``write_tiny_ltx(path)``: an LTX-2 checkpoint holding the embeddings
processor's tensors under their official names plus one transformer tensor, with the tiny ``config`` metadata.
Random weights, deterministic from the seed; a second or two on a CPU.
"""

from __future__ import annotations

import io
import json
import random
from pathlib import Path

import sentencepiece as spm
import torch
from safetensors.torch import save_file
from transformers import Gemma3Config, GemmaTokenizerFast
from transformers.models.gemma3 import Gemma3ForConditionalGeneration

from ltx2_edge.checkpoint.configs import MODEL_VERSION, gemma_config, ltx2_config
from ltx2_edge.models.embeddings import build_embeddings_processor

# HF module name prefix -> official Gemma file prefix (inverse of ltx-core's GEMMA_LLM_KEY_OPS).
_GEMMA_FILE_PREFIXES = (
    ("model.language_model.", "language_model.model."),
    ("model.vision_tower.", "vision_tower."),
    ("model.multi_modal_projector.", "multi_modal_projector."),
)
# ltx-core module prefix -> official LTX-2 file prefix (inverse of EMBEDDINGS_PROCESSOR_KEY_OPS).
_LTX_FILE_PREFIXES = (
    ("feature_extractor.aggregate_embed.", "text_embedding_projection.aggregate_embed."),
    ("video_connector.", "model.diffusion_model.video_embeddings_connector."),
    ("audio_connector.", "model.diffusion_model.audio_embeddings_connector."),
)
_WORDS = (
    "a the cat dog runs jumps over under bright dark forest city river mountain camera pans slowly quickly "
    "sunset night rain snow music plays soft loud voice says hello world light shadow red blue green word"
).split()


def _rename(name: str, prefixes: tuple[tuple[str, str], ...]) -> str | None:
    for ours, theirs in prefixes:
        if name.startswith(ours):
            return theirs + name[len(ours) :]
    return None


def _write_tokenizer(out: Path, seed: int) -> None:
    rng = random.Random(seed)
    sentences = [" ".join(rng.choice(_WORDS) for _ in range(rng.randint(3, 12))) for _ in range(2000)]
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(sentences),
        model_writer=model,
        vocab_size=400,
        model_type="bpe",
        byte_fallback=True,  # as Gemma's: any text encodes, nothing maps to <unk>
        pad_id=0,
        eos_id=1,
        bos_id=2,
        unk_id=3,
        pad_piece="<pad>",
        eos_piece="<eos>",
        bos_piece="<bos>",
        unk_piece="<unk>",
        minloglevel=2,
    )
    (out / "tokenizer.model").write_bytes(model.getvalue())
    # Writes tokenizer.json, tokenizer_config.json and special_tokens_map.json beside tokenizer.model.
    GemmaTokenizerFast(vocab_file=str(out / "tokenizer.model")).save_pretrained(str(out))


def write_tiny_gemma(out: Path, seed: int = 0) -> Path:
    """Write the tiny Gemma 3 folder into ``out`` (created) and return it."""
    out.mkdir(parents=True, exist_ok=True)
    config = gemma_config("tiny")
    (out / "config.json").write_text(json.dumps(config, indent=2))
    (out / "preprocessor_config.json").write_text(
        json.dumps({"image_processor_type": "Gemma3ImageProcessor", "size": {"height": 56, "width": 56}})
    )
    torch.manual_seed(seed)
    model = Gemma3ForConditionalGeneration(Gemma3Config.from_dict(config))
    tensors: dict[str, torch.Tensor] = {}
    for name, value in model.state_dict().items():
        file_name = _rename(name, _GEMMA_FILE_PREFIXES)
        if file_name is None:  # lm_head: tied to embed_tokens, absent from Google's files
            continue
        if value.ndim == 1:  # norms start at zero (Gemma scales by 1 + w): give them something to do
            value = value + 0.1 * torch.randn_like(value)
        tensors[file_name] = value.to(torch.bfloat16).contiguous()
    names = list(tensors)
    shards = {"model-00001-of-00002.safetensors": names[: len(names) // 2]}
    shards["model-00002-of-00002.safetensors"] = names[len(names) // 2 :]
    for shard, keys in shards.items():
        save_file({k: tensors[k] for k in keys}, str(out / shard), metadata={"format": "pt"})
    index = {"metadata": {}, "weight_map": {k: s for s, keys in shards.items() for k in keys}}
    (out / "model.safetensors.index.json").write_text(json.dumps(index, indent=2))
    _write_tokenizer(out, seed)
    return out


def write_tiny_ltx(path: Path, seed: int = 0) -> Path:
    """Write a tiny LTX-2 checkpoint holding the embeddings processor (official names, bfloat16) to ``path``."""
    config = ltx2_config("tiny")
    meta_model = build_embeddings_processor(config, gemma_config("tiny")["text_config"])
    g = torch.Generator().manual_seed(seed)
    tensors: dict[str, torch.Tensor] = {}
    for name, value in meta_model.state_dict().items():
        if name.endswith("learnable_registers"):
            t = torch.rand(value.shape, generator=g) * 2 - 1
        elif value.ndim == 2:
            t = torch.randn(value.shape, generator=g) / value.shape[1] ** 0.5
        else:
            t = (
                1 + 0.1 * torch.randn(value.shape, generator=g)
                if "norm" in name
                else 0.1 * torch.randn(value.shape, generator=g)
            )
        tensors[_rename(name, _LTX_FILE_PREFIXES)] = t.to(torch.bfloat16)
    # A transformer tensor the text stage must leave alone.
    tensors["model.diffusion_model.patchify_proj.weight"] = torch.randn(64, 128, generator=g).to(torch.bfloat16)
    metadata = {"config": json.dumps(config), "model_version": MODEL_VERSION}
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path), metadata=metadata)
    return path
