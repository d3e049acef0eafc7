"""Image conditioning without the transformer: argument parsing, every refusal (one line: field, value, what is
allowed), the fit rule's numbers, the H.264 pass, colour modes, token counts and the encoder loader."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import ltx2_edge  # noqa: F401  (torchaudio placeholder before ltx_core)
from ltx2_edge.checkpoint.header import read_header
from ltx2_edge.checkpoint.names import VIDEO_ENCODER as VIDEO_ENCODER_PREFIXES
from ltx2_edge.cli.parser import parse_image_arg
from ltx2_edge.errors import RequestError
from ltx2_edge.inputs import DEFAULT_IMAGE_CRF, ImageSpec
from ltx2_edge.models.loaders import load_video_encoder
from ltx2_edge.stages.conditioning import (
    check_image_files,
    conditioning_token_count,
    fit_to_frame,
    h264_roundtrip,
    load_image,
    read_rgb,
    validate_image_specs,
)

CPU = torch.device("cpu")


def _png(path: Path, width: int = 40, height: int = 30, mode: str = "RGB") -> Path:
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).convert(mode).save(path)
    return path


def _one_line(err: pytest.ExceptionInfo, field: str, *allowed: str) -> str:
    message = str(err.value)
    assert "\n" not in message and message.startswith(field + "=")
    assert " is not allowed: " in message
    for text in allowed:
        assert text in message
    return message


def test_parse_image_arg_takes_three_or_four_values():
    assert parse_image_arg(["a.png", "0", "0.8"]) == ImageSpec(Path("a.png"), 0, 0.8, DEFAULT_IMAGE_CRF)
    assert parse_image_arg(["b.jpg", "16", "1", "0"], 2) == ImageSpec(Path("b.jpg"), 16, 1.0, 0)
    for values in (["a.png", "0"], ["a.png", "0", "1", "33", "x"]):
        with pytest.raises(RequestError) as err:
            parse_image_arg(values, 1)
        _one_line(err, "--image", "for image 2, PATH FRAME_IDX STRENGTH [CRF]")
    with pytest.raises(RequestError) as err:
        parse_image_arg(["a.png", "zero", "1"])
    _one_line(err, "--image", "for image 1", "FRAME_IDX and CRF integers")


@pytest.mark.parametrize(
    ("spec", "field", "allowed"),
    [
        (ImageSpec(Path("a"), -1, 1.0), "--image='a -1 1.0 33'", "FRAME_IDX an integer from 0 to 96 (a frame of the "
         "97-frame clip"),
        (ImageSpec(Path("a"), 97, 1.0), "--image='a 97 1.0 33'", "FRAME_IDX an integer from 0 to 96"),
        (ImageSpec(Path("a"), 8, 1.0), "--image='a 8 1.0 33'", "a frame no other image uses (image 1 has it)"),
        (ImageSpec(Path("a"), 16, 1.5), "--image='a 16 1.5 33'", "STRENGTH a number from 0 (no effect) to 1"),
        (ImageSpec(Path("a"), 16, -0.1), "--image='a 16 -0.1 33'", "STRENGTH a number from 0 (no effect) to 1"),
        (ImageSpec(Path("a"), 16, float("nan")), "--image='a 16 nan 33'", "STRENGTH a number from 0 (no effect) to 1"),
        (ImageSpec(Path("a"), 16, 0.5, 52), "--image='a 16 0.5 52'", "CRF an integer from 0 (no H.264 pass) to 51"),
        (ImageSpec(Path("a"), 16, 0.5, -1), "--image='a 16 0.5 -1'", "CRF an integer from 0 (no H.264 pass) to 51"),
    ],
)  # fmt: skip
def test_validate_refuses_each_bad_spec_in_one_line(spec, field, allowed):
    first = ImageSpec(Path("a"), 8, 1.0)
    with pytest.raises(RequestError) as err:
        validate_image_specs([first, spec], 512, 288, 97)
    _one_line(err, "--image", field + " is not allowed: for image 2, ", allowed)


def test_validate_accepts_every_frame_of_the_clip_and_checks_the_grid():
    specs = [ImageSpec(Path("a"), i, s, c) for i, s, c in ((0, 1.0, 33), (1, 0.0, 0), (50, 0.5, 51), (96, 1, 20))]
    validate_image_specs(specs, 512, 288, 97)  # the official code restricts no frame index; neither do we
    validate_image_specs([], 512, 288, 97)
    with pytest.raises(RequestError) as err:
        validate_image_specs(specs, 500, 288, 97)
    _one_line(err, "--width", "a positive multiple of 32")


def test_check_image_files_refuses_what_cannot_be_read(tmp_path):
    good = _png(tmp_path / "good.png")
    (tmp_path / "notes.png").write_text("not an image")
    truncated = tmp_path / "cut.png"
    truncated.write_bytes(good.read_bytes()[:200])
    deep = tmp_path / "deep.png"
    Image.fromarray(np.full((8, 8), 40000, dtype=np.uint16)).save(deep)
    tiny = _png(tmp_path / "tiny.png", 1, 1)
    cases = [
        (tmp_path / "missing.png", "an existing image file (no such file)"),
        (tmp_path, "an image file, not a directory"),
        (tmp_path / "notes.png", "an image PIL can read"),
        (truncated, "a readable, complete image file"),
        (deep, "an 8-bit image (this one is mode I;16)"),
        (tiny, "at least 2x2 pixels for CRF 33"),
    ]
    for path, allowed in cases:
        with pytest.raises(RequestError) as err:
            check_image_files([ImageSpec(good, 0, 1.0), ImageSpec(path, 8, 1.0)])
        _one_line(err, "--image", f"--image={str(path)!r} is not allowed: for image 2, ", allowed)
    assert check_image_files([ImageSpec(good, 0, 1.0), ImageSpec(tiny, 8, 1.0, crf=0)]) == [(40, 30), (1, 1)]


def test_fit_scales_to_cover_then_centre_crops():
    # A 100x50 horizontal ramp (value = x) onto 64x64: scale max(64/50, 64/100) = 1.28 -> 128x64, crop x 32..96.
    ramp = torch.arange(100, dtype=torch.float32)[None, :, None].expand(50, 100, 3)
    out = fit_to_frame(ramp, 64, 64)
    assert out.shape == (1, 3, 1, 64, 64)
    # bilinear, half-pixel centres: output column j samples source x = (j + 32 + 0.5) / 1.28 - 0.5
    expected = (torch.arange(64, dtype=torch.float32) + 32.5) / 1.28 - 0.5
    torch.testing.assert_close(out[0, 0, 0, 10], expected, rtol=0, atol=1e-4)
    assert bool((out[0, :, 0, :, 0] == out[0, :, 0, :1, 0]).all())  # no vertical change: not stretched
    # A tall image onto a wide frame loses rows, keeps all columns: 30x90 -> 96x64 scale 96/30 = 3.2 -> 96x288.
    tall = torch.arange(90, dtype=torch.float32)[:, None, None].expand(90, 30, 3)
    out = fit_to_frame(tall, 96, 64)
    rows = (torch.arange(64, dtype=torch.float32) + (288 - 64) // 2 + 0.5) / 3.2 - 0.5
    torch.testing.assert_close(out[0, 1, 0, :, 5], rows, rtol=0, atol=1e-4)


def test_h264_pass_is_lossy_even_sized_and_skipped_at_crf_0():
    ramp = np.linspace(0, 255, 37)[None, :, None] * np.ones((21, 1, 3))
    pixels = ramp.astype(np.uint8)
    assert h264_roundtrip(pixels, 0) is pixels
    out = h264_roundtrip(pixels, 33)
    assert out.shape == (20, 36, 3) and out.dtype == np.uint8
    mse = np.mean((out.astype(np.float64) - pixels[:20, :36]) ** 2)
    assert 0 < mse and 10 * np.log10(255**2 / mse) > 30  # a smooth ramp survives CRF 33 above 30 dB PSNR


def test_colour_modes_become_rgb(tmp_path):
    rgb = _png(tmp_path / "rgb.png")
    base = read_rgb(rgb)
    rgba = Image.open(rgb).convert("RGBA")
    rgba.putalpha(7)
    rgba.save(tmp_path / "rgba.png")
    assert np.array_equal(read_rgb(tmp_path / "rgba.png"), base)  # alpha dropped, not composited
    gray = read_rgb(_png(tmp_path / "gray.png", mode="L"))
    assert gray.shape == (30, 40, 3) and np.array_equal(gray[..., 0], gray[..., 2])
    spec = ImageSpec(rgb, 0, 1.0)
    x = load_image(spec, 64, 32, CPU, torch.bfloat16)
    assert x.shape == (1, 3, 1, 32, 64) and x.dtype == torch.bfloat16 and -1 <= x.min() < x.max() <= 1


def test_keyframes_add_one_latent_frame_of_tokens_each():
    first, key = ImageSpec(Path("a"), 0, 1.0), ImageSpec(Path("b"), 40, 0.5)
    assert conditioning_token_count([first], 512, 288) == 0
    assert conditioning_token_count([first, key, ImageSpec(Path("c"), 96, 1.0)], 512, 288) == 2 * 9 * 16


def test_video_encoder_loads_the_checkpoint_bytes_and_encodes_to_the_latent_grid(tiny_dir):
    path = tiny_dir / "ltx2.safetensors"
    header = read_header(path)
    file_bytes = sum(t.end - t.begin for n, t in header.tensors.items() if n.startswith(VIDEO_ENCODER_PREFIXES))
    encoder = load_video_encoder(path, CPU, torch.bfloat16)
    loaded = sum(t.numel() * t.element_size() for t in encoder.state_dict().values())
    assert loaded == file_bytes == 1_556_322  # bf16 file, bf16 load: byte for byte what the planner sums
    with torch.inference_mode():
        latent = encoder(torch.zeros(1, 3, 1, 96, 64, dtype=torch.bfloat16))
    assert latent.shape == (1, 128, 1, 3, 2) and latent.dtype == torch.bfloat16
