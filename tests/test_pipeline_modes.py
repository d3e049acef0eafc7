"""Image-to-video and ``--pipeline distilled-one-stage`` wired into the product: request, planner, CLI, pipeline.

End to end on the tiny checkpoint (CPU): MP4s with sound, the encode_image stage and its encoder released before
the transformer loads, the keyframe tokens in every forward, exactly 8 unguided forwards on the distilled sigmas
with only the prompt encoded; bad inputs refused in one line before any weight is read. The planner's new stage
and token counts are checked on full-size headers. The oracle tests (``test_oracle_*``) cover the numerics.
"""

from __future__ import annotations

import gc
import json
import weakref
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ltx2_edge import cli
from ltx2_edge.checkpoint.configs import ltx2_config
from ltx2_edge.checkpoint.names import VIDEO_ENCODER
from ltx2_edge.engine.runner import StageRunner
from ltx2_edge.errors import RequestError
from ltx2_edge.inputs import DEFAULT_NEGATIVE_PROMPT, ImageSpec, LoraSpec
from ltx2_edge.models import loaders, weights
from ltx2_edge.mp4.mux import probe_mp4
from ltx2_edge.plan import activations as act
from ltx2_edge.plan.budget import Budget, GiB
from ltx2_edge.plan.plan_types import PlanRequest
from ltx2_edge.plan.planner import ENCODE_IMAGE_BYTES_PER_PIXEL, plan
from ltx2_edge.plan.profiles import CPU, H100
from ltx2_edge.request import GenerationRequest
from ltx2_edge.stages import text_encode
from ltx2_edge.stages.conditioning import image_device_pixels, load_image
from ltx2_edge.stages.schedules import DISTILLED_SIGMA_VALUES

W, H, F = 96, 64, 17
GRID = (H // 32) * (W // 32)  # latent cells per frame: 6
VIDEO_TOKENS = ((F - 1) // 8 + 1) * GRID  # 18


def _args(tiny_dir: Path, out: Path, *extra: str) -> list[str]:
    return [
        "generate", "--checkpoint-path", str(tiny_dir / "ltx2.safetensors"), "--gemma-root", str(tiny_dir / "gemma"),
        "--prompt", "a red kite over the sea", "--output-path", str(out), "--quiet", "--width", str(W),
        "--height", str(H), "--num-frames", str(F), *extra,
    ]  # fmt: skip


def _image(path: Path, width: int, height: int, seed: int) -> Path:
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)).save(path)
    return path


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> tuple[Path, Path]:
    d = tmp_path_factory.mktemp("i2v")
    return _image(d / "first.png", 80, 50, 1), _image(d / "key.png", 40, 90, 2)


