"""The random-weight checkpoint generator: layout, init values, streaming writer, and loading by ltx-core."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import time
from pathlib import Path

import pytest
import safetensors
import safetensors.torch
import torch

import ltx2_edge  # noqa: F401  (before ltx_core)
from ltx2_edge.checkpoint.configs import gemma_config, ltx2_config
from ltx2_edge.checkpoint.header import read_header
from ltx2_edge.checkpoint.layout import expected_tensors, gemma_expected_tensors, gemma_layout
from ltx2_edge.errors import CheckpointError, RequestError
from ltx2_edge.inputs import DEFAULT_NEGATIVE_PROMPT
from ltx2_edge.synth import generator
from ltx2_edge.synth.generator import CheckpointPaths, make_checkpoint
from ltx2_edge.synth.init_scheme import init_rule, make_tensor, tensor_chunks
from ltx2_edge.synth.safetensors_writer import write_safetensors

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def tiny(tiny_dir):
    """The session's tiny checkpoint (conftest: seed 0)."""
    return CheckpointPaths("tiny", tiny_dir / "ltx2.safetensors", tiny_dir / "gemma")


def _tiny_layout():
    return expected_tensors(ltx2_config("tiny"), gemma_config("tiny")["text_config"])


def _all_files(paths) -> dict[str, bytes]:
    files = {"ltx2.safetensors": paths.ltx2.read_bytes()}
    files.update({f"gemma/{p.name}": p.read_bytes() for p in sorted(paths.gemma_dir.iterdir())})
    return files


def test_tiny_has_the_official_file_set(tiny):
    paths = tiny
    assert paths.ltx2.stat().st_size > 1_000_000
    names = {p.name for p in paths.gemma_dir.iterdir()}
    assert names == {
        "config.json",
        "generation_config.json",
        "preprocessor_config.json",
        "processor_config.json",
        "tokenizer.model",
        "tokenizer.json",
        "tokenizer_config.json",
        "special_tokens_map.json",
        "chat_template.jinja",
        "model-00001-of-00001.safetensors",
        "model.safetensors.index.json",
    }
    assert json.loads((paths.gemma_dir / "config.json").read_text()) == gemma_config("tiny")
    index = json.loads((paths.gemma_dir / "model.safetensors.index.json").read_text())
    assert set(index["weight_map"]) == set(gemma_expected_tensors(gemma_config("tiny")))
    assert index["metadata"]["total_size"] == read_header(paths.gemma_dir / "model-00001-of-00001.safetensors").nbytes()


def test_tiny_takes_seconds_and_the_same_seed_gives_identical_bytes(tiny, tmp_path):
    start = time.perf_counter()
    again = make_checkpoint("tiny", tmp_path / "again", seed=0)
    assert time.perf_counter() - start < 20
    assert _all_files(again) == _all_files(tiny)
    other = make_checkpoint("tiny", tmp_path / "other", seed=4, parts=("ltx2",))
    a, b = read_header(tiny.ltx2), read_header(other.ltx2)
    assert {n: t.shape for n, t in a.tensors.items()} == {n: t.shape for n, t in b.tensors.items()}
    name = "model.diffusion_model.transformer_blocks.0.attn1.to_q.weight"
    with safetensors.safe_open(tiny.ltx2, "pt") as fa, safetensors.safe_open(other.ltx2, "pt") as fb:
        assert not torch.equal(fa.get_tensor(name), fb.get_tensor(name))


def test_every_tensor_is_where_the_header_says_and_equals_the_init_scheme(tiny):
    paths = tiny
    layout = _tiny_layout()
    header = read_header(paths.ltx2)
    assert set(header.tensors) == set(layout)
    assert header.metadata["model_version"] == "2.0.0"
    assert json.loads(header.metadata["config"]) == ltx2_config("tiny")
    assert header.metadata["_generator"] == "ltx2-edge random weights, seed 0"
    raw = paths.ltx2.read_bytes()
    with safetensors.safe_open(paths.ltx2, "pt") as f:
        for name, info in header.tensors.items():
            t = f.get_tensor(name)
            assert t.dtype == torch.bfloat16 and tuple(t.shape) == info.shape
            assert t.contiguous().view(torch.uint8).numpy().tobytes() == raw[info.begin : info.end], name
            assert torch.equal(t, make_tensor(name, layout, seed=0)), name


