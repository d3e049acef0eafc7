"""The two-stage pipelines (two-stage, distilled): oracle against ltx-pipelines 1.0.0, end to end, and the plan.

Oracle (float32 CPU, tiny checkpoint, quantization off): ``Generator.generate``'s final latents equal the official
composition of ``TI2VidTwoStagesPipeline`` / ``DistilledPipeline`` — stage 1 at half size from the same helpers
(``denoise_audio_video`` + the guider or simple denoising function), ``upsample_video`` with the video encoder and
the upsampler ltx-pipelines' ``ModelLedger`` loads, stage 2 with the stage-2 sigmas from the upsampled latent
noised to its first sigma, one random generator through both stages, and for two-stage the distilled LoRA fused by
ltx-core's own loader (``ModelLedger.with_additional_loras``). Both sides get the same text contexts.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from ltx_core.components.diffusion_steps import EulerDiffusionStep
from ltx_core.components.guiders import create_multimodal_guider_factory
from ltx_core.components.noisers import GaussianNoiser
from ltx_core.components.schedulers import LTX2Scheduler
from ltx_core.loader import LTXV_LORA_COMFY_RENAMING_MAP, LoraPathStrengthAndSDOps
from ltx_core.model.upsampler import upsample_video
from ltx_pipelines.utils.args import ImageConditioningInput
from ltx_pipelines.utils.constants import DISTILLED_SIGMA_VALUES, STAGE_2_DISTILLED_SIGMA_VALUES
from ltx_pipelines.utils.helpers import (
    combined_image_conditionings,
    denoise_audio_video,
    multi_modal_guider_factory_denoising_func,
    simple_denoising_func,
)
from ltx_pipelines.utils.model_ledger import ModelLedger
from ltx_pipelines.utils.samplers import euler_denoising_loop
from ltx_pipelines.utils.types import PipelineComponents
from PIL import Image

from ltx2_edge import cli
from ltx2_edge.checkpoint.names import UPSAMPLER_FILE
from ltx2_edge.engine.settings import RunSettings
from ltx2_edge.errors import BudgetError, RequestError
from ltx2_edge.inputs import ImageSpec, LoraSpec
from ltx2_edge.models.loaders import load_transformer
from ltx2_edge.models.lora import LoraFuser, inspect_transformer_loras
from ltx2_edge.mp4.mux import probe_mp4
from ltx2_edge.pipeline import Generator
from ltx2_edge.plan.budget import GiB
from ltx2_edge.request import GenerationRequest
from ltx2_edge.stages.latents import pixel_shape
from ltx2_edge.synth.lora_writer import make_lora

CPU = torch.device("cpu")
W, H, F, FPS, SEED, STEPS = 128, 128, 9, 24.0, 10, 3


@pytest.fixture(scope="module")
def distilled_lora(tmp_path_factory) -> Path:
    return make_lora("tiny", tmp_path_factory.mktemp("dlora") / "distilled-lora.safetensors", 4, seed=7)


@pytest.fixture(scope="module")
def image(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("two-stage-img") / "first.png"
    Image.fromarray(np.random.default_rng(2).integers(0, 256, (70, 90, 3), dtype=np.uint8)).save(path)
    return path


def _generator(tiny_dir: Path, **kwargs) -> Generator:
    return Generator(tiny_dir / "ltx2.safetensors", tiny_dir / "gemma", RunSettings(device="cpu", budget=None,
                     quantization="bf16", spatial_upsampler_path=tiny_dir / UPSAMPLER_FILE, **kwargs))  # fmt: skip


@torch.inference_mode()  # as the official pipelines' main() runs
def _official(
    tiny_dir: Path, gen: Generator, request: GenerationRequest, images: list[ImageConditioningInput], fuse: str = "ours"
):
    """The official pipeline's composition at float32 on the CPU, with ``gen``'s text contexts. Two-stage's stage 2
    transformer has the distilled LoRA fused by us (``fuse="ours"``, fp32 once: what the composition is checked
    with) or by ltx-core's loader (``"ltx-core"``: it fuses in bf16, so only close)."""
    run_plan = gen.prepare(request)
    ctx, _ = gen.runner.encode_text(run_plan)
    ledger = ModelLedger(dtype=torch.float32, device=CPU, checkpoint_path=str(tiny_dir / "ltx2.safetensors"),
                         spatial_upsampler_path=str(tiny_dir / UPSAMPLER_FILE))  # fmt: skip
    noiser, stepper = GaussianNoiser(generator=torch.Generator(device=CPU).manual_seed(SEED)), EulerDiffusionStep()
    components = PipelineComponents(dtype=torch.float32, device=CPU)
    encoder = ledger.video_encoder()
    transformer = ledger.transformer()
    if request.pipeline == "two-stage":
        sigmas = LTX2Scheduler().execute(steps=STEPS).to(dtype=torch.float32, device=CPU)
        guidance = run_plan.guidance
        fn = multi_modal_guider_factory_denoising_func(
            create_multimodal_guider_factory(params=guidance.video, negative_context=ctx.video_negative),
            create_multimodal_guider_factory(params=guidance.audio, negative_context=ctx.audio_negative),
            ctx.video, ctx.audio, transformer,
        )  # fmt: skip
    else:
        sigmas = torch.Tensor(DISTILLED_SIGMA_VALUES).to(CPU)
        fn = simple_denoising_func(video_context=ctx.video, audio_context=ctx.audio, transformer=transformer)

    def loop_with(denoise_fn):
        return lambda s, v, a, st: euler_denoising_loop(s, v, a, st, denoise_fn)

    conds = combined_image_conditionings(images, H // 2, W // 2, encoder, torch.float32, CPU)
    video, audio = denoise_audio_video(pixel_shape(W // 2, H // 2, F, FPS), conds, noiser, sigmas, stepper,
                                       loop_with(fn), components, torch.float32, CPU)  # fmt: skip
    upscaled = upsample_video(latent=video.latent[:1], video_encoder=encoder, upsampler=ledger.spatial_upsampler())
    conds = combined_image_conditionings(images, H, W, encoder, torch.float32, CPU)
    if request.pipeline == "two-stage":
        lora = LoraPathStrengthAndSDOps(str(request.distilled_lora.path), request.distilled_lora.strength,
                                        LTXV_LORA_COMFY_RENAMING_MAP)  # fmt: skip
        if fuse == "ltx-core":  # its fused weights come out partly bf16 under a float32 ledger: cast as a user would
            transformer = ledger.with_additional_loras((lora,)).transformer().float()
        else:
            files = inspect_transformer_loras((request.distilled_lora,), gen.setup.checkpoint.config)
            with LoraFuser(files) as fuser:
                transformer = load_transformer(tiny_dir / "ltx2.safetensors", CPU, torch.float32, None, fuser)
    sigmas = torch.Tensor(STAGE_2_DISTILLED_SIGMA_VALUES).to(CPU)
    fn = simple_denoising_func(video_context=ctx.video, audio_context=ctx.audio, transformer=transformer)
    video, audio = denoise_audio_video(pixel_shape(W, H, F, FPS), conds, noiser, sigmas, stepper, loop_with(fn),
                                       components, torch.float32, CPU, noise_scale=sigmas[0],
                                       initial_video_latent=upscaled, initial_audio_latent=audio.latent)  # fmt: skip
    return video.latent, audio.latent


@pytest.mark.parametrize("pipeline", ["two-stage", "distilled"])
def test_two_stage_pipelines_match_the_official_composition(pipeline, tiny_dir, distilled_lora, image, tmp_path):
    extra = {"distilled_lora": LoraSpec(distilled_lora, 0.9), "num_inference_steps": STEPS} if pipeline == "two-stage"\
        else {}  # fmt: skip
    request = GenerationRequest(prompt="a kite over the sea", width=W, height=H, num_frames=F, seed=SEED,
                                pipeline=pipeline, images=(ImageSpec(image, 0, 0.9),), **extra)  # fmt: skip
    gen = _generator(tiny_dir, guidance_mode="sequential")  # CFG's passes one by one, as the official loop runs them
    result = gen.generate(request, tmp_path / "out.mp4")
    ref_v, ref_a = _official(tiny_dir, gen, request, [ImageConditioningInput(str(image), 0, 0.9)])
    ours_v, ours_a = result.latents.video, result.latents.audio
    assert ours_v.shape == ref_v.shape == (1, 128, 2, H // 32, W // 32)
    # Same weights and the same ops in the same order: bit for bit.
    assert torch.equal(ours_v, ref_v) and torch.equal(ours_a, ref_a)
    if pipeline == "two-stage":  # with ltx-core's own LoRA fusion (bf16 rounding): measured 3.1e-4 relative
        core_v, core_a = _official(tiny_dir, gen, request, [ImageConditioningInput(str(image), 0, 0.9)], "ltx-core")
        for ours, ref in ((ours_v, core_v), (ours_a, core_a)):
            assert 0 < ((ours - ref).norm() / ref.norm()).item() < 2e-3
    # A test that can fail: stage 2 really ran on the upsampled latent (not on stage 1's grid or pure noise).
    report = json.loads(result.report_path.read_text())
    stages = [row["stage"] for row in report["stages"]]
    assert stages == ["text_encode", "encode_image", "denoise", "upsample", "denoise_2", "decode"]
    rows = {row["stage"]: row for row in report["stages"]}
    assert rows["upsample"]["details"]["latent_in"] == [1, 128, 2, 2, 2]
    assert rows["upsample"]["details"]["latent_out"] == [1, 128, 2, 4, 4]
    assert (
        rows["denoise"]["details"]["size"] == f"{W // 2}x{H // 2}" and rows["denoise_2"]["details"]["size"] == "128x128"
    )
    assert len(rows["denoise_2"]["details"]["step_seconds"]) == 3
    assert len(rows["denoise"]["details"]["step_seconds"]) == (STEPS if pipeline == "two-stage" else 8)
    meta = probe_mp4(result.output_path)
    assert (meta.width, meta.height, meta.frames) == (W, H, F) and meta.audio_duration_s > 0.3


def test_two_stage_lora_really_changes_stage_2(tiny_dir, distilled_lora, tmp_path):
    """Strength 0 vs 1 of the distilled LoRA: stage 2's latents differ, stage 1 is the same (it has no LoRA)."""
    outs = []
    for i, strength in enumerate((0.0, 1.0)):
        lora = LoraSpec(distilled_lora, strength)
        request = GenerationRequest(prompt="a kite", width=W, height=H, num_frames=F, num_inference_steps=2,
                                    pipeline="two-stage", distilled_lora=lora)  # fmt: skip
        outs.append(_generator(tiny_dir).generate(request, tmp_path / f"o{i}.mp4").latents.video)
    assert (outs[0] - outs[1]).abs().max() > 1e-4


def test_cli_two_stage_makes_an_mp4_and_refuses_a_missing_upsampler(tiny_dir, distilled_lora, tmp_path, capsys):
    base = ["generate", "--checkpoint-path", str(tiny_dir / "ltx2.safetensors"), "--gemma-root",
            str(tiny_dir / "gemma"), "--prompt", "waves", "--width", "128", "--height", "128", "--num-frames", "9",
            "--pipeline", "two-stage", "--num-inference-steps", "2", "--distilled-lora", str(distilled_lora), "0.8",
            "--quantization", "int8", "--quiet"]  # fmt: skip
    out = tmp_path / "cli.mp4"
    assert cli.main([*base, "--output-path", str(out)]) == 2
    err = capsys.readouterr().err
    assert "spatial-upsampler-path=None" in err and "ltx-2-spatial-upscaler-x2" in err and not out.exists()
    assert cli.main([*base, "--output-path", str(out), "--spatial-upsampler-path", str(tiny_dir / UPSAMPLER_FILE)]) == 0
    meta = probe_mp4(out)
    assert (meta.width, meta.height, meta.frames) == (128, 128, 9) and meta.audio_duration_s > 0.3
    table = capsys.readouterr().out
    assert "upsample" in table and "denoise_2" in table


def test_distilled_checkpoint_path_names_the_model(tiny_dir, tmp_path):
    out = tmp_path / "d.mp4"
    argv = ["generate", "--distilled-checkpoint-path", str(tiny_dir / "ltx2.safetensors"), "--gemma-root",
            str(tiny_dir / "gemma"), "--prompt", "rain", "--width", "128", "--height", "128", "--num-frames", "9",
            "--pipeline", "distilled", "--spatial-upsampler-path", str(tiny_dir / UPSAMPLER_FILE), "--quiet",
            "--output-path", str(out)]  # fmt: skip
    assert cli.main(argv) == 0 and probe_mp4(out).frames == 9
    clash = [*argv[:-1], str(tmp_path / "e.mp4"), "--checkpoint-path", str(tmp_path / "other.safetensors")]
    assert cli.main(clash) == 2 and not (tmp_path / "e.mp4").exists()


def test_plan_two_stage_at_1024x576_on_full_headers(full_headers, monkeypatch):
    """The issue's size: stage 1 at 512x288 with CFG, the upsampler, stage 2 at 1024x576 unguided, decode there."""
    from ltx2_edge.memory import runtime
    from ltx2_edge.plan.budget import Budget
    from ltx2_edge.plan.plan_types import PlanRequest, SecondStage
    from ltx2_edge.plan.planner import plan
    from ltx2_edge.plan.profiles import H100
    from ltx2_edge.stages.upsample import upsample_working_bytes
    from ltx2_edge.synth.upsampler_writer import upsampler_config

    header, gemma = full_headers
    latent = (1, 128, 13, 9, 16)  # stage 1's latent at 512x288x97
    work = upsample_working_bytes(upsampler_config("full"), latent, 2)
    second = SecondStage(1024, 576, 3, 995_735_858, work, 1e12)
    request = PlanRequest(512, 288, 97, 24.0, 20, guidance_batch=2, precision="fp8", second_stage=second)
    is_q = runtime.quantized_predicate(__import__("ltx2_edge.quant.policy", fromlist=["QuantPolicy"]).QuantPolicy
                                       .from_flags("fp8"))  # fmt: skip
    p = plan(header, gemma, request, Budget(32 * GiB, None, False), H100, is_q)
    names = [s.name for s in p.stages]
    assert names == ["text_encode", "embeddings", "denoise", "upsample", "denoise_2", "decode"]
    den, den2, up = p.stage("denoise"), p.stage("denoise_2"), p.stage("upsample")
    assert den.steps == 20 and den2.steps == 3
    # Stage 2 runs 4x the video tokens with one pass instead of two: more activation memory per forward.
    assert den2.activations_bytes > den.activations_bytes
    assert up.predicted_peak_bytes < 4 * GiB and up.activations_bytes >= work
    assert p.stage("decode").tiles is not None and p.peak_bytes <= 32 * GiB
    with pytest.raises(BudgetError, match="Smallest budget that works"):
        plan(header, gemma, request, Budget(4 * GiB, None, False), H100, is_q)


def test_generator_refuses_two_stage_without_upsampler(tiny_dir, distilled_lora):
    gen = Generator(tiny_dir / "ltx2.safetensors", tiny_dir / "gemma", RunSettings(device="cpu", budget=None))
    request = GenerationRequest(prompt="x", width=W, height=H, num_frames=F, pipeline="distilled")
    with pytest.raises(RequestError) as info:
        gen.prepare(request)
    assert info.value.field == "--spatial-upsampler-path"


def test_plan_command_shows_both_stages(tiny_dir, distilled_lora, capsys):
    argv = ["plan", "--checkpoint-path", str(tiny_dir / "ltx2.safetensors"), "--gemma-root", str(tiny_dir / "gemma"),
            "--pipeline", "two-stage", "--width", "256", "--height", "128", "--num-frames", "17", "--distilled-lora",
            str(distilled_lora), "--spatial-upsampler-path", str(tiny_dir / UPSAMPLER_FILE)]  # fmt: skip
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    rows = [line.split()[0] for line in out.splitlines()[1:7]]
    assert rows == ["text_encode", "embeddings", "denoise", "upsample", "denoise_2", "decode"]
    assert "request: stage 1 at 128x64" in out and "stage 2 at 256x128, 3 steps" in out
    assert "denoise forwards:" in out and "denoise_2 forwards:" in out


def test_distilled_keeps_its_transformer_through_the_upsample(tiny_dir, distilled_lora, tmp_path, monkeypatch):
    """Same weights in both stages and room for both: one load, and the model is gone after the run."""
    import gc
    import weakref

    from ltx2_edge.models import loaders

    loads: list[weakref.ref] = []
    real = loaders.load_transformer

    def counting(*a, **k):
        model = real(*a, **k)
        loads.append(weakref.ref(model))
        return model

    monkeypatch.setattr(loaders, "load_transformer", counting)
    gen = _generator(tiny_dir)
    distilled = GenerationRequest(prompt="rain", width=W, height=H, num_frames=F, pipeline="distilled")
    result = gen.generate(distilled, tmp_path / "d.mp4")
    rows = {row["stage"]: row for row in json.loads(result.report_path.read_text())["stages"]}
    assert len(loads) == 1 and "stays resident through it" in rows["upsample"]["technique"]
    assert rows["denoise"]["details"]["held_for_next_stage"]
    assert "weights kept resident" in rows["denoise_2"]["technique"]
    gc.collect()
    assert all(ref() is None for ref in loads) and not gen.cache.holds("transformer")
    # Two-stage fuses the distilled LoRA into stage 2 only: other weights, loaded twice.
    two = GenerationRequest(prompt="rain", width=W, height=H, num_frames=F, pipeline="two-stage",
                            num_inference_steps=2, distilled_lora=LoraSpec(distilled_lora))  # fmt: skip
    result = gen.generate(two, tmp_path / "t.mp4")
    rows = {row["stage"]: row for row in json.loads(result.report_path.read_text())["stages"]}
    assert len(loads) == 3 and "stays resident" not in rows["upsample"]["technique"]


def test_plan_keeps_the_transformer_only_where_it_fits(full_headers):
    from ltx2_edge.memory import runtime
    from ltx2_edge.plan.budget import Budget
    from ltx2_edge.plan.plan_types import PlanRequest, SecondStage
    from ltx2_edge.plan.planner import plan
    from ltx2_edge.plan.profiles import H100
    from ltx2_edge.quant.policy import QuantPolicy
    from ltx2_edge.stages.upsample import upsample_working_bytes
    from ltx2_edge.synth.upsampler_writer import upsampler_config

    header, gemma = full_headers
    work = upsample_working_bytes(upsampler_config("full"), (1, 128, 13, 9, 16), 2)
    is_q = runtime.quantized_predicate(QuantPolicy.from_flags("fp8"))

    def upsample(budget_gib: int, same: bool):
        second = SecondStage(1024, 576, 3, 995_735_858, work, 1e12, same_weights=same)
        request = PlanRequest(512, 288, 97, 24.0, 8, guidance_batch=1, precision="fp8", second_stage=second)
        p = plan(header, gemma, request, Budget(budget_gib * GiB, None, False), H100, is_q)
        return p.stage("upsample"), p.stage("denoise")

    kept, den = upsample(32, True)
    assert kept.keeps_transformer and kept.predicted_peak_bytes > den.weights_resident_bytes
    released, _ = upsample(32, False)  # two-stage: stage 2 has the LoRA fused
    assert not released.keeps_transformer and released.predicted_peak_bytes < 4 * GiB
    streamed, den16 = upsample(16, True)  # blocks stream at 16 GiB: nothing to keep
    assert den16.streamed_units and not streamed.keeps_transformer
