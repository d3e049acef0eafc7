"""Pre-quantized files: layout and bytes, bit-exact round trip with on-the-fly quantization, memory while
loading and converting, refusal of corrupt scales and mismatched policies, Lightricks' FP8 format, Gemma folders."""

from __future__ import annotations

import copy
import json
import tracemalloc
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

import ltx2_edge  # noqa: F401
from ltx2_edge.checkpoint.configs import ltx2_config
from ltx2_edge.checkpoint.header import read_header
from ltx2_edge.errors import CheckpointError, RequestError
from ltx2_edge.quant import convert
from ltx2_edge.quant.apply import quantize_model_
from ltx2_edge.quant.convert import quantize_checkpoint, quantize_gemma_folder
from ltx2_edge.quant.linear import Fp8Linear, QuantLinear
from ltx2_edge.quant.policy import QuantPolicy
from ltx2_edge.quant.quantized_file import (
    METADATA_KEY,
    check_quantized_file,
    load_quantized_linear_weights,
    load_quantized_linears_,
)

PREFIX = "model.diffusion_model."
EXTRA = {  # tensors an official file holds beside the transformer; none may change
    "model.diffusion_model.video_embeddings_connector.transformer_1d_blocks.0.attn1.to_q.weight": (32, 32),
    "text_embedding_projection.aggregate_embed.weight": (32, 128),
    "vae.decoder.conv_in.conv.weight": (8, 128, 3, 3, 3),
}


def _tiny_model(device: str = "cpu") -> torch.nn.Module:
    from ltx_core.model.transformer import LTXModelConfigurator

    with torch.device(device):
        model = LTXModelConfigurator.from_config(ltx2_config("tiny"))
    if device != "meta":
        model = model.to_empty(device=device)  # ltx-core builds the caption projections on meta
        g = torch.Generator().manual_seed(0)
        with torch.no_grad():
            for p in model.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * 0.1)
    return model.to(torch.bfloat16)


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, torch.nn.Module]:
    model = _tiny_model()
    tensors = {PREFIX + k: v.contiguous() for k, v in model.state_dict().items()}
    g = torch.Generator().manual_seed(1)
    tensors.update({k: torch.randn(s, generator=g).to(torch.bfloat16) for k, s in EXTRA.items()})
    path = tmp_path_factory.mktemp("src") / "ltx2.safetensors"
    save_file(tensors, str(path), metadata={"config": json.dumps(ltx2_config("tiny")), "model_version": "2.0.0"})
    return path, model


def _raw(path: Path, name: str) -> bytes:
    info = read_header(path).tensors[name]
    with path.open("rb") as f:
        f.seek(info.begin)
        return f.read(info.nbytes)


@pytest.mark.parametrize("precision", ["fp8", "int8"])
def test_converted_file_layout_and_bytes(source, tmp_path: Path, precision: str) -> None:
    src, _ = source
    dst = tmp_path / "q.safetensors"
    calls: list[tuple[int, int]] = []
    count = quantize_checkpoint(src, dst, precision, progress=lambda d, t: calls.append((d, t)))
    assert count == 2 * 20  # two tiny blocks, 20 candidate Linears each (A/V cross-attention kept)
    before, after = read_header(src), read_header(dst)
    want = {"fp8": "F8_E4M3", "int8": "I8"}[precision]
    quantized = {n for n, t in after.tensors.items() if t.dtype == want}
    assert len(quantized) == 40 and all(n.startswith(PREFIX + "transformer_blocks.") for n in quantized)
    assert not any("_to_" in n for n in quantized)  # audio_to_video_attn / video_to_audio_attn stay BF16
    names = list(after.tensors)
    for name, info in before.tensors.items():
        out = after.tensors[name]
        assert out.shape == info.shape
        if name in quantized:
            scale = after.tensors[name + "_scale"]
            assert (scale.dtype, scale.shape) == ("F32", (info.shape[0],))
            assert names[names.index(name) + 1] == name + "_scale"  # each scale right after its weight
        else:
            assert out.dtype == info.dtype and _raw(dst, name) == _raw(src, name)
    assert len(after.tensors) == len(before.tensors) + 40
    assert after.metadata["config"] == before.metadata["config"] and after.metadata["model_version"] == "2.0.0"
    assert json.loads(after.metadata[METADATA_KEY])["precision"] == precision
    data_bytes = after.nbytes()
    assert calls[-1] == (data_bytes, data_bytes) and all(a[0] <= b[0] for a, b in zip(calls, calls[1:], strict=False))
    with safe_open(str(dst), framework="pt") as f:  # the reference reader accepts the file
        assert set(f.keys()) == set(after.tensors)
        assert f.get_tensor(sorted(quantized)[0]).dtype == {"fp8": torch.float8_e4m3fn, "int8": torch.int8}[precision]


