"""Checkpoint and Gemma-folder validation: every bad input is refused by header, naming the first bad tensor."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import pickle
import shutil
import time
from pathlib import Path

import pytest
import safetensors.torch
import torch

import ltx2_edge  # noqa: F401  (before ltx_core)
from ltx2_edge.checkpoint.configs import gemma_config, ltx2_config
from ltx2_edge.checkpoint.gemma_folder import gemma_folder_plan
from ltx2_edge.checkpoint.header import read_header
from ltx2_edge.checkpoint.layout import expected_tensors
from ltx2_edge.checkpoint.validate import check_text_encoder_fits, inspect_checkpoint, inspect_gemma_folder
from ltx2_edge.errors import CheckpointError

LTX23 = "LTX-2.3 (22B) checkpoints are not supported yet; use an LTX-2 19B file such as ltx-2-19b-dev.safetensors"
# Tensors the official LTX-2 file carries that no ltx-core module reads (diffusers' converter drops them).
OFFICIAL_EXTRAS = (
    "vae.per_channel_statistics.channel",
    "vae.per_channel_statistics.mean-of-stds",
    "vae.per_channel_statistics.mean-of-stds_over_std-of-means",
)


@pytest.fixture(scope="module")
def tiny(tiny_dir):
    path = tiny_dir / "ltx2.safetensors"
    return path, safetensors.torch.load_file(path), read_header(path).metadata


def _save(path: Path, tensors: dict, metadata: dict) -> Path:
    safetensors.torch.save_file(tensors, path, metadata=metadata)
    return path


def _variant(tiny, tmp_path, *, drop=(), replace=None, metadata=None) -> Path:
    _, tensors, meta = tiny
    tensors = {k: v for k, v in tensors.items() if k not in drop}
    tensors.update(replace or {})
    return _save(tmp_path / "variant.safetensors", tensors, meta if metadata is None else metadata)


def test_generated_tiny_checkpoint_passes(tiny):
    info = inspect_checkpoint(tiny[0])
    assert (info.family, info.model_version, info.quantized, info.extra) == ("LTX-2 19B", "2.0.0", False, ())
    assert info.config == ltx2_config("tiny") and len(info.header.tensors) == len(tiny[1])


def test_missing_directory_pickle_and_zip_are_refused(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        inspect_checkpoint(tmp_path / "nope.safetensors")
    with pytest.raises(CheckpointError, match="is not a file"):
        inspect_checkpoint(tmp_path)
    torch.save({"w": torch.zeros(2)}, tmp_path / "model.pt")
    with pytest.raises(CheckpointError, match="zip archive.*never unpickles"):
        inspect_checkpoint(tmp_path / "model.pt")
    (tmp_path / "model.bin").write_bytes(pickle.dumps({"w": [0.0]}, protocol=4))
    with pytest.raises(CheckpointError, match="pickle"):
        inspect_checkpoint(tmp_path / "model.bin")


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode")
def test_unreadable_file_is_refused(tiny, tmp_path):
    path = _variant(tiny, tmp_path)
    path.chmod(0)
    with pytest.raises(CheckpointError, match="not readable"):
        inspect_checkpoint(path)


@pytest.mark.parametrize(
    ("metadata", "message"),
    [
        ({"model_version": "2.0.0"}, "no 'config' metadata"),
        ({"config": "{not json"}, "'config' metadata is not JSON"),
        ({"config": json.dumps({"vae": {}})}, "no 'transformer' section"),
        ({"config": json.dumps(ltx2_config("tiny")), "model_version": "2.3.0"}, LTX23),
    ],
)
def test_config_metadata_problems_are_refused(tiny, tmp_path, metadata, message):
    with pytest.raises(CheckpointError, match=message.replace("(", r"\(").replace(")", r"\)")):
        inspect_checkpoint(_variant(tiny, tmp_path, metadata=metadata))


def test_ltx23_config_is_refused_whatever_the_version_says(tiny, tmp_path):
    config = ltx2_config("tiny")
    config["transformer"]["caption_proj_before_connector"] = True
    path = _variant(tiny, tmp_path, metadata={"config": json.dumps(config), "model_version": "2.0.0"})
    with pytest.raises(CheckpointError) as err:
        inspect_checkpoint(path)
    assert str(err.value) == f"{path}: {LTX23}"


def test_a_config_ltx_core_rejects_is_refused(tiny, tmp_path):
    config = ltx2_config("tiny")
    config["transformer"]["activation_fn"] = "relu"
    with pytest.raises(CheckpointError, match="not an LTX-2 19B config"):
        inspect_checkpoint(_variant(tiny, tmp_path, metadata={"config": json.dumps(config)}))


def test_the_first_missing_tensor_is_named_with_its_shape(tiny, tmp_path):
    drop = ("vae.decoder.conv_out.conv.weight", "model.diffusion_model.transformer_blocks.1.attn2.to_k.weight")
    with pytest.raises(CheckpointError) as err:
        inspect_checkpoint(_variant(tiny, tmp_path, drop=drop))
    message = str(err.value)
    assert "tensor model.diffusion_model.transformer_blocks.1.attn2.to_k.weight (expected shape [32, 32])" in message
    assert "is missing" in message and "vae.decoder" not in message and "\n" not in message


def test_a_misshapen_tensor_is_named_with_both_shapes(tiny, tmp_path):
    bad = {"model.diffusion_model.patchify_proj.weight": torch.zeros(128, 32, dtype=torch.bfloat16)}
    with pytest.raises(CheckpointError, match=r"patchify_proj.weight has shape \[128, 32\], expected \[32, 128\]"):
        inspect_checkpoint(_variant(tiny, tmp_path, replace=bad))


def test_fp8_linear_weights_with_scales_and_official_extras_are_accepted(tiny, tmp_path):
    name = "model.diffusion_model.transformer_blocks.0.attn1.to_q.weight"
    weight = tiny[1][name].float()
    scale = weight.abs().max() / 448
    extra = {
        name: (weight / scale).to(torch.float8_e4m3fn),
        name + "_scale": scale.reshape(()),
        name.replace(".weight", ".input_scale"): torch.tensor(1.0),
        **{k: torch.zeros(128, dtype=torch.bfloat16) for k in OFFICIAL_EXTRAS},
    }
    info = inspect_checkpoint(_variant(tiny, tmp_path, replace=extra))
    assert info.quantized
    assert set(info.extra) == {name + "_scale", name.replace(".weight", ".input_scale"), *OFFICIAL_EXTRAS}


@pytest.mark.parametrize(
    ("name", "tensor"),
    [
        ("vae.decoder.conv_in.conv.weight", lambda t: t.to(torch.float8_e4m3fn)),  # a conv, not a Linear
        ("model.diffusion_model.patchify_proj.bias", lambda t: t.to(torch.int8)),
        ("model.diffusion_model.proj_out.weight", lambda t: t.to(torch.int64)),
    ],
)
def test_eight_bit_or_integer_tensors_outside_linear_weights_are_refused(tiny, tmp_path, name, tensor):
    with pytest.raises(CheckpointError, match=f"tensor {name} is "):
        inspect_checkpoint(_variant(tiny, tmp_path, replace={name: tensor(tiny[1][name])}))


def test_feature_extractor_width_is_checked_against_the_gemma(tiny, tiny_dir):
    with pytest.raises(CheckpointError, match=r"aggregate_embed.weight has shape \[32, 128\], expected \[32, 188160\]"):
        inspect_checkpoint(tiny[0], gemma_config("full")["text_config"])
    info = inspect_checkpoint(tiny[0], gemma_config("tiny")["text_config"])
    gemma = inspect_gemma_folder(tiny_dir / "gemma")
    check_text_encoder_fits(info, gemma)
    big = dataclasses.replace(gemma, text_config=gemma_config("full")["text_config"])
    with pytest.raises(CheckpointError, match=r"takes 128 features but the Gemma .* gives 188160 \(3840 x 49 layers\)"):
        check_text_encoder_fits(info, big)


@pytest.fixture
def gemma(tiny_dir, tmp_path) -> Path:
    folder = tmp_path / "gemma"
    shutil.copytree(tiny_dir / "gemma", folder)
    return folder


def _rewrite_shard(folder: Path, drop=(), replace=None) -> None:
    shard = folder / "model-00001-of-00001.safetensors"
    tensors = {k: v for k, v in safetensors.torch.load_file(shard).items() if k not in drop}
    tensors.update(replace or {})
    safetensors.torch.save_file(tensors, shard, metadata={"format": "pt"})


def test_generated_gemma_folder_passes(gemma):
    info = inspect_gemma_folder(gemma)
    assert info.shards == (gemma / "model-00001-of-00001.safetensors",)
    assert info.tokenizer_dir == gemma and info.has_vision
    assert (info.text_config["hidden_size"], info.text_config["num_hidden_layers"]) == (32, 3)


def test_gemma_folder_problems_are_refused(gemma, tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        inspect_gemma_folder(tmp_path / "nowhere")
    (gemma / "config.json").rename(gemma / "config.bak")
    with pytest.raises(CheckpointError, match="has no config.json"):
        inspect_gemma_folder(gemma)
    (gemma / "config.json").write_text(json.dumps({"model_type": "gemma3_text", "hidden_size": 32}))
    with pytest.raises(CheckpointError, match="not a Gemma 3"):
        inspect_gemma_folder(gemma)
    (gemma / "config.bak").rename(gemma / "config.json")
    (gemma / "tokenizer.model").unlink()
    assert inspect_gemma_folder(gemma).tokenizer_dir == gemma  # tokenizer.json alone is enough
    (gemma / "tokenizer.json").unlink()
    with pytest.raises(CheckpointError, match="no tokenizer.model or tokenizer.json"):
        inspect_gemma_folder(gemma)


def test_gemma_folder_without_weights_is_refused(gemma):
    (gemma / "model-00001-of-00001.safetensors").unlink()
    with pytest.raises(CheckpointError, match=r"no model\*.safetensors"):
        inspect_gemma_folder(gemma)


def test_gemma_language_tensors_missing_or_misshapen_are_named(gemma):
    name = "language_model.model.layers.1.mlp.down_proj.weight"
    _rewrite_shard(gemma, drop=(name, "language_model.model.layers.2.mlp.down_proj.weight"))
    with pytest.raises(CheckpointError, match=rf"tensor {name} \(expected shape \[32, 64\]\) is missing"):
        inspect_gemma_folder(gemma)
    _rewrite_shard(gemma, replace={name: torch.zeros(64, 32, dtype=torch.bfloat16)})
    with pytest.raises(CheckpointError, match=rf"{name} has shape \[64, 32\], expected \[32, 64\]"):
        inspect_gemma_folder(gemma)


def test_gemma_without_vision_tower_passes_but_says_so(gemma):
    shard = gemma / "model-00001-of-00001.safetensors"
    names = [k for k in read_header(shard).tensors if not k.startswith("language_model.")]
    _rewrite_shard(gemma, drop=names)
    assert not inspect_gemma_folder(gemma).has_vision


def _sparse_safetensors(path: Path, shapes: dict[str, tuple[int, ...]], metadata: dict[str, str]) -> None:
    """A header-only safetensors file of the full size: a sparse file, no disk blocks for the data."""
    doc: dict = {"__metadata__": metadata}
    offset = 0
    for name, shape in shapes.items():
        size = math.prod(shape) * 2
        doc[name] = {"dtype": "BF16", "shape": list(shape), "data_offsets": [offset, offset + size]}
        offset += size
    raw = json.dumps(doc).encode()
    raw += b" " * (-len(raw) % 8)
    with path.open("wb") as f:
        f.write(len(raw).to_bytes(8, "little") + raw)
        f.truncate(8 + len(raw) + offset)


def test_full_size_official_layout_passes_from_headers_alone(tmp_path):
    """An ltx-2-19b-dev-shaped file (43 GB, sparse) and a Gemma 3 12B folder validate in seconds."""
    shapes = {name: shape for name, (shape, _) in expected_tensors(ltx2_config("full")).items()}
    shapes.update({name: (128,) for name in OFFICIAL_EXTRAS})
    metadata = {"config": json.dumps(ltx2_config("full")), "model_version": "2.0.0"}
    ckpt = tmp_path / "ltx-2-19b-dev.safetensors"
    _sparse_safetensors(ckpt, shapes, metadata)
    plan = gemma_folder_plan("full")
    folder = tmp_path / "gemma-3-12b-it"
    folder.mkdir()
    for name in ("config.json", "tokenizer.model", "preprocessor_config.json"):
        (folder / name).write_bytes(plan.files[name])
    for shard in plan.shards:
        _sparse_safetensors(folder / shard.file_name, {n: s for n, (s, _) in shard.tensors.items()}, {"format": "pt"})
    start = time.perf_counter()
    info = inspect_checkpoint(ckpt)
    gemma = inspect_gemma_folder(folder)
    check_text_encoder_fits(info, gemma)
    assert time.perf_counter() - start < 10
    assert ckpt.stat().st_size > 40e9 and set(info.extra) == set(OFFICIAL_EXTRAS)
    assert len(gemma.shards) == 5 and gemma.has_vision and gemma.text_config["num_hidden_layers"] == 48


def test_an_unchanged_file_s_header_is_parsed_once_and_a_rewritten_one_again(tiny_dir, tmp_path):
    from ltx2_edge.checkpoint.header import read_header

    path = tmp_path / "copy.safetensors"
    shutil.copyfile(tiny_dir / "ltx2.safetensors", path)
    first = read_header(path)
    assert read_header(path) is first
    raw = bytearray(path.read_bytes())
    path.write_bytes(raw[:-2])  # truncated: must be refused, not served from the cache
    with pytest.raises(CheckpointError, match="truncated"):
        read_header(path)
    path.write_bytes(raw)
    os.utime(path, ns=(1, 1))  # a new modification time: parsed again
    again = read_header(path)
    assert again is not first and again.tensors == first.tensors