def test_writer_is_byte_identical_to_the_reference_serializer(tmp_path):
    layout = {"b.weight": ((3, 5), "weight"), "a.weight": ((4, 2), "weight"), "a.bias": ((4,), "bias")}
    ours = tmp_path / "ours.safetensors"
    write_safetensors(ours, layout, {"config": '{"x": 1}'}, seed=1)
    tensors = {name: make_tensor(name, layout, seed=1) for name in layout}
    reference = tmp_path / "reference.safetensors"
    safetensors.torch.save_file(tensors, reference, metadata={"config": '{"x": 1}'})
    assert ours.read_bytes() == reference.read_bytes()


def _medium_config() -> dict:
    config = ltx2_config("tiny")
    config["transformer"].update(
        num_attention_heads=8,
        attention_head_dim=64,
        cross_attention_dim=512,
        caption_channels=256,
        num_layers=4,
        audio_num_attention_heads=4,
        audio_attention_head_dim=32,
        audio_cross_attention_dim=128,
        connector_num_attention_heads=4,
        connector_attention_head_dim=64,
    )
    return config


def test_streaming_medium_file_is_exact_across_chunk_sizes(tmp_path):
    layout = expected_tensors(_medium_config(), {"hidden_size": 256, "num_hidden_layers": 7})
    assert sum(math.prod(s) for s, _ in layout.values()) > 20_000_000
    path = tmp_path / "medium.safetensors"
    write_safetensors(path, layout, {"config": json.dumps(_medium_config())}, seed=5, chunk_elements=1 << 16)
    header = read_header(path)
    big = max(layout, key=lambda n: math.prod(layout[n][0]))
    assert math.prod(layout[big][0]) > 1 << 16  # the largest tensor really spans several chunks
    with safetensors.safe_open(path, "pt") as f:
        for name in (
            big,
            "model.diffusion_model.transformer_blocks.3.ff.net.2.weight",
            "vae.decoder.conv_out.conv.bias",
        ):
            assert tuple(f.get_tensor(name).shape) == header.tensors[name].shape
            assert torch.equal(f.get_tensor(name), make_tensor(name, layout, seed=5))


_RSS_PROBE = """
import json, resource, sys
from pathlib import Path
from ltx2_edge.synth.generator import write_safetensors
layout = {"big.weight": ((4096, 6144), "weight"), "big.bias": ((4096,), "bias"), "o.weight": ((2048, 4096), "weight")}
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
size = write_safetensors(Path(sys.argv[1]), layout, {}, seed=0, chunk_elements=1 << 18)
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"grew": (after - before) * 1024, "size": size}))
"""