@pytest.mark.parametrize("precision", ["fp8", "int8"])
def test_file_round_trip_equals_on_the_fly_quantization(source, tmp_path: Path, precision: str) -> None:
    src, model = source
    dst = tmp_path / "q.safetensors"
    quantize_checkpoint(src, dst, precision)
    on_the_fly = copy.deepcopy(model)
    quantize_model_(on_the_fly, QuantPolicy(precision))
    from_file = _tiny_model("meta")
    report = load_quantized_linears_(from_file, read_header(dst), PREFIX, policy=QuantPolicy(precision))
    assert report.quantized == 40 and report.precision == precision
    assert set(report.kept.values()) == {"bf16 in file"} and len(report.kept) == 16 + 26  # 2 blocks x 8 A/V + top
    layers = {n: m for n, m in on_the_fly.named_modules() if isinstance(m, QuantLinear)}
    assert len(layers) == 40
    for name, a in layers.items():
        b = from_file.get_submodule(name)
        assert type(b) is type(a)
        assert torch.equal(a.weight.view(torch.uint8), b.weight.view(torch.uint8))  # bit for bit
        assert torch.equal(a.weight_scale, b.weight_scale) and torch.equal(a.bias, b.bias)
    block = load_quantized_linear_weights(read_header(dst), PREFIX + "transformer_blocks.1.")  # one block's layers
    assert len(block) == 20 and block["ff.net.2"].precision == precision
    assert torch.equal(block["ff.net.2"].scale, layers["transformer_blocks.1.ff.net.2"].weight_scale)
    x = torch.randn(3, 32).to(torch.bfloat16)
    name = "transformer_blocks.1.attn1.to_q"
    assert torch.equal(on_the_fly.get_submodule(name)(x), from_file.get_submodule(name)(x))


class _Allocations(TorchDispatchMode):
    """Records every tensor an op creates (outputs that do not alias an input): (dtype, bytes, elements)."""

    def __init__(self) -> None:
        super().__init__()
        self.created: list[tuple[torch.dtype, int, int]] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        inputs = {t.untyped_storage().data_ptr() for t in tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)}
        for t in tree_leaves(out):
            if isinstance(t, torch.Tensor) and t.untyped_storage().data_ptr() not in inputs:
                self.created.append((t.dtype, t.untyped_storage().nbytes(), t.numel()))
        return out


