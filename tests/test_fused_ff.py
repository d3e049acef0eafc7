"""The feed-forward's GELU fused into the 8-bit activation quantization (accel/fused_ff.py), on the CPU.

The Triton kernel itself needs a GPU (bench/fused_ff_check.py compares it with the torch reference there); here:
the reference against eager GELU + quantization, the op's fake registration and compilation without graph
breaks, and the fused FeedForwards of the tiny INT8 model against the unfused ones, eager and compiled.
"""

from __future__ import annotations

import copy
import math
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import ltx2_edge  # noqa: F401  (torchaudio placeholder before ltx_core)
from ltx2_edge.accel import engine as accel_engine
from ltx2_edge.accel import fused_ff
from ltx2_edge.accel.engine import AccelSettings
from ltx2_edge.guidance import Guidance
from ltx2_edge.quant import kernels
from ltx2_edge.quant.linear import QuantLinear
from ltx2_edge.quant.policy import QuantPolicy
from ltx2_edge.stages.denoise import Contexts, denoise, official_sigmas
from ltx2_edge.stages.latents import noised_latents, pixel_shape

OP = torch.ops.ltx2_edge.gelu_quant_rows


def _pre_activation(rows: int, cols: int, dtype: torch.dtype, seed: int = 3) -> torch.Tensor:
    h = torch.randn(rows, cols, generator=torch.Generator().manual_seed(seed)) * 2
    h[0, :4] = torch.tensor([-9.0, -3.5, 0.0, 6.0])  # deep negative tail, an exact zero, a large positive value
    return h.to(dtype)