def test_streaming_writer_never_holds_the_file_in_memory(tmp_path):
    root = Path(__file__).resolve().parents[1]
    run = subprocess.run(
        [sys.executable, "-c", _RSS_PROBE, str(tmp_path / "m.safetensors")],
        cwd=root,
        env={"PYTHONPATH": str(root / "src"), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        check=True,
    )
    result = json.loads(run.stdout.strip().splitlines()[-1])
    assert result["size"] > 60_000_000
    assert result["grew"] < result["size"] / 4  # one chunk (2**18 values) at a time, not the 25M-value tensor


def test_a_failed_write_leaves_no_file_behind(tmp_path):
    def boom(file, done, total):
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        make_checkpoint("tiny", tmp_path, parts=("ltx2",), progress=boom)
    assert list(tmp_path.iterdir()) == []


def test_existing_files_are_reused_replaced_only_on_request_and_foreign_ones_never(tmp_path):
    paths = make_checkpoint("tiny", tmp_path, seed=1, parts=("ltx2",))
    stamp = paths.ltx2.stat().st_mtime_ns
    assert make_checkpoint("tiny", tmp_path, seed=1, parts=("ltx2",)).ltx2.stat().st_mtime_ns == stamp
    with pytest.raises(CheckpointError, match="overwrite=True"):
        make_checkpoint("tiny", tmp_path, seed=2, parts=("ltx2",))
    make_checkpoint("tiny", tmp_path, seed=2, parts=("ltx2",), overwrite=True)
    assert read_header(paths.ltx2).metadata["_generator"].endswith("seed 2")
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    safetensors.torch.save_file({"x": torch.zeros(1)}, foreign / "ltx2.safetensors")
    with pytest.raises(CheckpointError, match="not written by this generator"):
        make_checkpoint("tiny", foreign, parts=("ltx2",), overwrite=True)
    (foreign / "gemma").mkdir()
    (foreign / "gemma" / "notes.txt").write_text("mine")
    with pytest.raises(CheckpointError, match="not a Gemma folder written by this generator"):
        make_checkpoint("tiny", foreign, parts=("gemma",), overwrite=True)
    assert (foreign / "gemma" / "notes.txt").read_text() == "mine"
    ours = make_checkpoint("tiny", tmp_path / "ours", seed=1, parts=("gemma",)).gemma_dir
    (ours / "notes.txt").write_text("mine too")
    with pytest.raises(CheckpointError, match="holds other files: notes.txt"):
        make_checkpoint("tiny", tmp_path / "ours", seed=2, parts=("gemma",), overwrite=True)
    (ours / "notes.txt").unlink()
    make_checkpoint("tiny", tmp_path / "ours", seed=2, parts=("gemma",), overwrite=True)
    assert read_header(ours / "model-00001-of-00001.safetensors").metadata["_generator"].endswith("seed 2")
    assert sorted(p.name for p in (tmp_path / "ours").iterdir()) == ["gemma"]  # no .old or .tmp folders left


def test_parts_and_gemma_dir_select_what_is_written(tmp_path):
    paths = make_checkpoint("tiny", tmp_path / "a", parts=("gemma",), gemma_dir=tmp_path / "shm" / "g")
    assert not paths.ltx2.exists()
    assert paths.gemma_dir == tmp_path / "shm" / "g" and (paths.gemma_dir / "config.json").is_file()
    assert [p.name for p in (tmp_path / "shm").iterdir()] == ["g"]  # no temporary folder left behind
    with pytest.raises(RequestError, match="parts"):
        make_checkpoint("tiny", tmp_path, parts=("vae",))
    with pytest.raises(RequestError, match="size"):
        make_checkpoint("huge", tmp_path)


def test_full_size_arithmetic_matches_ltx2_19b_and_gemma3_12b():
    layout = expected_tensors(ltx2_config("full"))
    params = {
        prefix: sum(math.prod(s) for n, (s, _) in layout.items() if n.startswith(prefix))
        for prefix in ("model.diffusion_model.", "text_embedding_projection.", "vae.decoder.", "vae.encoder.")
    }
    connectors = sum(math.prod(s) for n, (s, _) in layout.items() if "embeddings_connector." in n)
    transformer = params["model.diffusion_model."] - connectors
    assert transformer == pytest.approx(18.9e9, rel=0.01)
    assert connectors == pytest.approx(2 * 0.354e9, rel=0.01)
    assert layout["text_embedding_projection.aggregate_embed.weight"][0] == (3840, 188160)
    assert params["vae.decoder."] == pytest.approx(0.55e9, rel=0.05)
    gemma = gemma_expected_tensors(gemma_config("full"))
    language = sum(math.prod(s) for n, s in gemma.items() if n.startswith("language_model."))
    vision = sum(math.prod(s) for n, s in gemma.items() if n.startswith("vision_tower."))
    assert language == pytest.approx(11.77e9, rel=0.01)
    assert vision == pytest.approx(0.417e9, rel=0.01)
    assert "lm_head.weight" not in gemma and gemma["language_model.model.embed_tokens.weight"] == (262208, 3840)
    shards = generator.gemma_folder_plan("full").shards
    assert len(shards) == 5 and all(s.nbytes <= 5 * 10**9 for s in shards)


def test_init_values_follow_torch_per_role():
    layout = _tiny_layout()
    q = "model.diffusion_model.transformer_blocks.0.attn1.to_q.weight"
    w = make_tensor(q, layout, seed=0).float()
    bound = 1 / math.sqrt(layout[q][0][1])
    assert w.abs().max() <= bound * 1.004 and w.std() == pytest.approx(bound / math.sqrt(3), rel=0.1)
    bias = make_tensor("model.diffusion_model.transformer_blocks.0.attn1.to_q.bias", layout, seed=0).float()
    assert bias.abs().max() <= bound * 1.004 and bias.abs().max() > bound / 4
    conv = "vae.decoder.conv_in.conv.weight"
    shape = layout[conv][0]
    assert make_tensor(conv, layout, seed=0).float().abs().max() <= 1.004 / math.sqrt(math.prod(shape[1:]))
    sst = make_tensor("model.diffusion_model.scale_shift_table", layout, seed=0).float()
    assert sst.std() == pytest.approx(1 / math.sqrt(sst.shape[-1]), rel=0.3)
    regs = make_tensor("model.diffusion_model.video_embeddings_connector.learnable_registers", layout, seed=0)
    assert regs.float().abs().max() <= 1.0 and regs.float().std() == pytest.approx(1 / math.sqrt(3), rel=0.1)
    assert torch.all(make_tensor("vae.per_channel_statistics.std-of-means", layout, seed=0) == 1)
    assert torch.all(make_tensor("vae.per_channel_statistics.mean-of-means", layout, seed=0) == 0)
    assert torch.all(make_tensor("model.diffusion_model.transformer_blocks.0.attn1.q_norm.weight", layout, seed=0) == 1)
    gemma = gemma_layout(gemma_config("tiny"))
    emb = make_tensor("language_model.model.embed_tokens.weight", gemma, seed=0).float()
    assert emb.mean().abs() < 0.001 and emb.std() == pytest.approx(0.02, rel=0.05)
    assert torch.all(make_tensor("language_model.model.layers.0.input_layernorm.weight", gemma, seed=0) == 0)


def test_values_do_not_depend_on_chunking_or_order():
    layout = _tiny_layout()
    name = "model.diffusion_model.transformer_blocks.1.ff.net.0.proj.weight"
    shape, rule = layout[name][0], init_rule(name, layout)
    small = torch.cat(list(tensor_chunks(name, shape, rule, seed=9, chunk_elements=1000)))
    assert torch.equal(small.reshape(shape), make_tensor(name, layout, seed=9))
    first = make_tensor("vocoder.conv_pre.weight", layout, seed=9)
    make_tensor("vocoder.conv_post.weight", layout, seed=9)
    assert torch.equal(first, make_tensor("vocoder.conv_pre.weight", layout, seed=9))


def _build(configurator, path, sd_ops, module_ops=()):
    from ltx_core.loader.single_gpu_model_builder import SingleGPUModelBuilder

    builder = SingleGPUModelBuilder(
        model_class_configurator=configurator, model_path=path, model_sd_ops=sd_ops, module_ops=module_ops
    )
    model = builder.build(device=CPU)
    paths = list(path) if isinstance(path, tuple) else [path]
    loaded = set(builder.load_sd(paths, builder.registry, CPU, sd_ops).sd)
    return model, loaded


def test_ltx_core_builds_every_component_with_every_key(tiny):
    from ltx_core.model.audio_vae.model_configurator import (
        AUDIO_VAE_DECODER_COMFY_KEYS_FILTER,
        VOCODER_COMFY_KEYS_FILTER,
        AudioDecoderConfigurator,
        VocoderConfigurator,
    )
    from ltx_core.model.transformer.model_configurator import LTXV_MODEL_COMFY_RENAMING_MAP, LTXModelConfigurator
    from ltx_core.model.video_vae.model_configurator import VAE_DECODER_COMFY_KEYS_FILTER, VideoDecoderConfigurator
    from ltx_core.text_encoders.gemma.encoders.encoder_configurator import EMBEDDINGS_PROCESSOR_KEY_OPS

    from ltx2_edge.checkpoint.layout import meta_embeddings_processor

    class TinyEmbeddingsProcessor:
        @classmethod
        def from_config(cls, config):
            return meta_embeddings_processor(config, gemma_config("tiny")["text_config"])

    path = str(tiny.ltx2)
    cases = [
        (LTXModelConfigurator, LTXV_MODEL_COMFY_RENAMING_MAP),
        (VideoDecoderConfigurator, VAE_DECODER_COMFY_KEYS_FILTER),
        (AudioDecoderConfigurator, AUDIO_VAE_DECODER_COMFY_KEYS_FILTER),
        (VocoderConfigurator, VOCODER_COMFY_KEYS_FILTER),
        (TinyEmbeddingsProcessor, EMBEDDINGS_PROCESSOR_KEY_OPS),
    ]
    for configurator, sd_ops in cases:
        model, loaded = _build(configurator, path, sd_ops)
        keys = set(model.state_dict())
        assert not any(t.is_meta for t in model.state_dict().values()), configurator.__name__
        assert keys <= loaded, f"{configurator.__name__} misses {sorted(keys - loaded)[:3]}"
        unexpected = loaded - keys
        if configurator is LTXModelConfigurator:
            # The official transformer prefix also covers the text connectors, which the transformer ignores.
            assert unexpected and all("embeddings_connector." in k for k in unexpected)
        else:
            assert not unexpected, f"{configurator.__name__}: {sorted(unexpected)[:3]}"


def test_gemma_folder_loads_the_official_way_and_encodes_1024_tokens(tiny):
    from ltx_core.text_encoders.gemma.encoders.base_encoder import GemmaTextEncoder, module_ops_from_gemma_root
    from ltx_core.text_encoders.gemma.encoders.encoder_configurator import GEMMA_LLM_KEY_OPS, GEMMA_MODEL_OPS
    from transformers import Gemma3Config, Gemma3ForConditionalGeneration

    folder = tiny.gemma_dir

    class TinyGemma:  # ltx-core's GemmaTextEncoderConfigurator hard-codes 12B; same classes, folder's config
        @classmethod
        def from_config(cls, config):
            gemma = Gemma3Config.from_dict(json.loads((folder / "config.json").read_text()))
            return GemmaTextEncoder(model=Gemma3ForConditionalGeneration(gemma))

    shards = tuple(str(p) for p in sorted(folder.glob("model*.safetensors")))
    ops = (GEMMA_MODEL_OPS, *module_ops_from_gemma_root(str(folder)))
    encoder, loaded = _build(TinyGemma, shards, GEMMA_LLM_KEY_OPS, ops)
    params = {name for name, _ in encoder.named_parameters()}
    assert params == loaded  # lm_head comes from the tied embedding, as ltx-core's key ops duplicate it
    assert not any(t.is_meta for t in encoder.state_dict().values())
    assert encoder.processor is not None
    hidden, mask = encoder.encode("A red fox runs across the moon.")
    assert len(hidden) == 4 and hidden[-1].shape == (1, 1024, 32)
    assert 5 < int(mask.sum()) < 30 and all(torch.isfinite(h).all() for h in hidden)


def test_tokenizer_loads_like_gemma_with_left_padding_to_1024(tiny):
    from ltx_core.text_encoders.gemma.tokenizer import LTXVGemmaTokenizer
    from ltx_pipelines.utils.constants import DEFAULT_NEGATIVE_PROMPT as official
    from transformers import AutoTokenizer

    folder = str(tiny.gemma_dir)
    assert DEFAULT_NEGATIVE_PROMPT == official
    pairs = LTXVGemmaTokenizer(folder, 1024).tokenize_with_weights("A red fox runs across the moon.")["gemma"]
    ids = [int(t) for t, _ in pairs]
    mask = [int(m) for _, m in pairs]
    n = sum(mask)
    assert len(ids) == 1024 and mask == [0] * (1024 - n) + [1] * n
    assert ids[: 1024 - n] == [0] * (1024 - n) and ids[1024 - n] == 2
    tok = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    assert (tok.pad_token_id, tok.eos_token_id, tok.bos_token_id, tok.unk_token_id) == (0, 1, 2, 3)
    special = ["<start_of_turn>", "<end_of_turn>", "<start_of_image>", "<end_of_image>", "<image_soft_token>"]
    assert tok.convert_tokens_to_ids(special) == [105, 106, 4093, 4094, 4095]
    assert len(tok) == 4096 == gemma_config("tiny")["text_config"]["vocab_size"]
    text = "Zebra-crossing at 12:45, ünïcödé 🙂"
    assert tok.decode(tok(text).input_ids, skip_special_tokens=True) == text  # byte fallback round-trips
    assert max(tok(DEFAULT_NEGATIVE_PROMPT).input_ids) < 4093