def test_loading_a_quantized_file_makes_no_bf16_copy(source, tmp_path: Path) -> None:
    src, _ = source
    dst = tmp_path / "q.safetensors"
    quantize_checkpoint(src, dst, "fp8")
    model = _tiny_model("meta")
    with _Allocations() as seen:
        load_quantized_linears_(model, read_header(dst), PREFIX)
    layers = [m for m in model.modules() if isinstance(m, Fp8Linear)]
    assert len(layers) == 40
    for m in layers:
        assert (m.weight.dtype, m.weight_scale.dtype, m.bias.dtype) == (
            torch.float8_e4m3fn,
            torch.float32,
            torch.bfloat16,
        )
    weight_bytes = sum(m.weight.numel() for m in layers)
    scale_bytes = sum(4 * m.out_features for m in layers)
    bias_bytes = sum(2 * m.out_features for m in layers)
    raw = sum(n for dt, n, _ in seen.created if dt == torch.uint8)
    # File bytes are read once into uint8 buffers that become the layers' tensors (scales twice: checked, then
    # loaded); nothing is ever converted to a float dtype on the way.
    assert raw == weight_bytes + 2 * scale_bytes + bias_bytes
    # Everything else is the finite/positive check on scales: never larger than one layer's scale vector.
    assert max(numel for dt, _, numel in seen.created if dt != torch.uint8) <= max(m.out_features for m in layers)
    print(
        f"\nloaded {weight_bytes} weights in {raw} bytes read: {raw / weight_bytes:.3f} bytes/weight (32-wide layers)"
    )


