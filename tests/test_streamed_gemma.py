"""Gemma with streamed layers gives the resident model's hidden states bit for bit (pinned host and file)."""

from __future__ import annotations

import pytest
import torch

from ltx2_edge import cli
from ltx2_edge.errors import RequestError
from ltx2_edge.models.gemma import (
    PromptTokenizer,
    find_gemma_files,
    load_gemma_text_model,
    load_streamed_gemma_text_model,
)
from ltx2_edge.quant.policy import QuantPolicy

CPU = torch.device("cpu")
PROMPTS = ["waves crash on a rocky shore", "dark forest, loud rain"]


def _same_hidden_states(resident, streamed, streamer) -> None:
    with streamer:
        ref, ref_mask = resident.encode(PROMPTS)
        out, out_mask = streamed.encode(PROMPTS)
        stats = streamer.stats()
    assert torch.equal(ref_mask, out_mask) and len(ref) == len(out)
    for a, b in zip(ref, out, strict=True):
        assert torch.equal(a, b)
    assert stats.copies == len(streamer.streamed) and stats.bytes_streamed == stats.copies * stats.slot_bytes


@pytest.mark.parametrize("precision", ["bf16", "int8"])
def test_pinned_layer_streaming_equals_resident(precision, tiny_dir):
    root = tiny_dir / "gemma"
    tokenizer = PromptTokenizer(find_gemma_files(root)[2])
    policy = QuantPolicy.from_flags(precision)
    resident = load_gemma_text_model(root, CPU, torch.float32, tokenizer, None if precision == "bf16" else policy)
    streamed, streamer = load_streamed_gemma_text_model(root, CPU, torch.float32, tokenizer, policy, 1, "pinned", 2)
    assert streamer.streamed == (0, 2)  # spread: half a stretch in, 3 layers, 2 streamed (plan.block_placement)
    _same_hidden_states(resident, streamed, streamer)


def test_file_layer_streaming_from_a_prequantized_folder(tiny_dir, tmp_path):
    root, bf16 = tiny_dir / "gemma", torch.bfloat16
    tokenizer = PromptTokenizer(find_gemma_files(root)[2])
    policy = QuantPolicy.from_flags("int8")
    with pytest.raises(RequestError, match="ltx2-edge quantize"):
        load_streamed_gemma_text_model(root, CPU, bf16, tokenizer, policy, 1, "file", 2)
    quantized = tmp_path / "gemma-int8"
    assert cli.main(["quantize", "--gemma-root", str(root), "--to", "int8", "--out", str(quantized)]) == 0
    resident = load_gemma_text_model(quantized, CPU, bf16, tokenizer, policy)
    streamed, streamer = load_streamed_gemma_text_model(quantized, CPU, bf16, tokenizer, policy, 1, "file", 2)
    _same_hidden_states(resident, streamed, streamer)
