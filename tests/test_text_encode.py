"""Text-encode stage against the official ltx-core/ltx-pipelines objects, on tiny Gemma 3 + LTX-2 checkpoints.

The oracle is ltx-pipelines' own ``ModelLedger`` (``text_encoder()`` = full ``Gemma3ForConditionalGeneration``
through GEMMA_LLM_KEY_OPS and ``create_and_populate``; ``gemma_embeddings_processor()`` through
EMBEDDINGS_PROCESSOR_KEY_OPS), made to build the tiny sizes by swapping ltx-core's hard-coded 12B Gemma config
for the tiny one while the models are built. Its prompt-enhancement processor op is left out (it needs image
tokens the tiny tokenizer lacks and plays no part in encoding).
"""

from __future__ import annotations

import dataclasses
import types
from pathlib import Path

import pytest
import torch
from safetensors import safe_open as real_safe_open
from safetensors.torch import save_file

import ltx2_edge  # noqa: F401  (torchaudio placeholder before ltx_core)
from ltx2_edge.checkpoint.configs import gemma_config
from ltx2_edge.errors import CheckpointError, RequestError
from ltx2_edge.models import weights
from ltx2_edge.models.embeddings import load_embeddings_processor
from ltx2_edge.models.gemma import ATTN_IMPLEMENTATION, load_gemma_text_model
from ltx2_edge.stages import text_encode
from ltx2_edge.stages.text_encode import TextEncoder, encode_text
from ltx2_edge.streaming.tensor_reader import TensorReader

PROMPTS = ["A cat runs over the bright river at sunset, soft music plays.", "dark forest, loud rain"]
CPU = torch.device("cpu")
LAYERS = gemma_config("tiny")["text_config"]["num_hidden_layers"]


@pytest.fixture(scope="module")
def files(tiny_dir: Path) -> tuple[Path, Path]:
    """The generated tiny checkpoint: official Gemma folder layout (vision tower included) and LTX file."""
    return tiny_dir / "gemma", tiny_dir / "ltx2.safetensors"


def _official(files: tuple[Path, Path], dtype: torch.dtype):
    """(official GemmaTextEncoder, official EmbeddingsProcessor) for the tiny files."""
    import ltx_core.text_encoders.gemma.encoders.encoder_configurator as configurator
    from ltx_pipelines.utils.model_ledger import ModelLedger

    gemma_dir, ckpt = files
    tiny = gemma_config("tiny")
    tiny_config = types.SimpleNamespace(
        to_dict=lambda: gemma_config("tiny"), text_config=types.SimpleNamespace(**tiny["text_config"])
    )
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(configurator, "GEMMA3_CONFIG_FOR_LTX", tiny_config)
        ledger = ModelLedger(dtype=dtype, device=CPU, checkpoint_path=str(ckpt), gemma_root_path=str(gemma_dir))
        ops = ledger.text_encoder_builder.module_ops
        assert [op.name for op in ops] == ["GemmaModel", "TokenizerLoad", "ProcessorLoad"]
        ledger.text_encoder_builder = dataclasses.replace(ledger.text_encoder_builder, module_ops=ops[:2])
        return ledger.text_encoder(), ledger.gemma_embeddings_processor()


@pytest.fixture(scope="module")
def official_fp32(files):
    return _official(files, torch.float32)


def _max_rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.float() - b.float()).abs().max() / b.float().abs().max()).item()


# (a) hidden states ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_hidden_states_equal_official_full_gemma(files, dtype):
    official, _ = _official(files, dtype)
    assert official.model.config.text_config._attn_implementation == ATTN_IMPLEMENTATION
    ours = load_gemma_text_model(files[0], CPU, dtype)
    # Buffers not in the file: same values, kept float32, as ltx-core's create_and_populate sets them.
    lm = official.model.model.language_model
    for name in ("rotary_emb.inv_freq", "rotary_emb_local.inv_freq", "embed_tokens.embed_scale"):
        theirs, mine = lm.get_buffer(name), ours.model.get_buffer(name)
        assert mine.dtype == torch.float32 and torch.equal(mine, theirs), name

    with torch.inference_mode():
        batched, mask = ours.encode(PROMPTS)  # prompt and negative prompt in one forward
        for i, prompt in enumerate(PROMPTS):
            ref, ref_mask = official.encode(prompt)
            single, single_mask = ours.encode([prompt])
            assert len(ref) == len(batched) == len(single) == LAYERS + 1
            assert torch.equal(mask[i : i + 1], ref_mask) and torch.equal(single_mask, ref_mask)
            assert 0 < int(ref_mask.sum()) < 1024  # left padding really happened
            for layer, (r, b, s) in enumerate(zip(ref, batched, single, strict=True)):
                assert b.dtype == dtype and b.shape == (2, 1024, 32)
                assert torch.isfinite(r).all()
                if dtype == torch.float32:
                    assert _max_rel(b[i : i + 1], r) <= 1e-5, (i, layer)
                    assert _max_rel(s, r) <= 1e-5, (i, layer)
                else:  # bfloat16 has no rounding slack to spare: the same kernels give the same bits
                    assert torch.equal(b[i : i + 1], r) and torch.equal(s, r), (i, layer)


