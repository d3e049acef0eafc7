"""QuantPolicy: pattern semantics, exact layer selection on the full-size LTX-2 and Gemma 3 trees (on meta),
precision resolution per device, and the policy record round trip."""

from __future__ import annotations

import json
from collections import Counter

import pytest
import torch

import ltx2_edge  # noqa: F401  (torchaudio placeholder before ltx_core)
from ltx2_edge.checkpoint.configs import gemma_config, ltx2_config
from ltx2_edge.errors import RequestError
from ltx2_edge.quant.apply import quantize_model_
from ltx2_edge.quant.linear import Fp8Linear
from ltx2_edge.quant.policy import (
    DEFAULT_FP8_POLICY,
    DEFAULT_INT8_POLICY,
    DEFAULT_KEEP_BF16,
    LIGHTRICKS_FP8_POLICY,
    QuantPolicy,
    pattern_matches,
)
from ltx2_edge.quant.precision import matching_modules, resolve_precision

TOTAL_PARAMS = 18_876_174_592  # LTXModel at the 19B config, counted by ltx-core's own classes
V, A = 4096, 2048  # video and audio stream widths
# Per block: video attn1+attn2 (q, k, v, out), ff (up, down); audio the same at 2048 wide.
PER_BLOCK_8BIT = 8 * V * V + 2 * 4 * V * V + 8 * A * A + 2 * 4 * A * A  # 335,544,320
PER_BLOCK_AV = (A * V + A * A + A * A + V * A) + (A * A + A * V + A * V + A * A)  # a2v + v2a: 50,331,648


@pytest.fixture(scope="module")
def full_transformer() -> torch.nn.Module:
    from ltx_core.model.transformer import LTXModelConfigurator

    with torch.device("meta"):
        return LTXModelConfigurator.from_config(ltx2_config("full"))


def _family(name: str) -> str:
    parts = name.split(".")
    return parts[2] if parts[0] == "transformer_blocks" else "top-level"


@pytest.mark.parametrize(
    ("pattern", "name", "expected"),
    [
        ("attn1", "transformer_blocks.3.attn1.to_q", True),
        ("attn1", "transformer_blocks.3.audio_attn1.to_q", False),
        ("ff", "transformer_blocks.3.audio_ff.net.2", False),
        ("ff", "transformer_blocks.3.ff.net.2", True),
        ("transformer_blocks.0", "transformer_blocks.0.attn1.to_q", True),
        ("transformer_blocks.0", "transformer_blocks.10.attn1.to_q", False),
        ("transformer_blocks.4[3-7]", "transformer_blocks.45.ff.net.2", True),
        ("transformer_blocks.4[3-7]", "transformer_blocks.42.ff.net.2", False),
        ("transformer_blocks.4[!3-7]", "transformer_blocks.42.ff.net.2", True),
        ("transformer_blocks.?", "transformer_blocks.7.ff.net.2", True),
        ("transformer_blocks.?", "transformer_blocks.17.ff.net.2", False),
        ("transformer_blocks.*", "model.diffusion_model.transformer_blocks.3.attn1.to_q", True),
        ("transformer_blocks.*", "video_embeddings_connector.transformer_1d_blocks.0.attn1.to_q", False),
        ("transformer_blocks.*", "transformer_blocks", False),
        ("*adaln*", "av_ca_a2v_gate_adaln_single.linear", True),
        ("*scale_shift_table*", "transformer_blocks.0.scale_shift_table_a2v_ca_audio", True),
        ("proj_out", "audio_proj_out", False),
        ("language_model.model.layers.*", "language_model.model.layers.0.mlp.down_proj", True),
    ],
)
def test_pattern_semantics(pattern: str, name: str, expected: bool) -> None:
    assert pattern_matches(pattern, name) is expected


