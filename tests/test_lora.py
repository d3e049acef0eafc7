"""LoRAs (``--lora PATH [STRENGTH]``) fused into the transformer's weights at load, on the tiny checkpoint (CPU).

Oracle: our fused weights against ltx-core 1.0.0's ``apply_loras`` (BF16; equal within BF16 rounding). Then
the paths that load weights: 8-bit (fused, then quantized: exact), pinned streaming (bit for bit the resident
model), the file tier (refused), ``quantize --lora`` (its output loads to the same model), end to end (an MP4
with sound; latents move with a LoRA and not with strength 0), and bad files refused in one line before weights.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from ltx2_edge import cli
from ltx2_edge.checkpoint.header import read_header
from ltx2_edge.checkpoint.names import TRANSFORMER_PREFIX as CHECKPOINT_PREFIX
from ltx2_edge.engine.run_plan import check_loras, denoise_passes
from ltx2_edge.engine.settings import RunSettings
from ltx2_edge.errors import CheckpointError, RequestError
from ltx2_edge.guidance import Guidance
from ltx2_edge.inputs import LoraSpec
from ltx2_edge.models import loaders, weights
from ltx2_edge.models.lora import BAKED_METADATA_KEY, LoraFuser, inspect_transformer_loras
from ltx2_edge.models.streamed_transformer import load_streamed_transformer
from ltx2_edge.mp4.mux import probe_mp4
from ltx2_edge.pipeline import Generator
from ltx2_edge.quant.kernels import quantize_weight
from ltx2_edge.quant.linear import QuantLinear
from ltx2_edge.quant.policy import QuantPolicy
from ltx2_edge.request import GenerationRequest
from ltx2_edge.stages.denoise import Contexts, denoise, official_sigmas
from ltx2_edge.stages.latents import final_latents, noised_latents, pixel_shape
from ltx2_edge.synth.lora_writer import make_lora

CPU = torch.device("cpu")
SMALL = dict(width=96, height=64, num_frames=17, num_inference_steps=2)


@pytest.fixture(scope="module")
def loras(tmp_path_factory) -> tuple[LoraSpec, LoraSpec]:
    d = tmp_path_factory.mktemp("loras")
    return (LoraSpec(make_lora("tiny", d / "a.safetensors", 4, seed=1), 0.8),
            LoraSpec(make_lora("tiny", d / "b.safetensors", 8, seed=2), 0.5))  # fmt: skip


def _fuser(specs, config, prefix: str = "") -> LoraFuser:
    return LoraFuser(inspect_transformer_loras(specs, config), prefix)


def _ckpt(tiny_dir: Path) -> Path:
    return tiny_dir / "ltx2.safetensors"


def test_fused_weights_match_ltx_core_apply_loras(loras, tiny_dir, tiny_config):
    from ltx_core.loader import LTXV_LORA_COMFY_RENAMING_MAP, LoraStateDictWithStrength, SafetensorsModelStateDictLoader
    from ltx_core.loader.fuse_loras import apply_loras
    from ltx_core.model.transformer import LTXV_MODEL_COMFY_RENAMING_MAP

    assert CHECKPOINT_PREFIX == loaders.TRANSFORMER_PREFIX
    loader = SafetensorsModelStateDictLoader()
    model_sd = loader.load(str(_ckpt(tiny_dir)), sd_ops=LTXV_MODEL_COMFY_RENAMING_MAP, device=CPU)
    plain = {name: t.clone() for name, t in model_sd.sd.items()}
    lora_sds = [loader.load(str(s.path), sd_ops=LTXV_LORA_COMFY_RENAMING_MAP, device=CPU).sd for s in loras]
    pairs = zip(lora_sds, loras, strict=True)
    with_strength = [LoraStateDictWithStrength(replace(model_sd, sd=sd), s.strength) for sd, s in pairs]
    ref = apply_loras(model_sd, with_strength, dtype=torch.bfloat16).sd
    with _fuser(loras, tiny_config) as fuser:
        ours = loaders.load_transformer(_ckpt(tiny_dir), CPU, torch.bfloat16, transform=fuser).velocity_model
        targets = fuser.targets
    assert len(targets) == 56  # every attention projection and FF Linear of the 2 blocks
    exact = total = 0
    for name, w in ours.state_dict().items():
        if name not in targets:
            assert torch.equal(w, plain[name]) and torch.equal(w, ref[name]), name
            continue
        r, stem = ref[name], name.removesuffix(".weight")
        truth = plain[name].double()
        for sd, spec in zip(lora_sds, loras, strict=True):
            truth += (sd[stem + ".lora_B.weight"].double() * spec.strength) @ sd[stem + ".lora_A.weight"].double()
        # Ours is W + sum(s * B @ A) rounded once to BF16: within half a BF16 ulp (2^(exponent - 8)), plus the
        # fp32 sum's own error (relative 2^-24, far below the 0.002 ulp allowed for it).
        half_ulp = torch.exp2(torch.floor(torch.log2(truth.abs().clamp_min(2**-60))) - 8)
        assert bool(((w.double() - truth).abs() <= half_ulp * 1.004).all()), name
        # ltx-core rounds to BF16 after the scale, the product, the sum and the add, so where W + delta cancels it
        # is off by many ulps of the result; against the tensor's own scale both agree to 2 BF16 ulps.
        assert float((w.float() - r.float()).abs().max()) <= 2**-6 * float(r.float().abs().max()), name
        exact += int((w == r).sum())
        total += w.numel()
    assert exact / total > 0.8, exact / total  # and most elements are the same BF16 value (88.7% here)


@pytest.mark.parametrize("precision", ["int8", "fp8"])
def test_quantized_load_equals_quantize_of_fused_bf16(precision, loras, tiny_dir, tiny_config):
    with _fuser(loras, tiny_config) as fuser:
        fused = loaders.load_transformer(_ckpt(tiny_dir), CPU, torch.bfloat16, transform=fuser).velocity_model
        q = loaders.load_transformer(_ckpt(tiny_dir), CPU, torch.bfloat16, QuantPolicy.from_flags(precision),
                                     transform=fuser).velocity_model  # fmt: skip
        targets = fuser.targets
    layers = {n: m for n, m in q.named_modules() if isinstance(m, QuantLinear)}
    assert any(n + ".weight" in targets for n in layers)  # the LoRA reaches 8-bit layers
    for name, layer in layers.items():
        weight, scale = quantize_weight(fused.get_submodule(name).weight, precision)
        assert torch.equal(layer.weight, weight) and torch.equal(layer.weight_scale, scale), name
    sd = fused.state_dict()
    kept = [n for n, t in q.state_dict().items() if n.rsplit(".", 1)[0] not in layers]
    assert any(n in targets for n in kept)  # ... and the BF16 keep-list (A/V cross-attention)
    assert all(torch.equal(q.state_dict()[n], sd[n]) for n in kept)


def _run(transformer, config) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(3)
    width = config["transformer"]["caption_channels"]
    ctx = Contexts(*(torch.randn(1, 1024, width, generator=g) for _ in range(4)))
    setup = noised_latents(pixel_shape(64, 64, 9, 24.0), torch.Generator().manual_seed(10), CPU, torch.float32)
    v, a = denoise(transformer, setup.video_state, setup.audio_state, official_sigmas(2, CPU), ctx,
                   Guidance.preset_named("cfg"))  # fmt: skip
    return final_latents(setup, v, a)


@pytest.mark.parametrize("precision", ["bf16", "int8"])
def test_pinned_streaming_with_lora_equals_resident_bit_for_bit(precision, loras, tiny_dir, tiny_config):
    policy = QuantPolicy.from_flags(precision)
    with _fuser(loras, tiny_config) as fuser:
        resident = loaders.load_transformer(_ckpt(tiny_dir), CPU, torch.float32,
                                            None if precision == "bf16" else policy, fuser)  # fmt: skip
        streamed, streamer = load_streamed_transformer(_ckpt(tiny_dir), CPU, torch.float32, policy, 1, "pinned", 2,
                                                       fuser)  # fmt: skip
    with streamer:
        for ours, ref in zip(_run(streamed, tiny_config), _run(resident, tiny_config), strict=True):
            assert torch.equal(ours, ref)
        assert streamer.stats().copies == 2  # block 1 (LoRA-fused in the pinned pack) crossed once per step


def test_file_tier_refuses_lora(loras, tiny_dir, tiny_config):
    with _fuser(loras, tiny_config) as fuser, pytest.raises(RequestError, match="quantize --lora"):
        load_streamed_transformer(_ckpt(tiny_dir), CPU, torch.bfloat16, QuantPolicy.from_flags("int8"), 1, "file", 2,
                                  fuser)  # fmt: skip
    gen = Generator(_ckpt(tiny_dir), tiny_dir / "gemma", RunSettings(device="cpu"))
    request = GenerationRequest(prompt="a kite", loras=loras, **SMALL)
    run_plan = gen.prepare(request)
    assert len(run_plan.passes[0].loras) == 2  # resident: accepted
    on_file = replace(run_plan.passes[0].stage, streamed_units=1, resident_units=1, source_tier="file")
    with pytest.raises(RequestError, match="ltx2-edge quantize --checkpoint-path BF16_FILE"):
        check_loras(gen.setup, run_plan.passes[0].run, on_file)
    off = replace(request, loras=tuple(replace(s, strength=0.0) for s in loras))
    # strength 0 fuses nothing, so the file tier is fine
    assert len(check_loras(gen.setup, gen.prepare(off).passes[0].run, on_file)) == 2


def test_quantize_with_lora_bakes_it_in(loras, tiny_dir, tiny_config, tmp_path, capsys):
    out = tmp_path / "q.safetensors"
    argv = ["quantize", "--checkpoint-path", str(_ckpt(tiny_dir)), "--to", "int8", "--out", str(out)]
    for s in loras:
        argv += ["--lora", str(s.path), str(s.strength)]
    assert cli.main(argv) == 0 and "LoRAs fused first" in capsys.readouterr().out
    baked = json.loads(read_header(out).metadata[BAKED_METADATA_KEY])
    assert [(b["path"], b["strength"], b["rank"]) for b in baked] == [(str(loras[0].path), 0.8, "4"),
                                                                       (str(loras[1].path), 0.5, "8")]  # fmt: skip
    policy = QuantPolicy.from_flags("int8")
    from_file = loaders.load_transformer(out, CPU, torch.bfloat16, policy).velocity_model.state_dict()
    with _fuser(loras, tiny_config) as fuser:
        at_load = loaders.load_transformer(_ckpt(tiny_dir), CPU, torch.bfloat16, policy, fuser)
    ref = at_load.velocity_model.state_dict()
    assert from_file.keys() == ref.keys() and all(torch.equal(from_file[n], ref[n]) for n in ref)
    # The baked file cannot take another LoRA at load (its weights are 8-bit): refused before any weight.
    gen = Generator(out, tiny_dir / "gemma", RunSettings(device="cpu", quantization="int8"))
    with pytest.raises(RequestError, match="quantize"):
        request = GenerationRequest(prompt="a kite", loras=loras[:1], **SMALL)
        check_loras(gen.setup, denoise_passes(request, "batched")[0], None)


def test_generate_with_lora_makes_mp4_with_sound_and_moves_the_latents(loras, tiny_dir, tmp_path):
    gen = Generator(_ckpt(tiny_dir), tiny_dir / "gemma", RunSettings(device="cpu"))
    base = gen.generate(GenerationRequest(prompt="a kite", **SMALL), tmp_path / "base.mp4")
    with_lora = gen.generate(GenerationRequest(prompt="a kite", loras=loras, **SMALL), tmp_path / "lora.mp4")
    off = tuple(replace(s, strength=0.0) for s in loras)
    zero = gen.generate(GenerationRequest(prompt="a kite", loras=off, **SMALL), tmp_path / "zero.mp4")
    probe = probe_mp4(with_lora.output_path)
    assert (probe.video_codec, probe.frames, probe.audio_codec, probe.channels) == ("h264", 17, "aac", 2)
    assert torch.equal(zero.latents.video, base.latents.video) and torch.equal(zero.latents.audio, base.latents.audio)
    for name in ("video", "audio"):
        a, b = getattr(with_lora.latents, name), getattr(base.latents, name)
        assert (a - b).abs().max() > 1e-3, name  # the LoRA changes the result
    report = json.loads(with_lora.report_path.read_text())
    assert [x["strength"] for x in report["loras"]["fused_at_load"]["denoise"]] == [0.8, 0.5]
    assert report["request"]["loras"][1] == {"path": str(loras[1].path), "strength": 0.5}
    assert "2 LoRA(s) fused at load" in report["stages"][1]["technique"]


def _bad_files(d: Path, good: Path) -> dict[str, tuple[Path, str]]:
    a = "diffusion_model.transformer_blocks.0.attn1.to_q.lora_A.weight"
    b = a.replace("lora_A", "lora_B")
    files = {
        "missing": ({}, "lora='" + str(d / "missing.safetensors")),
        "rank": ({a: torch.zeros(4, 32), b: torch.zeros(32, 2)}, "has rank 2 but"),
        "unknown": (
            {"diffusion_model.transformer_blocks.0.attn9.to_q.lora_A.weight": torch.zeros(4, 32)},
            "attn9.to_q.lora_A.weight",
        ),  # fmt: skip
        "shape": ({a: torch.zeros(4, 4096), b: torch.zeros(4096, 4)}, "do not fit 'transformer_blocks.0.attn1"),
        "alone": ({a: torch.zeros(4, 32)}, "has no lora_B partner"),
    }
    out = {}
    for case, (tensors, needle) in files.items():
        path = d / f"{case}.safetensors"
        if tensors:
            save_file(tensors, str(path))
        out[case] = (path, needle)
    return out


@pytest.mark.parametrize("case", ["missing", "rank", "unknown", "shape", "alone"])
def test_bad_lora_files_are_refused_in_one_line_before_weights(case, loras, tiny_dir, tmp_path, capsys, monkeypatch):
    def no_weights(*_a, **_k):
        raise AssertionError("weights were read before the LoRA was checked")

    monkeypatch.setattr(weights, "load_into", no_weights)
    path, needle = _bad_files(tmp_path, loras[0].path)[case]
    code = cli.main(["generate", "--checkpoint-path", str(_ckpt(tiny_dir)), "--gemma-root", str(tiny_dir / "gemma"),
                     "--prompt", "a kite", "--output-path", str(tmp_path / "o.mp4"), "--quiet",
                     "--lora", str(loras[0].path), "--lora", str(path), "0.5"])  # fmt: skip
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("ltx2-edge: error:") and "\n" not in err, err
    assert needle in err and (case == "missing" or path.name in err), err
    assert not (tmp_path / "o.mp4").exists()


def test_lora_arg_parsing(tmp_path):
    from ltx2_edge.cli.parser import parse_lora_arg

    assert parse_lora_arg(["x.safetensors"]) == LoraSpec(Path("x.safetensors"), 1.0)
    assert parse_lora_arg(["x.safetensors", "-0.25"]).strength == -0.25
    for bad in (["x", "strong"], ["x", "1", "2"], ["x", "nan"]):
        with pytest.raises(RequestError, match="lora="):
            parse_lora_arg(bad)
    with pytest.raises(CheckpointError, match="not a LoRA factor"):
        save_file({"x.weight": torch.zeros(2, 2)}, str(tmp_path / "n.safetensors"))
        from ltx2_edge.checkpoint.configs import ltx2_config

        inspect_transformer_loras([LoraSpec(tmp_path / "n.safetensors")], ltx2_config("tiny"))


def test_make_lora_command_writes_the_official_format_once(tmp_path, capsys):
    out = tmp_path / "r.safetensors"
    assert cli.main(["make-lora", "--size", "tiny", "--rank", "2", "--out", str(out), "--seed", "3"]) == 0
    header = read_header(out)
    a = header.tensors["diffusion_model.transformer_blocks.1.audio_to_video_attn.to_q.lora_A.weight"]
    b = header.tensors["diffusion_model.transformer_blocks.1.audio_to_video_attn.to_q.lora_B.weight"]
    assert (a.dtype, a.shape, b.shape, len(header.tensors)) == ("BF16", (2, 32), (16, 2), 112)
    capsys.readouterr()
    assert cli.main(["make-lora", "--size", "tiny", "--out", str(out)]) == 2  # exists: --overwrite needed
    assert "--overwrite" in capsys.readouterr().err