# (b) only the language model is read ---------------------------------------------------------------------------


def test_vision_tower_bytes_never_read(files, monkeypatch):
    read: list[str] = []
    real_read = TensorReader.read

    def recording(self, entries):
        read.extend(info.name for _, info in entries)
        return real_read(self, entries)

    monkeypatch.setattr(TensorReader, "read", recording)
    ours = load_gemma_text_model(files[0], CPU, torch.float32)

    in_files: list[str] = []
    for shard in sorted(files[0].glob("model-*.safetensors")):
        with real_safe_open(str(shard), framework="pt") as f:
            in_files += list(f.keys())
    language = sorted(k for k in in_files if k.startswith("language_model.model."))
    assert any(k.startswith("vision_tower.") for k in in_files)
    assert any(k.startswith("multi_modal_projector.") for k in in_files)
    assert sorted(read) == language  # each language tensor once, nothing else
    names = [n for n, _ in ours.model.named_parameters()]
    assert len(names) == len(language) and not any("vision" in n or "projector" in n for n in names)
    assert all(not p.requires_grad for p in ours.model.parameters())


# (c) embeddings processor --------------------------------------------------------------------------------------


def test_embeddings_processor_equals_official(files, official_fp32):
    official_gemma, official_processor = official_fp32
    ours = load_embeddings_processor(files[1], CPU, torch.float32)
    theirs = dict(official_processor.state_dict())
    assert sorted(ours.state_dict()) == sorted(theirs)
    with torch.inference_mode():
        for prompt in PROMPTS:
            hidden, mask = official_gemma.encode(prompt)
            ref = official_processor.process_hidden_states(hidden, mask)
            out = ours.process_hidden_states(hidden, mask)
            for r, o in zip(ref, out, strict=True):
                assert o.dtype == r.dtype and torch.equal(o, r)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_embeddings_processor_dtype(files, dtype):
    # ltx-core creates learnable_registers in bfloat16; the official loader casts every tensor to its dtype.
    ours = load_embeddings_processor(files[1], CPU, dtype)
    assert ours.video_connector.learnable_registers.dtype == dtype
    assert {p.dtype for p in ours.parameters()} == {dtype}


def test_stage_equals_official_chain(files, official_fp32):
    official_gemma, official_processor = official_fp32
    parts: list[tuple[str, float]] = []
    out = encode_text(files[0], files[1], PROMPTS, CPU, torch.float32, progress=lambda p, s: parts.append((p, s)))
    assert [p for p, _ in parts] == ["gemma", "embeddings"] and all(s > 0 for _, s in parts)
    with torch.inference_mode():
        for prompt, ours in zip(PROMPTS, out, strict=True):
            ref = official_processor.process_hidden_states(*official_gemma.encode(prompt))
            assert ours.video_encoding.shape == ours.audio_encoding.shape == (1, 1024, 32)
            for r, o in zip(ref, ours, strict=True):
                assert _max_rel(o, r) <= 1e-5


# (d) token counting and the context limit ----------------------------------------------------------------------


def test_count_tokens_and_long_prompt_refused(files, monkeypatch):
    encoder = TextEncoder(files[0], files[1], CPU, torch.float32)
    ids, mask = encoder.tokenizer.tokenize(["  a cat runs  "])
    assert encoder.count_tokens("  a cat runs  ") == int(mask.sum()) > 1
    assert ids[0, -int(mask.sum())] == 2  # <bos> first, left padding before it

    # A word the tokenizer spells as one token each time it repeats, so the count can be hit exactly.
    word = next(w for w in ("word", "the", "sea", "cat", "a") if all(
        encoder.count_tokens(" ".join([w] * (k + 1))) - encoder.count_tokens(" ".join([w] * k)) == 1 for k in (1, 2, 50)
    ))  # fmt: skip
    n = 1 + 1024 - encoder.count_tokens(word)
    fits, too_long = " ".join([word] * n), " ".join([word] * (n + 1))
    assert encoder.count_tokens(fits) == 1024 and encoder.count_tokens(too_long) == 1025

    def must_not_load(*args, **kwargs):
        raise AssertionError("weights loaded before the prompt was checked")

    monkeypatch.setattr(text_encode, "load_gemma_text_model", must_not_load)
    with pytest.raises(RequestError) as err:
        encoder.encode(["a cat", too_long])
    assert err.value.field == "--prompts[1]" and "1025 tokens" in str(err.value)
    monkeypatch.undo()
    out = encoder.encode([fits])  # exactly the context: accepted, nothing cut
    assert out[0].video_encoding.shape == (1, 1024, 32)


