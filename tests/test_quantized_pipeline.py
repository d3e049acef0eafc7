"""Quantization inside the pipeline: on-the-fly and pre-quantized loading agree, and quantized runs make MP4s."""

from __future__ import annotations

import json

import pytest
import torch

from ltx2_edge import cli
from ltx2_edge.checkpoint.header import read_header
from ltx2_edge.models.loaders import load_transformer
from ltx2_edge.mp4.mux import probe_mp4
from ltx2_edge.quant.linear import QuantLinear
from ltx2_edge.quant.policy import QuantPolicy

CPU = torch.device("cpu")


@pytest.fixture(scope="module", params=["int8", "fp8"])
def prequantized(request, tiny_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp(f"q-{request.param}") / "ltx2-q.safetensors"
    argv = ["quantize", "--checkpoint-path", str(tiny_dir / "ltx2.safetensors"), "--to", request.param,
            "--out", str(out)]  # fmt: skip
    assert cli.main(argv) == 0
    return request.param, out


def test_prequantized_file_holds_8bit_weights_and_policy(prequantized):
    precision, path = prequantized
    header = read_header(path)
    eight = [t for t in header.tensors.values() if t.dtype in ("I8", "F8_E4M3")]
    assert eight and all(t.name.startswith("model.diffusion_model.transformer_blocks.") for t in eight)
    assert not any("audio_to_video_attn" in t.name or "video_to_audio_attn" in t.name for t in eight)
    assert all(t.name[: -len(".weight")] + ".weight_scale" in header.tensors for t in eight)
    recorded = json.loads(header.metadata["ltx2_edge_quantization"])
    assert recorded["precision"] == precision


def test_prequantized_load_equals_on_the_fly(prequantized, tiny_dir):
    precision, path = prequantized
    policy = QuantPolicy.from_flags(precision)
    fly = load_transformer(tiny_dir / "ltx2.safetensors", CPU, torch.float32, policy)
    pre = load_transformer(path, CPU, torch.float32, policy)
    fly_q = {n: m for n, m in fly.named_modules() if isinstance(m, QuantLinear)}
    pre_q = {n: m for n, m in pre.named_modules() if isinstance(m, QuantLinear)}
    assert fly_q.keys() == pre_q.keys() and len(fly_q) == fly.quant_report.quantized > 0
    for name, layer in fly_q.items():
        assert layer.weight.dtype == (torch.int8 if precision == "int8" else torch.float8_e4m3fn)
        assert torch.equal(layer.weight.view(torch.uint8), pre_q[name].weight.view(torch.uint8)), name
        assert torch.equal(layer.weight_scale.reshape(-1), pre_q[name].weight_scale.reshape(-1)), name
    kept = [n for n, m in pre.named_modules() if "audio_to_video_attn" in n and isinstance(m, torch.nn.Linear)]
    assert kept and all(pre.get_submodule(n).weight.dtype == torch.float32 for n in kept)


def test_prequantized_precision_mismatch_is_refused(prequantized, tiny_dir):
    from ltx2_edge.errors import CheckpointError

    precision, path = prequantized
    other = "fp8" if precision == "int8" else "int8"
    with pytest.raises(CheckpointError, match="--quantization"):
        load_transformer(path, CPU, torch.float32, QuantPolicy.from_flags(other))


@pytest.mark.parametrize("precision", ["int8", "fp8", "bf16"])
def test_quantized_pipeline_makes_mp4_with_sound(precision, tiny_dir, tmp_path):
    out = tmp_path / f"{precision}.mp4"
    argv = ["generate", "--checkpoint-path", str(tiny_dir / "ltx2.safetensors"), "--gemma-root",
            str(tiny_dir / "gemma"), "--prompt", "rain", "--output-path", str(out), "--quiet", "--width", "64",
            "--height", "64", "--num-frames", "9", "--num-inference-steps", "2",
            "--quantization", precision]  # fmt: skip
    assert cli.main(argv) == 0
    probe = probe_mp4(out)
    assert probe.audio_codec == "aac" and probe.frames == 9
    report = json.loads(out.with_suffix(".report.json").read_text())
    assert report["quantization"]["precision"] == precision
    lines = report["stages"][1]["details"].get("quantization")
    if precision == "bf16":
        assert lines is None
    else:
        assert lines[0].startswith(f"40 Linear layers in {precision}")