def test_conversion_streams(source, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "big.safetensors"
    g = torch.Generator().manual_seed(2)
    save_file(
        {
            "text_embedding_projection.aggregate_embed.weight": torch.randn(512, 4096, generator=g).bfloat16(),
            PREFIX + "transformer_blocks.0.attn1.to_q.weight": torch.randn(64, 64, generator=g).bfloat16(),
        },
        str(path),
    )
    monkeypatch.setattr(convert, "_COPY_CHUNK", 1 << 16)
    tracemalloc.start()
    with _Allocations() as seen:
        quantize_checkpoint(path, tmp_path / "q.safetensors", "int8")
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 512 * 1024  # the 4 MiB pass-through tensor went across in 64 KiB pieces
    assert max(n for _, n, _ in seen.created) <= 64 * 64 * 4  # the largest torch temporary: one weight in fp32


def _fp8_file(path: Path, scale: torch.Tensor | None, extra: dict | None = None) -> Path:
    name = PREFIX + "transformer_blocks.0.attn1.to_q"
    tensors = {name + ".weight": torch.randn(16, 32).to(torch.float8_e4m3fn), name + ".bias": torch.zeros(16)}
    if scale is not None:
        tensors[name + ".weight_scale"] = scale
    tensors.update(extra or {})
    save_file(tensors, str(path))
    return path


@pytest.mark.parametrize(
    ("scale", "message"),
    [
        (None, "weight_scale is missing for the F8_E4M3 weight"),
        (torch.ones(15), r"weight_scale is F32\[15\]; expected F32\[16\]"),
        (torch.ones(16, dtype=torch.float16), r"weight_scale is F16\[16\]; expected F32\[16\]"),
        (torch.tensor([1.0] * 15 + [float("nan")]), "1 non-finite or non-positive values"),
        (torch.tensor([0.0] * 2 + [1.0] * 14), r"2 non-finite or non-positive values \(first 0.0\)"),
        (torch.tensor(-0.5), r"1 non-finite or non-positive values \(first -0.5\)"),
    ],
)
def test_corrupt_scales_are_refused(tmp_path: Path, scale, message: str) -> None:
    header = read_header(_fp8_file(tmp_path / "bad.safetensors", scale))
    with pytest.raises(CheckpointError, match=message):
        check_quantized_file(header, PREFIX)
    with pytest.raises(CheckpointError, match=message):
        load_quantized_linears_(_tiny_model("meta"), header, PREFIX)


def test_recorded_policy_must_match(source, tmp_path: Path) -> None:
    src, _ = source
    dst = tmp_path / "q.safetensors"
    quantize_checkpoint(src, dst, "fp8")
    header = read_header(dst)
    assert check_quantized_file(header, PREFIX, QuantPolicy("fp8"))["transformer_blocks.0.ff.net.2"] == "fp8"
    with pytest.raises(CheckpointError, match=r"quantized as \[fp8, default keep-list\] but this run asks for "
                       r"\[fp8, default keep-list \+ \['ff'\]\]"):  # fmt: skip
        check_quantized_file(header, PREFIX, QuantPolicy.from_flags("fp8", keep_bf16=("ff",)))
    with pytest.raises(CheckpointError, match=r"this run asks for \[int8, default keep-list\]"):
        load_quantized_linears_(_tiny_model("meta"), header, PREFIX, policy=QuantPolicy("int8"))


def test_conversion_refusals(source, tmp_path: Path) -> None:
    src, _ = source
    dst = tmp_path / "q.safetensors"
    quantize_checkpoint(src, dst, "int8")
    with pytest.raises(RequestError, match=r"--out=.* the file exists"):
        quantize_checkpoint(src, dst, "int8")
    with pytest.raises(CheckpointError, match="is already quantized"):
        quantize_checkpoint(dst, tmp_path / "again.safetensors", "fp8")
    with pytest.raises(RequestError, match=r"--to='bf16' is not allowed: fp8 or int8"):
        quantize_checkpoint(src, tmp_path / "x.safetensors", "bf16")
    lightricks = _fp8_file(tmp_path / "lt.safetensors", torch.tensor(0.01))
    with pytest.raises(CheckpointError, match="transformer_blocks.0.attn1.to_q.weight is already F8_E4M3"):
        quantize_checkpoint(lightricks, tmp_path / "y.safetensors", "fp8")
    vae_only = tmp_path / "vae.safetensors"
    save_file({"vae.decoder.conv_in.conv.weight": torch.zeros(4, 4, 3, 3, 3)}, str(vae_only))
    with pytest.raises(CheckpointError, match=r"no weight in .*vae.safetensors matches the 8-bit candidates"):
        quantize_checkpoint(vae_only, tmp_path / "z.safetensors", "int8")
    assert not list(tmp_path.glob(".*partial*"))  # failed conversions leave nothing behind


def test_lightricks_per_tensor_fp8_file(tmp_path: Path) -> None:
    other = PREFIX + "transformer_blocks.1.ff.net.2"
    extra = {
        PREFIX + "transformer_blocks.0.attn1.to_q.input_scale": torch.tensor(0.02),
        other + ".weight": torch.randn(32, 128).to(torch.float8_e4m3fn),
        other + ".weight_scale": torch.tensor(0.003),
    }
    path = _fp8_file(tmp_path / "lt.safetensors", torch.tensor(0.01), extra)
    model = _tiny_model("meta")
    report = load_quantized_linears_(model, read_header(path), PREFIX)
    assert report.quantized == 2 and report.precision == "fp8"
    layer = model.transformer_blocks[1].ff.net[2]
    assert isinstance(layer, Fp8Linear) and layer.weight_scale.shape == (32,)
    with safe_open(str(path), framework="pt") as f:
        stored = f.get_tensor(other + ".weight")
    assert torch.equal(layer.weight.view(torch.uint8), stored.view(torch.uint8))
    assert torch.equal(layer.dequantize(), stored.float() * torch.tensor(0.003))


def test_gemma_folder(tmp_path: Path) -> None:
    src = tmp_path / "gemma"
    src.mkdir()
    (src / "config.json").write_text('{"model_type": "gemma3"}')
    (src / "tokenizer.json").write_text('{"version": "1.0"}')
    g = torch.Generator().manual_seed(3)

    def layer(i: int) -> dict[str, torch.Tensor]:
        p = f"language_model.model.layers.{i}."
        shapes = {"self_attn.q_proj": (32, 32), "self_attn.k_proj": (16, 32), "self_attn.v_proj": (16, 32)}
        shapes |= {"self_attn.o_proj": (32, 32), "mlp.gate_proj": (64, 32), "mlp.up_proj": (64, 32)}
        shapes |= {"mlp.down_proj": (32, 64), "input_layernorm": (32,)}
        return {p + k + ".weight": torch.randn(s, generator=g).bfloat16() for k, s in shapes.items()}

    shard1 = {"language_model.model.embed_tokens.weight": torch.randn(256, 32).bfloat16(), **layer(0)}
    shard2 = {**layer(1), "vision_tower.vision_model.encoder.layers.0.mlp.fc1.weight": torch.randn(16, 16).bfloat16()}
    for name, tensors in (("model-00001-of-00002.safetensors", shard1), ("model-00002-of-00002.safetensors", shard2)):
        save_file(tensors, str(src / name), metadata={"format": "pt"})
    index = {"metadata": {"total_size": 0}, "weight_map": {}}
    for name, tensors in (("model-00001-of-00002.safetensors", shard1), ("model-00002-of-00002.safetensors", shard2)):
        index["weight_map"].update({k: name for k in tensors})
    (src / "model.safetensors.index.json").write_text(json.dumps(index))

    dst = tmp_path / "gemma-int8"
    calls: list[tuple[int, int]] = []
    assert quantize_gemma_folder(src, dst, "int8", progress=lambda d, t: calls.append((d, t))) == 14
    assert (dst / "tokenizer.json").read_bytes() == (src / "tokenizer.json").read_bytes()
    assert (dst / "config.json").read_bytes() == (src / "config.json").read_bytes()
    new_index = json.loads((dst / "model.safetensors.index.json").read_text())
    shards = {s: read_header(dst / s) for s in set(new_index["weight_map"].values())}
    assert new_index["metadata"]["total_size"] == sum(h.nbytes() for h in shards.values())
    for name, shard in new_index["weight_map"].items():
        assert name in shards[shard].tensors
    scales = [n for n in new_index["weight_map"] if n.endswith(".weight_scale")]
    assert len(scales) == 14 and new_index["weight_map"][scales[0]] == new_index["weight_map"][scales[0][:-6]]
    tensors = {k: v for h in shards.values() for k, v in h.tensors.items()}
    assert tensors["vision_tower.vision_model.encoder.layers.0.mlp.fc1.weight"].dtype == "BF16"
    assert tensors["language_model.model.embed_tokens.weight"].dtype == "BF16"
    assert tensors["language_model.model.layers.1.mlp.down_proj.weight"].dtype == "I8"
    assert calls[-1][0] == calls[-1][1] and all(a[0] <= b[0] for a, b in zip(calls, calls[1:], strict=False))
    with pytest.raises(RequestError, match="--out=.* the folder exists"):
        quantize_gemma_folder(src, dst, "int8")


@pytest.mark.slow
def test_generated_tiny_checkpoint_and_gemma_folder(tiny_dir: Path, tmp_path: Path) -> None:
    from ltx2_edge.checkpoint.validate import inspect_checkpoint, inspect_gemma_folder
    from ltx2_edge.quant.precision import matching_modules

    dst = tmp_path / "ltx2-fp8.safetensors"
    assert quantize_checkpoint(tiny_dir / "ltx2.safetensors", dst, "fp8") == 40
    info = inspect_checkpoint(dst)  # the checkpoint validator accepts the converted file
    assert info.quantized and len(info.extra) == 40
    layout = check_quantized_file(read_header(dst), PREFIX, QuantPolicy("fp8"))
    planned = matching_modules(_tiny_model("meta"), QuantPolicy("fp8"))
    assert layout == {name: p for name, p in planned.items() if p == "fp8"}  # file and module match agree

    gemma = tmp_path / "gemma-int8"
    assert quantize_gemma_folder(tiny_dir / "gemma", gemma, "int8") == 3 * 7  # 3 tiny layers x q,k,v,o,gate,up,down
    assert inspect_gemma_folder(gemma).shards[0].name == "model-00001-of-00001.safetensors"
    assert len(check_quantized_file(read_header(gemma / "model-00001-of-00001.safetensors"))) == 21