def test_default_policy_on_full_transformer(full_transformer: torch.nn.Module) -> None:
    plan = matching_modules(full_transformer, DEFAULT_FP8_POLICY)
    counts = Counter((_family(n), p) for n, p in plan.items())
    assert dict(counts) == {
        ("attn1", "fp8"): 48 * 4,
        ("attn2", "fp8"): 48 * 4,
        ("ff", "fp8"): 48 * 2,
        ("audio_attn1", "fp8"): 48 * 4,
        ("audio_attn2", "fp8"): 48 * 4,
        ("audio_ff", "fp8"): 48 * 2,
        ("audio_to_video_attn", "bf16"): 48 * 4,
        ("video_to_audio_attn", "bf16"): 48 * 4,
        ("top-level", "bf16"): 26,  # patchify, caption projections, 4 adaLN + 4 av_ca modulations, proj_out
    }
    for name in (
        "adaln_single.linear",
        "av_ca_a2v_gate_adaln_single.linear",
        "audio_adaln_single.emb.timestep_embedder.linear_2",
        "caption_projection.linear_2",
        "patchify_proj",
        "audio_proj_out",
    ):
        assert plan[name] == "bf16"
    weights = dict(full_transformer.named_parameters())
    quantized = sum(weights[n + ".weight"].numel() for n, p in plan.items() if p == "fp8")
    kept_av = sum(
        weights[n + ".weight"].numel() for n in plan if _family(n) in ("audio_to_video_attn", "video_to_audio_attn")
    )
    print(
        f"\nquantized {quantized:,} of {TOTAL_PARAMS:,} params ({quantized / TOTAL_PARAMS:.1%}); "
        f"A/V cross-attention kept in BF16: {kept_av:,}"
    )
    assert quantized == 48 * PER_BLOCK_8BIT == 16_106_127_360
    assert kept_av == 48 * PER_BLOCK_AV == 2_415_919_104
    assert quantized / TOTAL_PARAMS == pytest.approx(0.8533, abs=1e-4)


def test_policy_variants_on_full_transformer(full_transformer: torch.nn.Module) -> None:
    lightricks = matching_modules(full_transformer, LIGHTRICKS_FP8_POLICY)
    assert sum(p == "fp8" for p in lightricks.values()) == 42 * 20  # blocks 0 and 43-47 entirely BF16
    assert {n.split(".")[1] for n, p in lightricks.items() if p == "fp8"} == {str(i) for i in range(1, 43)}

    everything = matching_modules(full_transformer, QuantPolicy.from_flags("int8", quantize_all=True))
    assert Counter(everything.values()) == {"int8": 48 * 28, "bf16": 26}  # only non-candidates stay

    keep_ff = matching_modules(full_transformer, QuantPolicy.from_flags("int8", keep_bf16=("ff",)))
    assert Counter(keep_ff.values()) == {"int8": 48 * 18, "bf16": 48 * 10 + 26}
    assert keep_ff["transformer_blocks.5.ff.net.2"] == "bf16"
    assert keep_ff["transformer_blocks.5.audio_ff.net.2"] == "int8"

    assert set(matching_modules(full_transformer, QuantPolicy("bf16")).values()) == {"bf16"}


def test_quantize_model_on_meta_builds_shells_with_exact_bytes(full_transformer: torch.nn.Module, monkeypatch) -> None:
    from ltx_core.model.transformer import LTXModelConfigurator

    from ltx2_edge.quant import triton_quant

    monkeypatch.setattr(triton_quant, "available", lambda: True)  # the report names the kernels a CUDA box runs

    with torch.device("meta"):
        model = LTXModelConfigurator.from_config(ltx2_config("full")).to(torch.bfloat16)
    report = quantize_model_(model, DEFAULT_FP8_POLICY, device="cuda")
    assert report.quantized == 960 and len(report.kept) == 26 + 384
    assert report.params_quantized == 48 * PER_BLOCK_8BIT
    assert isinstance(model.transformer_blocks[47].ff.net[2], Fp8Linear)
    assert type(model.transformer_blocks[47].audio_to_video_attn.to_q) is torch.nn.Linear
    # 1 byte a weight + 4 bytes a scale row + the BF16 bias; kept layers unchanged.
    rows = 48 * (8 * V + 4 * V + V + 8 * A + 4 * A + A)
    assert report.bytes_before - report.bytes_after == 48 * PER_BLOCK_8BIT * 2 - 48 * PER_BLOCK_8BIT - 4 * rows
    assert report.kernels == {"fp8_rowwise_fused": 960} and report.fallbacks == ()
    assert Counter(report.kept.values())["kept: audio_to_video_attn"] == 192
    assert any("960 Linear layers in fp8" in line for line in report.lines())


