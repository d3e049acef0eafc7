"""Fp8Linear / Int8Linear and their kernels: quantization error bounds, output SNR, shapes, zero rows,
agreement of the CPU reference with the GPU kernels' arithmetic, and in-place model quantization."""

from __future__ import annotations

import math

import pytest
import torch

import ltx2_edge  # noqa: F401
from ltx2_edge.quant import kernels
from ltx2_edge.quant.apply import quantize_model_
from ltx2_edge.quant.linear import Fp8Linear, Int8Linear, QuantLinear
from ltx2_edge.quant.policy import QuantPolicy

CLASSES = {"fp8": Fp8Linear, "int8": Int8Linear}


def _snr_db(ref: torch.Tensor, y: torch.Tensor) -> float:
    ref, y = ref.double(), y.double()
    return 10 * math.log10(ref.pow(2).sum().item() / (y - ref).pow(2).sum().item())


def _rel(ref: torch.Tensor, y: torch.Tensor) -> float:
    return ((y.double() - ref.double()).norm() / ref.double().norm()).item()


def _linear(k: int, n: int, seed: int = 0, bias: bool = True) -> torch.nn.Linear:
    g = torch.Generator().manual_seed(seed)
    lin = torch.nn.Linear(k, n, bias=bias)
    with torch.no_grad():
        lin.weight.copy_(torch.randn(n, k, generator=g) / math.sqrt(k))
        if bias:
            lin.bias.copy_(torch.randn(n, generator=g) * 0.1)
    return lin


# Relative Frobenius error of W for Gaussian weights. FP8 e4m3 has 3 mantissa bits (~2.6% RMS whatever the
# scale); INT8's step is amax/127 with amax ~4-4.5 sigma for these row lengths (~0.8-0.95%).
@pytest.mark.parametrize(
    ("precision", "shape", "low", "high"),
    [
        ("fp8", (256, 4096), 0.025, 0.0275),
        ("fp8", (128, 16384), 0.025, 0.0275),
        ("int8", (256, 4096), 0.0080, 0.0092),
        ("int8", (128, 16384), 0.0088, 0.0100),
    ],
)
def test_weight_round_trip_error(precision: str, shape: tuple[int, int], low: float, high: float) -> None:
    w = torch.randn(shape, generator=torch.Generator().manual_seed(1))
    q, scale = kernels.quantize_weight(w, precision)
    assert q.dtype == kernels.QDTYPE[precision] and scale.dtype == torch.float32 and scale.shape == (shape[0],)
    assert torch.equal(scale, w.abs().amax(dim=1) / kernels.QMAX[precision])
    err = _rel(w, kernels.dequantize_weight(q, scale))
    assert low <= err <= high, err
    assert q.float().abs().amax() == kernels.QMAX[precision]  # every row uses the full range


def test_zero_rows_and_zero_tokens() -> None:
    w = torch.randn(8, 32)
    w[3] = 0
    for precision, cls in CLASSES.items():
        q, scale = kernels.quantize_weight(w, precision)
        assert scale[3] == 1.0 and q[3].float().abs().sum() == 0
        lin = torch.nn.Linear(32, 8)
        lin.weight.data.copy_(w)
        layer = cls.from_float(lin)
        x = torch.randn(4, 32)
        x[1] = 0
        y = layer(x)
        assert torch.isfinite(y).all()
        assert torch.equal(y[1], lin.bias.detach())  # a zero token gives exactly the bias
        assert torch.equal(y[:, 3], lin.bias.detach()[3].expand(4))


def test_non_finite_weights_are_refused() -> None:
    lin = torch.nn.Linear(16, 4)
    lin.weight.data[2, 5] = float("inf")
    with pytest.raises(ValueError, match="inf or NaN values in 1 of 4 rows"):
        Fp8Linear.from_float(lin)