# (e) determinism and residency ---------------------------------------------------------------------------------


@pytest.mark.parametrize("keep_resident", [False, True])
def test_same_prompt_twice_identical(files, keep_resident):
    encoder = TextEncoder(files[0], files[1], CPU, torch.float32, keep_resident=keep_resident)
    first = encoder.encode(["a prompt"])[0]
    assert (encoder.cache.holds("gemma"), encoder.cache.holds("embeddings")) == (keep_resident, keep_resident)
    second = encoder.encode(["a prompt"])[0]
    assert encoder.cache.loads == {"gemma": 1 if keep_resident else 2, "embeddings": 1 if keep_resident else 2}
    for a, b in zip(first, second, strict=True):
        assert torch.equal(a, b)
    encoder.close()
    assert encoder.cache.loaded() == ()


# weights.load_into strictness ----------------------------------------------------------------------------------


def _meta_linear() -> torch.nn.Module:
    with torch.device("meta"):
        return torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.LayerNorm(3))


@pytest.mark.parametrize(
    ("tensors", "message"),
    [
        ({"0.weight": (3, 4), "0.bias": (3,), "1.weight": (3,)}, "missing from .* \\(first: '1.bias'\\)"),
        ({"0.weight": (3, 4), "0.bias": (3,), "1.weight": (3,), "1.bias": (3,), "2.x": (1,)}, "'2.x'.*unexpected"),
        ({"0.weight": (4, 3), "0.bias": (3,), "1.weight": (3,), "1.bias": (3,)}, "shape \\[4, 3\\].*\\[3, 4\\]"),
    ],
)
def test_load_into_strict(tmp_path, tensors, message):
    path = tmp_path / "w.safetensors"
    save_file({k: torch.ones(s) for k, s in tensors.items()}, str(path))
    with pytest.raises(CheckpointError, match=message):
        weights.load_into(_meta_linear(), [path], lambda k: k, CPU, torch.float32)


def test_load_into_casts_and_keeps(tmp_path):
    path = tmp_path / "w.safetensors"
    sd = {"m.0.weight": torch.randn(3, 4), "m.0.bias": torch.randn(3), "m.1.weight": torch.randn(3)}
    sd["m.1.bias"] = torch.randn(3)
    sd["other.weight"] = torch.randn(2)
    save_file(sd, str(path))
    module = weights.load_into(
        _meta_linear(),
        [path],
        lambda k: k[2:] if k.startswith("m.") else None,
        CPU,
        torch.bfloat16,
        keep_dtype=lambda name: name.startswith("1."),
    )
    assert weights.meta_tensors(module) == []
    assert module[0].weight.dtype == torch.bfloat16 and module[1].weight.dtype == torch.float32
    assert torch.equal(module[0].weight, sd["m.0.weight"].to(torch.bfloat16))
    assert torch.equal(module[1].bias, sd["m.1.bias"])


def test_bad_inputs_refused(files, tmp_path):
    from ltx2_edge.checkpoint.configs import ltx2_config
    from ltx2_edge.models.embeddings import build_embeddings_processor
    from ltx2_edge.models.gemma import find_gemma_files

    with pytest.raises(CheckpointError, match="does not exist"):
        find_gemma_files(tmp_path / "nowhere")
    (tmp_path / "model.safetensors").write_bytes(next(files[0].glob("model-*.safetensors")).read_bytes())
    with pytest.raises(CheckpointError, match="config.json is missing"):
        find_gemma_files(tmp_path)
    config = ltx2_config("tiny")
    config["transformer"]["caption_proj_before_connector"] = True
    with pytest.raises(CheckpointError, match="V2"):
        build_embeddings_processor(config, gemma_config("tiny")["text_config"])
    with pytest.raises(CheckpointError, match="connector is 32 wide but Gemma's hidden size is 64"):
        build_embeddings_processor(ltx2_config("tiny"), {"hidden_size": 64, "num_hidden_layers": 3})
