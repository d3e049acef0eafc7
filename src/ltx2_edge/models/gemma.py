"""Gemma 3's language model alone, loaded from an official Gemma folder, giving LTX-2 its text hidden states.

The official path (ltx-core's ``GemmaTextEncoder``) builds the whole ``Gemma3ForConditionalGeneration`` with a
config hard-coded to Gemma 3 12B and reads every tensor of the folder, vision tower included. Text-to-video
needs only the language model: this module builds ``Gemma3TextModel`` from the folder's own ``config.json`` on
``meta`` and reads only the ``language_model.model.*`` tensors (the vision tower and projector bytes are never
read, and no ``lm_head`` is made). Numerics are the official ones: same tokenizer (ltx-core's
``LTXVGemmaTokenizer``, left padding to 1024 tokens), same attention implementation (``sdpa``, what transformers
4.57 picks for the official model), same float32 rotary and embedding-scale buffers computed on the CPU as
ltx-core's ``create_and_populate`` does, same position ids (0..1023, padding included).

It never truncates: a prompt longer than the 1024-token context is refused with ``RequestError``, where the
official tokenizer would silently cut it. It never loads or runs the vision tower.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import torch
from transformers.models.gemma3 import Gemma3TextConfig, Gemma3TextModel
from transformers.models.gemma3.modeling_gemma3 import Gemma3RotaryEmbedding, Gemma3TextScaledWordEmbedding

from ltx2_edge.checkpoint.names import GEMMA_PREFIX, TEXT_CONTEXT_TOKENS
from ltx2_edge.errors import CheckpointError, RequestError
from ltx2_edge.models.quantized_loading import load_quantized
from ltx2_edge.models.streamed_blocks import BlockNames, load_streamed, require_loaded_except_streamed
from ltx2_edge.models.weights import load_into, require_materialized
from ltx2_edge.quant.policy import QuantPolicy
from ltx2_edge.streaming.streamer import BlockStreamer

ATTN_IMPLEMENTATION = "sdpa"
"""What transformers 4.57 resolves for the official ``Gemma3ForConditionalGeneration(config)`` (built without an
``attn_implementation``): the same kernel keeps our hidden states equal to the official ones."""


def find_gemma_files(gemma_root: Path) -> tuple[Path, list[Path], Path]:
    """``(config.json, model*.safetensors files, tokenizer folder)`` of a Gemma folder; CheckpointError if absent.

    Like ltx-core, files are searched recursively under ``gemma_root``; the tokenizer folder is the one holding
    ``tokenizer.model`` or ``tokenizer.json``.
    """
    root = Path(gemma_root)
    if not root.is_dir():
        raise CheckpointError(
            f"Gemma folder {root} does not exist: pass the Gemma 3 folder (config.json, model*.safetensors, tokenizer)"
        )
    found = sorted(root.rglob("model*.safetensors"))
    if not found:
        raise CheckpointError(f"no model*.safetensors under {root}: is this a Gemma 3 folder?")
    # The shards of one model sit in one folder (ltx-core takes the first match's folder too).
    weights = sorted(found[0].parent.glob("model*.safetensors"))
    config = found[0].parent / "config.json"
    if not config.is_file():
        raise CheckpointError(f"{config} is missing: the Gemma folder needs its config.json beside the weights")
    tokenizer_files = sorted(root.rglob("tokenizer.model")) or sorted(root.rglob("tokenizer.json"))
    if not tokenizer_files:
        raise CheckpointError(f"no tokenizer.model or tokenizer.json under {root}: the Gemma folder is incomplete")
    return config, weights, tokenizer_files[0].parent


def read_text_config(config_path: Path) -> dict:
    """The ``text_config`` of a Gemma 3 folder's ``config.json`` (CheckpointError if it is not Gemma 3)."""
    try:
        doc = json.loads(Path(config_path).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{config_path} is not readable JSON ({exc})") from exc
    text = doc.get("text_config") if isinstance(doc, dict) else None
    if not isinstance(text, dict) or doc.get("model_type") != "gemma3":
        raise CheckpointError(f"{config_path} is not a Gemma 3 config (model_type gemma3 with a text_config)")
    return text


class PromptTokenizer:
    """ltx-core's tokenizer (left padding to 1024 tokens), plus the length check the official one lacks.

    Cheap to build (no weights), so the request validator can use it before anything is loaded.
    """

    def __init__(self, tokenizer_root: Path, max_tokens: int = TEXT_CONTEXT_TOKENS) -> None:
        from ltx_core.text_encoders.gemma.tokenizer import LTXVGemmaTokenizer

        self.max_tokens = max_tokens
        self._ltx = LTXVGemmaTokenizer(str(tokenizer_root), max_tokens)

    def count_tokens(self, prompt: str) -> int:
        """Tokens ``prompt`` takes in the context, ``<bos>`` included, before any truncation."""
        # Same text the official tokenizer sees: it strips the prompt first.
        return len(self._ltx.tokenizer(prompt.strip(), truncation=False, verbose=False).input_ids)

    def check(self, prompt: str, field: str = "prompt") -> None:
        """Raise ``RequestError`` if ``prompt`` would not fit the context (the official path truncates it)."""
        n = self.count_tokens(prompt)
        if n > self.max_tokens:
            raise RequestError(
                field, f"<{n} tokens>", f"at most {self.max_tokens} Gemma tokens including <bos>; shorten it"
            )

    def tokenize(self, prompts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """``(input_ids, attention_mask)``, each ``[len(prompts), 1024]`` int64, exactly as ltx-core makes them."""
        ids, masks = [], []
        for i, prompt in enumerate(prompts):
            self.check(prompt, field=f"prompts[{i}]" if len(prompts) > 1 else "prompt")
            pairs = self._ltx.tokenize_with_weights(prompt)["gemma"]
            ids.append([int(t) for t, _ in pairs])
            masks.append([int(w) for _, w in pairs])
        return torch.tensor(ids, dtype=torch.int64), torch.tensor(masks, dtype=torch.int64)


class GemmaText:
    """Gemma 3's language model and tokenizer, ready to turn prompts into all 1+L hidden states."""

    def __init__(self, model: Gemma3TextModel, tokenizer: PromptTokenizer, device: torch.device) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.device = device

    def count_tokens(self, prompt: str) -> int:
        """Tokens ``prompt`` takes in the 1024-token context (``<bos>`` included), before any truncation."""
        return self.tokenizer.count_tokens(prompt)

    @torch.inference_mode()
    def encode(self, prompts: Sequence[str]) -> tuple[tuple[torch.Tensor, ...], torch.Tensor]:
        """Hidden states of every layer (embeddings first, final norm last), each ``[B, 1024, hidden]``, and the
        ``[B, 1024]`` attention mask, for the B prompts in one batched forward.

        Row ``i`` matches the official ``GemmaTextEncoder.encode(prompts[i])``, which runs one prompt at a time:
        tests/test_text_encode.py holds batched, single and official within 1e-5 relative in float32 (on the CPU
        they are bit-identical). Raises ``RequestError`` for an empty list or a prompt over 1024 tokens.
        """
        if not prompts:
            raise RequestError("prompts", list(prompts), "at least one prompt")
        input_ids, attention_mask = self.tokenizer.tokenize(prompts)
        input_ids = input_ids.to(self.device)
        attention_mask = attention_mask.to(self.device)
        # use_cache=False: the official call builds a DynamicCache of every layer's K/V it never reads; the
        # first (and only) update returns the same K/V, so skipping it changes no value and saves the memory.
        out = self.model(input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=True, use_cache=False)
        return tuple(out.hidden_states), attention_mask


def build_gemma_text_model(text_config: dict) -> Gemma3TextModel:
    """``Gemma3TextModel`` for ``text_config`` on ``meta`` (no memory), attention set to ``ATTN_IMPLEMENTATION``."""
    config = Gemma3TextConfig(**text_config)
    config._attn_implementation = ATTN_IMPLEMENTATION
    with torch.device("meta"):
        return Gemma3TextModel(config)


def populate_buffers(model: Gemma3TextModel, device: torch.device) -> None:
    """Set the non-persistent buffers a ``meta`` build leaves empty: rotary ``inv_freq`` and ``embed_scale``.

    They are not in the checkpoint. Like ltx-core's ``create_and_populate``, they are computed in float32 on the
    CPU (a GPU ``pow`` may differ in the last bit) and stay float32 whatever the weights' dtype; each rotary
    module uses its own config (the local one carries ``rope_local_base_freq`` and no scaling).
    """
    for module in model.modules():
        if isinstance(module, Gemma3RotaryEmbedding):
            inv_freq, _ = module.rope_init_fn(module.config, torch.device("cpu"))
            module.register_buffer("inv_freq", inv_freq.to(device), persistent=False)
            module.original_inv_freq = module.inv_freq
        elif isinstance(module, Gemma3TextScaledWordEmbedding):
            scale = torch.tensor(model.config.hidden_size**0.5, dtype=torch.float32)
            module.register_buffer("embed_scale", scale.to(device), persistent=False)


def language_model_key(file_name: str) -> str | None:
    """Official Gemma file name -> ``Gemma3TextModel`` name; None for the vision tower, projector and the rest."""
    return file_name[len(GEMMA_PREFIX) :] if file_name.startswith(GEMMA_PREFIX) else None


def load_gemma_text_model(
    gemma_root: Path,
    device: torch.device | str,
    dtype: torch.dtype,
    tokenizer: PromptTokenizer | None = None,
    policy: QuantPolicy | None = None,
) -> GemmaText:
    """Load Gemma 3's language model and tokenizer from an official Gemma folder onto ``device`` in ``dtype``.

    Reads only the ``language_model.model.*`` tensors, one at a time; ``tokenizer`` reuses one already made
    from this folder. An 8-bit ``policy`` builds its chosen Linears in 8 bits, layer by layer. Raises
    ``CheckpointError`` if the folder is incomplete or does not match its config.
    """
    dev = torch.device(device)
    config_path, weights, tokenizer_root = find_gemma_files(Path(gemma_root))
    model = build_gemma_text_model(read_text_config(config_path))
    if policy is None or policy.precision == "bf16":
        load_into(model, weights, language_model_key, dev, dtype)
    else:  # 8-bit Linears, matched by the official file names the policy is written for
        load_quantized(model, weights, language_model_key, dev, dtype, policy, lambda n: GEMMA_PREFIX + n)
    populate_buffers(model, dev)
    require_materialized(model, f"Gemma language model from {gemma_root}")
    return GemmaText(model.eval(), tokenizer if tokenizer is not None else PromptTokenizer(tokenizer_root), dev)


GEMMA_LAYERS = BlockNames("layers", GEMMA_PREFIX + "layers.{i}.", policy=GEMMA_PREFIX)


def load_streamed_gemma_text_model(
    gemma_root: Path,
    device: torch.device | str,
    dtype: torch.dtype,
    tokenizer: PromptTokenizer,
    policy: QuantPolicy,
    resident_layers: int,
    tier: str,
    prefetch: int,
) -> tuple[GemmaText, BlockStreamer]:
    """Gemma's language model with ``resident_layers`` layers resident and the rest, spread between them, streamed
    from ``tier``."""
    dev = torch.device(device)
    config_path, weights, _ = find_gemma_files(Path(gemma_root))
    model = build_gemma_text_model(read_text_config(config_path))
    _, streamer = load_streamed(model, GEMMA_LAYERS, weights, language_model_key, dev, dtype, policy,
                                resident_layers, tier, prefetch)  # fmt: skip
    populate_buffers(model, dev)
    require_loaded_except_streamed(model, GEMMA_LAYERS, streamer)
    return GemmaText(model.eval(), tokenizer, dev), streamer