# Output SNR vs the float layer, Gaussian weights and activations. W8A8 kernels quantize both sides (about
# 2.6% + 2.6% RMS for fp8, 0.8% + 0.8% for int8), weight-only ones the weight alone.
@pytest.mark.parametrize(
    ("kernel", "min_db", "max_db"),
    [
        ("fp8_simulated", 28.0, 29.5),
        ("fp8_rowwise", 28.0, 29.5),
        ("fp8_weight_only", 31.0, 32.5),
        ("int8_simulated", 38.5, 40.0),
        ("int8_int_mm", 38.5, 40.0),
        ("int8_weight_only", 41.3, 43.0),
    ],
)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_output_snr(kernel: str, min_db: float, max_db: float, dtype: torch.dtype) -> None:
    lin = _linear(1024, 256)
    x = torch.randn(2, 64, 1024, generator=torch.Generator().manual_seed(2)).to(dtype)
    ref = lin(x.float()).detach()  # the float layer on the same (possibly bf16-rounded) input
    layer = CLASSES[kernels.KERNELS[kernel].precision].from_float(lin, kernel=kernel)
    y = layer(x)
    assert y.dtype == dtype and y.shape == ref.shape
    assert min_db <= _snr_db(ref, y) <= max_db


def test_cpu_reference_matches_the_gpu_kernels_arithmetic() -> None:
    # torch's CPU builds implement _scaled_mm and _int_mm too: the simulated kernels must give what they give.
    lin = _linear(512, 384).to(torch.bfloat16)
    x = torch.randn(100, 512, generator=torch.Generator().manual_seed(3)).to(torch.bfloat16)
    w8 = Int8Linear.from_float(lin)
    args = (x, w8.weight, w8.weight_scale, w8.bias)
    assert torch.equal(kernels.int8_simulated(*args), kernels.int8_int_mm(*args))  # bit for bit
    f8 = Fp8Linear.from_float(lin)
    sim = kernels.fp8_simulated(x, f8.weight, f8.weight_scale, f8.bias).float()
    mm = kernels.fp8_rowwise(x, f8.weight, f8.weight_scale, f8.bias).float()
    # Only accumulation order and the bias' place in the epilogue differ: within a bf16 rounding or two.
    assert (sim - mm).abs().max() <= 2 * 2**-8 * sim.abs().max()
    assert _snr_db(sim, mm) > 50


@pytest.mark.parametrize("lead", [(), (7,), (2, 3, 5), (2, 1, 3, 4)])
@pytest.mark.parametrize("precision", ["fp8", "int8"])
def test_leading_dims(lead: tuple[int, ...], precision: str) -> None:
    layer = CLASSES[precision].from_float(_linear(64, 48))
    x = torch.randn(*lead, 64, generator=torch.Generator().manual_seed(4))
    y = layer(x)
    assert y.shape == (*lead, 48)
    assert torch.equal(y.reshape(-1, 48), layer(x.reshape(-1, 64)))
    with pytest.raises(ValueError, match="input has 63 features, this layer takes 64"):
        layer(torch.randn(2, 63))


def test_from_quantized_per_tensor_scale_and_checks() -> None:
    w = torch.randn(16, 32)
    s = w.abs().amax() / 448  # Lightricks' FP8 files: one scale for the whole tensor
    q = (w / s).to(torch.float8_e4m3fn)
    bias = torch.randn(16).to(torch.bfloat16)
    layer = Fp8Linear.from_quantized(q, s, bias)
    assert layer.weight.data_ptr() == q.data_ptr()  # used as stored, no copy
    assert layer.weight_scale.shape == (16,) and torch.equal(layer.weight_scale, s.expand(16))
    assert torch.equal(layer.dequantize(), q.float() * s)
    assert layer.bias.dtype == torch.bfloat16
    with pytest.raises(ValueError, match=r"weight must be a 2-D torch.int8 tensor, got torch.float8_e4m3fn\[16, 32\]"):
        Int8Linear.from_quantized(q, s)
    with pytest.raises(ValueError, match=r"weight_scale shape \[15\] is not \[16\], \[1\] or \[\] for 16 rows"):
        Fp8Linear.from_quantized(q, torch.ones(15))
    for bad in (0.0, -1.0, float("nan"), float("inf")):
        scale = torch.ones(16)
        scale[9] = bad
        with pytest.raises(ValueError, match=r"weight_scale\[9\] = .*: scales must be finite and > 0"):
            Fp8Linear.from_quantized(q, scale)


def test_from_float_keeps_dtypes_and_shell_loads_by_state_dict() -> None:
    lin = _linear(64, 32).to(torch.bfloat16)
    layer = Int8Linear.from_float(lin)
    assert (layer.weight.dtype, layer.weight_scale.dtype, layer.bias.dtype) == (
        torch.int8,
        torch.float32,
        torch.bfloat16,
    )
    assert not any(p.requires_grad for p in layer.parameters())
    shell = Int8Linear.empty(64, 32, bias=True)
    assert shell.weight.is_meta
    shell.load_state_dict(layer.state_dict(), assign=True)
    x = torch.randn(5, 64).to(torch.bfloat16)
    assert torch.equal(shell(x), layer(x))
    assert set(layer.state_dict()) == {"weight", "weight_scale", "bias"}