class _ForwardLog:
    """Hooks every loaded transformer: per forward, the batch, the video tokens and the sigma it saw."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls: list[tuple[int, int, float]] = []
        self.encoder_alive_at_transformer_load: list[bool] = []
        self.encoders: list[weakref.ref] = []
        real_transformer, real_encoder = loaders.load_transformer, loaders.load_video_encoder

        def transformer(*a, **k):
            gc.collect()
            self.encoder_alive_at_transformer_load.append(any(r() is not None for r in self.encoders))
            model = real_transformer(*a, **k)
            model.register_forward_pre_hook(self._record, with_kwargs=True)
            return model

        def encoder(*a, **k):
            module = real_encoder(*a, **k)
            self.encoders.append(weakref.ref(module))
            return module

        monkeypatch.setattr(loaders, "load_transformer", transformer)
        monkeypatch.setattr(loaders, "load_video_encoder", encoder)

    def _record(self, _module, _args, kwargs) -> None:
        video = kwargs["video"]
        self.calls.append((video.latent.shape[0], video.latent.shape[1], float(video.sigma.flatten()[0])))


def _report(out: Path) -> dict:
    return json.loads(out.with_suffix(".report.json").read_text())


def _assert_mp4_with_sound(out: Path) -> None:
    probe = probe_mp4(out)
    assert (probe.video_codec, probe.width, probe.height, probe.frames) == ("h264", W, H, F)
    assert (probe.audio_codec, probe.sample_rate, probe.channels) == ("aac", 24000, 2)
    assert abs(probe.audio_duration_s - F / 24) <= 1 / 24


def test_image_to_video_generates_with_an_encode_image_stage(tiny_dir, tmp_path, images, monkeypatch):
    log = _ForwardLog(monkeypatch)
    latents = []
    real_denoise = StageRunner.denoise

    def keep_latents(self, *a, **k):
        out, details = real_denoise(self, *a, **k)
        latents.append(out)
        return out, details

    monkeypatch.setattr(StageRunner, "denoise", keep_latents)
    first, key = images
    out = tmp_path / "i2v.mp4"
    argv = _args(tiny_dir, out, "--num-inference-steps", "2", "--image", str(first), "0", "1.0",
                 "--image", str(key), "9", "0.6", "0")  # fmt: skip
    assert cli.main(argv) == 0
    _assert_mp4_with_sound(out)
    report = _report(out)
    assert [s["stage"] for s in report["stages"]] == ["text_encode", "encode_image", "denoise", "decode"]
    enc = report["stages"][1]
    assert [i["frame_idx"] for i in enc["details"]["images"]] == [0, 9] and enc["details"]["images"][1]["crf"] == 0
    assert enc["details"]["load_seconds"] > 0 and enc["details"]["encode_seconds"] > 0
    assert enc["details"]["predicted_peak_bytes"] == report["plan"]["stages"][2]["predicted_peak_bytes"] > 0
    assert report["request"]["images"][0] == {"path": str(first), "frame_idx": 0, "strength": 1.0, "crf": 33}
    assert report["stages"][2]["details"]["keyframe_tokens"] == GRID
    # The encoder is gone before the transformer loads, and the keyframe's tokens go through every forward.
    assert log.encoder_alive_at_transformer_load == [False] and len(log.encoders) == 1
    assert log.calls and all(c[:2] == (2, VIDEO_TOKENS + GRID) for c in log.calls)
    # Strength 1 at frame 0: the first latent frame is the encoded image, exactly (float32 on the CPU).
    encoder = loaders.load_video_encoder(tiny_dir / "ltx2.safetensors", torch.device("cpu"), torch.float32)
    with torch.inference_mode():
        encoded = encoder(load_image(ImageSpec(first, 0, 1.0), W, H, torch.device("cpu"), torch.float32))
    assert torch.equal(latents[0].video[:, :, :1], encoded)
    assert (latents[0].video[:, :, 1:] - encoded).abs().max() > 1e-3


def test_distilled_one_stage_runs_8_unguided_forwards_on_the_prompt_alone(tiny_dir, tmp_path, monkeypatch):
    log = _ForwardLog(monkeypatch)
    encoded: list[list[str]] = []
    real_gemma = text_encode.TextEncoder.hidden_states  # where the prompts go through Gemma

    def recording(self, prompts, progress=None, keep=()):
        encoded.append(list(prompts))
        return real_gemma(self, prompts, progress, keep)

    monkeypatch.setattr(text_encode.TextEncoder, "hidden_states", recording)
    out = tmp_path / "distilled.mp4"
    assert cli.main(_args(tiny_dir, out, "--pipeline", "distilled-one-stage")) == 0
    _assert_mp4_with_sound(out)
    assert encoded == [["a red kite over the sea"]]  # no negative prompt encoded
    assert [c[:2] for c in log.calls] == [(1, VIDEO_TOKENS)] * 8  # 8 forwards of one sample each
    assert [c[2] for c in log.calls] == torch.tensor(DISTILLED_SIGMA_VALUES[:-1]).tolist()  # float32, exactly
    report = _report(out)
    assert [s["stage"] for s in report["stages"]] == ["text_encode", "denoise", "decode"]
    assert report["stages"][0]["details"]["prompts_encoded"] == 1
    den = report["stages"][1]["details"]
    assert (den["steps"], den["schedule"], den["passes"], len(den["step_seconds"])) == (8, "distilled", ["cond"], 8)
    assert report["guidance"]["preset"] == "none" and report["guidance"]["passes"] == ["cond"]
    req = report["request"]
    assert (req["pipeline"], req["num_inference_steps"], req["negative_prompt"]) == ("distilled-one-stage", 8, "")
    assert report["plan"]["request"]["guidance_batch"] == 1 and report["plan"]["request"]["num_inference_steps"] == 8


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


@pytest.mark.parametrize(
    ("case", "extra", "needle"),
    [
        ("missing image", ["--image", "{dir}/nope.png", "0", "1"], "--image='"),
        ("image is a folder", ["--image", "{dir}", "0", "1"], "not a directory"),
        ("not an image", ["--image", "{dir}/notes.png", "0", "1"], "an image PIL can read"),
        ("frame out of range", ["--image", "{img}", "17", "1"], "FRAME_IDX an integer from 0 to 16"),
        ("strength 2", ["--image", "{img}", "0", "2"], "0 2.0 33' is not allowed: for image 1, STRENGTH"),
        ("two values", ["--image", "{img}", "0"], "PATH FRAME_IDX STRENGTH [CRF]"),
        ("same frame twice", ["--image", "{img}", "4", "1", "--image", "{img}", "4", "0.5"], "image 1 has it"),
        (
            "steps 20 distilled",
            ["--pipeline", "distilled-one-stage", "--num-inference-steps", "20"],
            "8 (the distilled",
        ),
        ("guidance distilled", ["--pipeline", "distilled-one-stage", "--guidance", "cfg"], "leave --guidance unset"),
        (
            "negative distilled",
            ["--pipeline", "distilled-one-stage", "--negative-prompt", "ugly"],
            "--negative-prompt=",
        ),
        ("two-stage at 96 wide", ["--pipeline", "two-stage"], "width=96"),
        (
            "two-stage without its LoRA",
            ["--pipeline", "two-stage", "--width", "128", "--height", "128"],
            "--distilled-lora",
        ),
        ("distilled LoRA on one-stage", ["--distilled-lora", "{img}"], "--distilled-lora="),
        ("distilled checkpoint on one-stage", ["--distilled-checkpoint-path", "{img}"], "distilled-checkpoint-path="),
        ("unknown pipeline", ["--pipeline", "three-stage"], "invalid choice: 'three-stage'"),
    ],
)
def test_bad_inputs_are_refused_in_one_line_before_weights(case, extra, needle, tiny_dir, tmp_path, capsys,
                                                           monkeypatch):  # fmt: skip
    def no_weights(*_a, **_k):
        raise AssertionError("weights were read before the input was validated")

    monkeypatch.setattr(weights, "load_into", no_weights)
    img = _image(tmp_path / "ok.png", 40, 30, 3)
    (tmp_path / "notes.png").write_text("not an image")
    extra = [e.format(dir=tmp_path, img=img) for e in extra]
    before = _leftovers(tmp_path)
    try:
        code = cli.main(_args(tiny_dir, tmp_path / "out.mp4", *extra))
    except SystemExit as exc:  # argparse's own errors (choices) exit from parse_args
        code = exc.code
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("ltx2-edge: error:") and needle in err and "\n" not in err, err
    assert _leftovers(tmp_path) == before


def test_plan_command_shows_the_encode_image_stage(tiny_dir, images, capsys):
    first, key = images
    argv = ["plan", "--checkpoint-path", str(tiny_dir / "ltx2.safetensors"), "--gemma-root", str(tiny_dir / "gemma"),
            "--image", str(first), "0", "1.0", "--image", str(key), "40", "0.5"]  # fmt: skip
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    rows = [line.split()[0] for line in out.splitlines()[1:6]]
    assert rows == ["text_encode", "embeddings", "encode_image", "denoise", "decode"]
    assert "2 image(s), one at a time, at 512x288" in out and "+144 keyframe tokens" in out  # 9 x 16 cells


# ---- request ----


def test_request_resolves_each_pipelines_defaults():
    one = GenerationRequest(prompt="x")
    assert (one.num_inference_steps, one.guidance, one.negative_prompt) == (20, "cfg", DEFAULT_NEGATIVE_PROMPT)
    distilled = GenerationRequest(prompt="x", pipeline="distilled-one-stage", num_inference_steps=8)
    assert (distilled.num_inference_steps, distilled.guidance, distilled.negative_prompt) == (8, "none", "")
    assert (one.schedule, distilled.schedule) == ("one-stage", "distilled")
    spec = ImageSpec(Path("a.png"), 0, 0.5)
    r = GenerationRequest(prompt="x", images=[spec])  # type: ignore[arg-type]
    assert r.images == (spec,) and json.loads(json.dumps(r.to_dict()))["images"][0]["path"] == "a.png"


@pytest.mark.parametrize(
    ("kwargs", "field", "allowed"),
    [
        ({"pipeline": "three-stage"}, "--pipeline", "one-stage or two-stage or distilled or distilled-one-stage"),
        ({"pipeline": "two-stage"}, "--height", "a multiple of 64, at least 128"),
        ({"pipeline": "distilled", "width": 96, "height": 256}, "--width", "a multiple of 64"),
        ({"pipeline": "two-stage", "height": 256}, "--distilled-lora", "--distilled-lora PATH"),
        (
            {"pipeline": "distilled", "height": 256, "distilled_lora": LoraSpec(Path("d.safetensors"))},
            "--distilled-lora",
            "only --pipeline two-stage",
        ),
        ({"pipeline": "distilled", "height": 256, "guidance": "cfg"}, "--guidance", "none for distilled"),
        ({"pipeline": "distilled-one-stage", "num_inference_steps": 20}, "--num-inference-steps", "8 (the distilled"),
        ({"pipeline": "distilled-one-stage", "guidance": "full"}, "--guidance", "none for distilled-one-stage"),
        ({"guidance": "none"}, "--guidance", "cfg or full"),
        ({"images": (ImageSpec(Path("a.png"), 97, 1.0),)}, "--image", "FRAME_IDX an integer from 0 to 96"),
        ({"images": ("a.png",)}, "--image", "ImageSpec"),
    ],
)
def test_request_refuses_what_a_pipeline_cannot_honour(kwargs, field, allowed):
    with pytest.raises(RequestError) as info:
        GenerationRequest(prompt="x", **kwargs)
    assert info.value.field == field and allowed in str(info.value) and "\n" not in str(info.value)


# ---- planner, on full-size headers ----

W1 = dict(width=512, height=288, num_frames=97, frame_rate=24.0, num_inference_steps=20)


@pytest.fixture(scope="module")
def headers(full_headers):
    """Full-size headers from the checkpoint layout (conftest's ``full_headers``), all BF16."""
    return full_headers


def _stages(headers, profile=H100, **kw) -> dict:
    header, gemma = headers
    p = plan(header, gemma, PlanRequest(**{**W1, **kw}), Budget(None, 100 * GiB, False), profile)
    return {s.name: s for s in p.stages}


def test_encode_image_stage_weights_and_working_set(headers):
    header = headers[0]
    assert VIDEO_ENCODER == loaders.VIDEO_ENCODER_PREFIXES
    pixels = image_device_pixels((1920, 1080), 512, 288)
    assert pixels == 1920 * 1080 + 512 * 288  # same aspect ratio: scaled to exactly the output size
    plain = _stages(headers)
    assert list(plain) == ["text_encode", "embeddings", "denoise", "decode"]
    stages = _stages(headers, images=2, image_float_pixels=pixels, conditioning_tokens=144)
    assert list(stages) == ["text_encode", "embeddings", "encode_image", "denoise", "decode"]
    enc = stages["encode_image"]
    encoder_bytes = sum(t.nbytes for n, t in header.tensors.items() if n.startswith(VIDEO_ENCODER))
    assert enc.weights_resident_bytes == encoder_bytes and 1.3e9 < encoder_bytes < 1.45e9  # 0.69B params, bf16
    assert enc.activations_bytes == ENCODE_IMAGE_BYTES_PER_PIXEL * 512 * 288 + 12 * pixels
    cpu = _stages(headers, profile=CPU, images=1, image_float_pixels=pixels)["encode_image"]
    assert cpu.activations_bytes - enc.activations_bytes == ENCODE_IMAGE_BYTES_PER_PIXEL * 512 * 288  # float32
    # keyframe tokens join every forward: the denoise working set is the transformer's at 1872 + 144 tokens
    cfg = ltx2_config("full")
    tokens = act.token_counts(cfg, 512, 288, 97, 24.0)
    with_keys = act.transformer_activation_bytes(cfg, replace(tokens, video=tokens.video + 144), 2, False)
    assert stages["denoise"].activations_bytes == with_keys > plain["denoise"].activations_bytes
    assert stages["denoise"].flops_per_step > 1.05 * plain["denoise"].flops_per_step
    assert stages["decode"] == plain["decode"]  # keyframe tokens are cleared before decoding


def test_distilled_plan_has_one_pass_one_prompt_and_8_steps(headers):
    guided = _stages(headers)
    distilled = _stages(headers, num_inference_steps=8, guidance_batch=1)
    den, ref = distilled["denoise"], guided["denoise"]
    assert den.steps == 8 and den.flops_per_step == pytest.approx(ref.flops_per_step / 2, rel=1e-12)
    assert den.predicted_seconds == pytest.approx(8 * den.compute_seconds_per_step)
    assert den.activations_bytes < ref.activations_bytes
    assert distilled["text_encode"].activations_bytes < guided["text_encode"].activations_bytes  # one prompt
    with pytest.raises(RequestError, match="images"):
        PlanRequest(**W1, conditioning_tokens=144)
    with pytest.raises(RequestError, match="an integer >= 0"):
        PlanRequest(**W1, images=-1)


# ---- accelerations with a single pass ----


def test_step_invariants_with_one_unguided_pass_and_keyframes_are_bit_identical(tiny_dir, tiny_transformer_fp32,
                                                                                tiny_config, images):  # fmt: skip
    """The distilled mode's batch of one (and keyframe tokens) through the StepEngine: same bits as eager."""
    from ltx2_edge.accel.engine import AccelSettings
    from ltx2_edge.guidance import Guidance
    from ltx2_edge.stages.conditioning import encode_images
    from ltx2_edge.stages.denoise import Contexts, denoise
    from ltx2_edge.stages.latents import noised_latents, pixel_shape
    from ltx2_edge.stages.schedules import schedule_sigmas

    cpu = torch.device("cpu")
    encoder = loaders.load_video_encoder(tiny_dir / "ltx2.safetensors", cpu, torch.float32)
    items = encode_images([ImageSpec(images[0], 0, 0.9), ImageSpec(images[1], 12, 0.7)], encoder, 64, 64)
    g = torch.Generator().manual_seed(1)
    v, a = (torch.randn(1, 32, tiny_config["transformer"]["caption_channels"], generator=g) for _ in range(2))
    ctx = Contexts(video=v, audio=a, video_negative=v, audio_negative=a)
    runs = []
    for accel in (None, AccelSettings(freeze_text_kv=True)):
        setup = noised_latents(pixel_shape(64, 64, 17, 24.0), torch.Generator().manual_seed(10), cpu, torch.float32,
                               items)  # fmt: skip
        stats: dict = {}
        out = denoise(tiny_transformer_fp32, setup.video_state, setup.audio_state, schedule_sigmas("distilled", cpu),
                      ctx, Guidance.unguided("batched"), accel=accel, accel_stats=stats)  # fmt: skip
        runs.append((out[0].latent, out[1].latent, stats))
    assert runs[0][0].shape[1] == 3 * 4 + 4  # 3 latent frames of 2x2 cells + one keyframe
    assert torch.equal(runs[0][0], runs[1][0]) and torch.equal(runs[0][1], runs[1][1])
    inv = runs[1][2]["invariants"]
    assert inv["reused"] > inv["computed"] > 0 and runs[1][2]["eager_steps"] == 8