def _fp8_ulps(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    # e4m3 bit patterns are ordered by magnitude within a sign: distance in codes = distance in ulps.
    def signed(q: torch.Tensor) -> torch.Tensor:
        bits = q.view(torch.uint8).int()
        return torch.where(bits >= 128, -(bits - 128), bits)

    return (signed(a) - signed(b)).abs()


def test_gelu_reference_is_eager_gelu_up_to_its_negative_tail():
    h = _pre_activation(64, 2048, torch.float32)
    torch.testing.assert_close(kernels.gelu_tanh(h), F.gelu(h, approximate="tanh"), rtol=1e-6, atol=1e-6)
    hb = h.bfloat16()
    ours, eager = kernels.gelu_tanh(hb), F.gelu(hb, approximate="tanh")
    assert ours.dtype == torch.bfloat16  # rounded to the input's dtype, as eager's GELU output is
    differ = ours != eager
    # Only where eager's 1 + tanh(u) cancels (x < -3), on values too small to move an 8-bit row quantization.
    assert 0 < int(differ.sum()) < 0.03 * h.numel()
    assert hb[differ].float().max() < -2.9
    assert torch.maximum(ours[differ].abs(), eager[differ].abs()).float().max() < 0.004


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_gelu_quantization_against_eager_gelu_then_quantize_rows(dtype):
    h = _pre_activation(64, 2048, dtype)
    for precision in ("int8", "fp8"):
        q, scale = kernels.gelu_quantize_rows(h, precision)
        q_eager, scale_eager = kernels.quantize_rows(F.gelu(h, approximate="tanh"), precision)
        assert q.dtype == kernels.QDTYPE[precision] and q.shape == h.shape and scale.shape == (64, 1)
        assert torch.equal(scale, scale_eager)  # the row's amax comes from large positive values: exact
        if precision == "int8":
            assert torch.equal(q, q_eager)  # every difference is below half a quantization step
        else:
            ulps = _fp8_ulps(q, q_eager)
            assert int(ulps.max()) <= 1 and float((ulps > 0).float().mean()) < 2e-4
            assert torch.all((q_eager.float() * scale)[ulps > 0].abs() < 0.005)


def test_op_fake_registration_and_opcheck():
    for precision, qdtype in kernels.QDTYPE.items():
        q, scale = OP(torch.empty(5, 64, dtype=torch.bfloat16, device="meta"), precision)
        assert (q.shape, q.dtype, q.device.type) == ((5, 64), qdtype, "meta")
        assert (scale.shape, scale.dtype) == ((5, 1), torch.float32)
    with pytest.raises(ValueError, match="precision='nf4' is not allowed: one of fp8, int8"):
        OP(torch.empty(5, 64, device="meta"), "nf4")
    with pytest.raises(ValueError, match=r"must be 2-D \[tokens, features\], got shape \[2, 5, 64\]"):
        OP(torch.empty(2, 5, 64, device="meta"), "int8")
    h = _pre_activation(8, 64, torch.bfloat16)
    torch.library.opcheck(OP, (h, "int8"))  # schema, fake tensor and AOT dispatch agree with the CPU kernel
    q, scale = OP(h, "fp8")
    q_ref, scale_ref = kernels.gelu_quantize_rows(h, "fp8")
    assert torch.equal(q.view(torch.uint8), q_ref.view(torch.uint8)) and torch.equal(scale, scale_ref)


@pytest.mark.parametrize("backend", ["aot_eager", "inductor"])
def test_op_compiles_whole_without_graph_breaks(backend, tmp_path, monkeypatch):
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "inductor"))

    def f(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return OP(x * 1.5 + 0.25, "int8")

    h = _pre_activation(16, 128, torch.float32)
    torch._dynamo.reset()
    q, scale = torch.compile(f, backend=backend, fullgraph=True, dynamic=False)(h)
    q_ref, scale_ref = f(h)
    assert torch.equal(q, q_ref) and torch.equal(scale, scale_ref)


@pytest.fixture(scope="module")
def int8_model(tiny_dir):
    from ltx2_edge.models.loaders import load_transformer

    policy = QuantPolicy.from_flags("int8")
    return load_transformer(tiny_dir / "ltx2.safetensors", torch.device("cpu"), torch.float32, policy)


def _ffs(model: nn.Module) -> list[nn.Module]:
    return [m for _, m in fused_ff._feed_forwards(model)]


def test_fuse_on_cpu_fuses_nothing_and_says_why(int8_model, tiny_config):
    assert len(_ffs(int8_model)) == 2 * tiny_config["transformer"]["num_layers"]  # ff and audio_ff per block
    assert "runs on CUDA only (this run is on cpu)" in fused_ff.fuse_support(int8_model, "cpu")
    assert fused_ff.fuse_feed_forwards(int8_model, "cpu") == 0
    assert all("forward" not in vars(ff) and fused_ff._SAVED not in vars(ff) for ff in _ffs(int8_model))


def test_fused_feed_forwards_match_unfused_and_unfuse_restores(int8_model, monkeypatch):
    monkeypatch.setattr(fused_ff, "_kernel_support", lambda device_type: None)  # the op's CPU kernel stands in
    ffs = _ffs(int8_model)
    g = torch.Generator().manual_seed(5)
    inputs = [torch.randn(2, 7, ff.net[0].proj.in_features, generator=g) for ff in ffs]
    with torch.inference_mode():
        before = [ff(x) for ff, x in zip(ffs, inputs, strict=True)]
        assert fused_ff.fuse_feed_forwards(int8_model, "cpu") == len(ffs)
        assert fused_ff.fuse_support(int8_model, "cpu").endswith("is already fused: no FeedForward is fused")
        for ff, x, y0 in zip(ffs, inputs, before, strict=True):
            y = ff(x)
            # Bit for bit what the reference GELU feeds the unchanged layer; eager GELU differs in the last bits.
            assert torch.equal(y, ff.net[2](kernels.gelu_tanh(ff.net[0].proj(x))))
            torch.testing.assert_close(y, y0, rtol=1e-5, atol=1e-5)
        fused_ff.unfuse_feed_forwards(int8_model)
        assert all("forward" not in vars(ff) and fused_ff._SAVED not in vars(ff) for ff in ffs)
        assert all(torch.equal(ff(x), y0) for ff, x, y0 in zip(ffs, inputs, before, strict=True))


def test_one_bf16_output_linear_means_nothing_is_fused(int8_model, monkeypatch):
    monkeypatch.setattr(fused_ff, "_kernel_support", lambda device_type: None)
    model = copy.deepcopy(int8_model)
    block = model.velocity_model.transformer_blocks[1]
    block.audio_ff.net[2] = nn.Linear(block.audio_ff.net[2].in_features, block.audio_ff.net[2].out_features)
    assert fused_ff.fuse_feed_forwards(model, "cpu") == 0
    reason = fused_ff.fuse_support(model, "cpu")
    assert reason == ("velocity_model.transformer_blocks.1.audio_ff has a BF16 output Linear (kept by the "
                      "quantization policy): no FeedForward is fused")  # fmt: skip
    assert all("forward" not in vars(ff) for ff in _ffs(model))
    block.audio_ff.net[1] = nn.Dropout(0.1)  # training mode by default: active dropout is refused too
    assert "has Dropout (active dropout" in fused_ff._why_not(block.audio_ff, "cpu")


def test_compiled_blocks_with_fused_feed_forwards_share_one_graph(int8_model, tiny_config, monkeypatch):
    # The engine fuses before compiling and unfuses when it closes; CPU compiles with aot_eager here.
    monkeypatch.setattr(fused_ff, "_kernel_support", lambda device_type: None)
    compile_blocks = accel_engine.compile_blocks
    monkeypatch.setattr(accel_engine, "compile_blocks", lambda m, d: compile_blocks(m, d, backend="aot_eager"))
    ctx = Contexts(*(torch.randn(1, 16, tiny_config["transformer"]["caption_channels"],
                                 generator=torch.Generator().manual_seed(i)) for i in range(4)))  # fmt: skip
    setup = noised_latents(pixel_shape(64, 96, 17, 24.0), torch.Generator().manual_seed(10), torch.device("cpu"),
                           torch.float32)  # fmt: skip
    sigmas = official_sigmas(3, torch.device("cpu"))

    def run(accel: AccelSettings | None, stats: dict) -> tuple[torch.Tensor, torch.Tensor]:
        v, a = denoise(int8_model, replace(setup.video_state), replace(setup.audio_state), sigmas, ctx,
                       Guidance.preset_named("cfg"), accel=accel, accel_stats=stats)  # fmt: skip
        return v.latent, a.latent

    torch._dynamo.reset()
    v0, a0 = run(None, {})
    assert fused_ff.fuse_feed_forwards(int8_model, "cpu") == len(_ffs(int8_model))
    v_fused, a_fused = run(None, {})  # eager, fused
    fused_ff.unfuse_feed_forwards(int8_model)
    stats: dict = {}
    v1, a1 = run(AccelSettings(compile=True), stats)
    assert stats["fused_feed_forwards"] == len(_ffs(int8_model)) and stats["fused_ff_note"] is None
    assert stats["compiled_graphs"] == 1, stats["graph_breaks"]  # both blocks share one graph, the op inside it
    torch.testing.assert_close(v1, v_fused, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(a1, a_fused, rtol=1e-5, atol=1e-5)
    # Against eager GELU: a few INT8 activations round the other way (measured 88 dB video, 75 dB audio).
    for ref, out in ((v0, v1), (a0, a1)):
        assert 10 * math.log10(ref.pow(2).sum() / (out - ref).pow(2).sum()) > 65
    assert all("forward" not in vars(ff) for ff in _ffs(int8_model))
    assert all(isinstance(ff.net[2], QuantLinear) for ff in _ffs(int8_model))