def test_kernel_choice_and_fallback_reasons(monkeypatch) -> None:
    from ltx2_edge.quant import triton_quant

    # With Triton on a CUDA device the fused kernels come first, with no note.
    monkeypatch.setattr(triton_quant, "available", lambda: True)
    assert kernels.choose_kernel("fp8", "cuda", 4096, 16384) == ("fp8_rowwise_fused", "")
    assert kernels.choose_kernel("int8", "cuda", 4096, 4096) == ("int8_int_mm_fused", "")
    # Without Triton the eager-quantization kernel of the same precision runs, and the note says why.
    monkeypatch.setattr(triton_quant, "available", lambda: False)
    name, note = kernels.choose_kernel("fp8", "cuda", 4096, 16384)
    assert name == "fp8_rowwise"
    reason = "fp8_rowwise_fused cannot run [16384x4096] on cuda (needs Triton and a CUDA device)"
    assert note == reason + ": fp8_rowwise runs instead"
    assert kernels.choose_kernel("fp8", "cpu", 4096, 4096) == ("fp8_simulated", "")
    name, note = kernels.choose_kernel("fp8", "cuda", 100, 64)
    assert name == "fp8_simulated"
    assert note == (
        "fp8_rowwise_fused cannot run [64x100] on cuda (needs Triton and a CUDA device); "
        "fp8_rowwise cannot run [64x100] on cuda (in_features=100 and out_features=64 must be multiples of 16): "
        "fp8_simulated runs instead"
    )
    with pytest.raises(ValueError, match="kernel='int8_int_mm' cannot run this layer on cuda: in_features=12"):
        kernels.choose_kernel("int8", "cuda", 12, 64, requested="int8_int_mm")
    with pytest.raises(ValueError, match="kernel='fp8_rowwise' is not allowed for int8 layers: one of int8_int_mm"):
        kernels.choose_kernel("int8", "cpu", 64, 64, requested="fp8_rowwise")


class _Toy(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.patchify_proj = _linear(32, 64, seed=5)
        self.transformer_blocks = torch.nn.ModuleList(
            torch.nn.ModuleDict({"attn1": _linear(64, 64, seed=6 + i), "audio_to_video_attn": _linear(64, 64)})
            for i in range(2)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.patchify_proj(x)
        for block in self.transformer_blocks:
            h = h + block["attn1"](h) + block["audio_to_video_attn"](h)
        return h


@pytest.mark.parametrize("precision", ["fp8", "int8"])
def test_quantize_model_in_place(precision: str) -> None:
    model = _Toy()
    x = torch.randn(3, 10, 32, generator=torch.Generator().manual_seed(7))
    ref = model(x).detach()
    kept = model.transformer_blocks[0]["audio_to_video_attn"]
    report = quantize_model_(model, QuantPolicy(precision))
    assert report.quantized == 2 and isinstance(model.transformer_blocks[1]["attn1"], QuantLinear)
    assert model.transformer_blocks[0]["audio_to_video_attn"] is kept  # kept layers are not touched
    assert report.kept == {
        "patchify_proj": "not a candidate",
        "transformer_blocks.0.audio_to_video_attn": "kept: audio_to_video_attn",
        "transformer_blocks.1.audio_to_video_attn": "kept: audio_to_video_attn",
    }
    assert report.params_quantized == 2 * 64 * 64 and report.params_kept == 32 * 64 + 2 * 64 * 64
    # fp32 model: 4 bytes a weight before; after, 1 byte a weight + a 4-byte scale per row.
    assert report.bytes_before - report.bytes_after == 2 * (64 * 64 * 3 - 64 * 4)
    assert report.kernels == {f"{precision}_simulated": 2}
    assert _snr_db(ref, model(x)) > (30 if precision == "fp8" else 40)
    again = quantize_model_(model, QuantPolicy(precision))  # idempotent: nothing left to do
    assert again.quantized == 2 and again.bytes_before == again.bytes_after == report.bytes_after