def test_default_policy_on_full_gemma() -> None:
    from transformers import Gemma3Config, Gemma3ForConditionalGeneration

    with torch.device("meta"):
        gemma = Gemma3ForConditionalGeneration(Gemma3Config.from_dict(gemma_config("full")))
    plan = matching_modules(gemma, DEFAULT_INT8_POLICY)
    picked = [n for n, p in plan.items() if p == "int8"]
    assert len(picked) == 48 * 7  # q, k, v, o, gate, up, down in each language-model layer
    assert all(n.startswith("model.language_model.layers.") for n in picked)
    assert plan["lm_head"] == "bf16" and plan["model.vision_tower.vision_model.encoder.layers.0.mlp.fc1"] == "bf16"
    weights = dict(gemma.named_parameters())
    quantized = sum(weights[n + ".weight"].numel() for n in picked)
    assert quantized == 48 * (3840 * (4096 + 2048 + 2048 + 4096) + 3 * 15360 * 3840) == 10_758_389_760


@pytest.mark.parametrize(
    ("requested", "device", "capability", "expected", "note"),
    [
        ("auto", "cuda", (9, 0), "fp8", ""),
        ("auto", "cuda", (8, 9), "fp8", ""),
        ("auto", "cuda", (11, 0), "fp8", ""),  # Thor
        ("auto", "cuda", (8, 7), "int8", "auto precision on cuda (sm_87, no FP8 tensor cores): int8 weights"),
        (
            "fp8",
            "cuda",
            (8, 6),
            "int8",
            "fp8 requested but cuda has no FP8 tensor cores (sm_86); running int8 weights instead",
        ),
        ("int8", "cuda", (9, 0), "int8", ""),
        ("bf16", "cuda", (9, 0), "bf16", ""),
        ("auto", "cpu", None, "int8", "auto precision on cpu: int8 weights (no FP8 tensor cores)"),
        ("fp8", "cpu", None, "fp8", "fp8 on cpu runs the simulated FP8 reference: correct, not fast"),
    ],
)
def test_resolve_precision(requested, device, capability, expected, note) -> None:
    assert resolve_precision(requested, device, capability) == (expected, note)


def test_bad_inputs_are_refused_with_the_allowed_values() -> None:
    with pytest.raises(RequestError, match=r"precision='fp4' is not allowed: one of auto, fp8, int8, bf16"):
        resolve_precision("fp4", "cpu")
    with pytest.raises(RequestError, match=r"precision='fp16' is not allowed: one of fp8, int8, bf16"):
        QuantPolicy("fp16")
    for bad in ("", "attn 1", ".ff", "ff.", "a/b"):
        with pytest.raises(RequestError, match="--keep-bf16="):
            QuantPolicy.from_flags("fp8", keep_bf16=(bad,))


def test_flags_record_and_description() -> None:
    policy = QuantPolicy.from_flags("int8", keep_bf16=("ff", "attn1"))
    assert policy.keep_bf16 == (*DEFAULT_KEEP_BF16, "ff", "attn1")
    assert policy.summary() == "int8, default keep-list + ['ff', 'attn1']"
    assert QuantPolicy.from_flags("fp8", quantize_all=True).summary() == "fp8, keep-list empty (--quantize-all)"
    assert QuantPolicy.from_json(policy.to_json()) == policy
    assert json.loads(policy.to_json())["precision"] == "int8"
    lines = DEFAULT_FP8_POLICY.describe()
    assert lines[0].startswith("precision: fp8 (weights float8_e4m3fn")
    assert lines[2].startswith(f"kept in BF16 ({len(DEFAULT_KEEP_BF16)} patterns): audio_to_video_attn,")
    assert QuantPolicy("bf16").describe() == ["precision: bf16 (no layer quantized)"]
    assert DEFAULT_FP8_POLICY.with_precision("int8") == DEFAULT_INT8_POLICY
