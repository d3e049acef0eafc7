"""Input files and values a hostile (or unlucky) user hands over, refused in one line before any weight is read.

Safetensors headers are checked against the safetensors library itself: every structurally malformed header it
refuses, ``read_header`` refuses too (one ``CheckpointError`` line naming the file), and what it accepts we
accept. Then setup mistakes (git-lfs pointers, cut downloads, misshapen Gemma configs), image headers that claim
an enormous size, prompts that are not UTF-8, absurd numbers, and the one spelling of every error's field.
"""

from __future__ import annotations

import json
import shutil
import struct
import zlib
from pathlib import Path

import pytest
from safetensors import safe_open

from ltx2_edge.checkpoint.header import read_header
from ltx2_edge.checkpoint.validate import check_precision_matches, inspect_gemma_folder, stored_precision
from ltx2_edge.errors import CheckpointError, RequestError, flag_name
from ltx2_edge.inputs import ImageSpec, LoraSpec
from ltx2_edge.plan.budget import parse_size
from ltx2_edge.request import MAX_FRAMES, MAX_SIDE, MAX_STEPS, GenerationRequest, check_device
from ltx2_edge.stages.conditioning import MAX_IMAGE_PIXELS, check_image_files


def _entry(dtype: str, shape: list, begin: object, end: object) -> dict:
    return {"dtype": dtype, "shape": shape, "data_offsets": [begin, end]}


_OK = _entry("F32", [2], 0, 8)
HEADERS = {  # name -> (header JSON or raw bytes, data bytes after the header)
    "ok": ({"a": _OK}, 8),
    "metadata": ({"__metadata__": {"k": "v"}, "a": _OK}, 8),
    "two tensors": ({"a": _OK, "b": _entry("BF16", [2, 2], 8, 16)}, 16),
    "empty": ({}, 0),
    "zero-size tensor": ({"a": _OK, "z": _entry("F32", [0], 8, 8)}, 8),
    "entry not an object": ({"a": [1, 2]}, 8),
    "entry a string": ({"a": "x"}, 8),
    "empty offsets": ({"a": {"dtype": "F32", "shape": [2], "data_offsets": []}}, 8),
    "three offsets": ({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8, 9]}}, 8),
    "negative offsets": ({"a": _entry("F32", [2], -8, 0)}, 8),
    "reversed offsets": ({"a": _entry("F32", [0], 8, 0)}, 8),
    "float offsets": ({"a": _entry("F32", [2], 0.0, 8.0)}, 8),
    "overlapping": ({"a": _OK, "b": _entry("F32", [2], 4, 12)}, 12),
    "same bytes twice": ({"a": _OK, "b": _OK}, 8),
    "gap between": ({"a": _OK, "b": _entry("F32", [2], 12, 20)}, 20),
    "not from zero": ({"a": _entry("F32", [2], 8, 16)}, 16),
    "past the end": ({"a": _entry("F32", [4], 0, 16)}, 8),
    "trailing bytes": ({"a": _OK}, 16),
    "size mismatch": ({"a": _entry("F32", [3], 0, 8)}, 8),
    "NaN shape": (b'{"a": {"dtype": "F32", "shape": [NaN], "data_offsets": [0, 8]}}', 8),
    "Infinity shape": (b'{"a": {"dtype": "F32", "shape": [Infinity], "data_offsets": [0, 8]}}', 8),
    "float shape": ({"a": _entry("F32", [2.0], 0, 8)}, 8),
    "negative shape": ({"a": _entry("F32", [-2, -1], 0, 8)}, 8),
    "bool in shape": ({"a": _entry("F32", [True, 2], 0, 8)}, 8),
    "string in shape": ({"a": _entry("F32", ["2"], 0, 8)}, 8),
    "shape not a list": ({"a": {"dtype": "F32", "shape": 2, "data_offsets": [0, 8]}}, 8),
    "huge shape": ({"a": _entry("F32", [2**70], 0, 8)}, 8),
    "unknown dtype": ({"a": _entry("F12", [2], 0, 8)}, 8),
    "dtype not a string": ({"a": _entry(5, [2], 0, 8)}, 8),  # type: ignore[arg-type]
    "metadata not an object": ({"__metadata__": [1], "a": _OK}, 8),
    "metadata not strings": ({"__metadata__": {"k": 1}, "a": _OK}, 8),
    "not UTF-8": (b'{"a\xff": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}', 8),
    "header a list": (b"[1, 2, 3]", 8),
}


def _write(path: Path, header: dict | bytes, data: int) -> Path:
    raw = header if isinstance(header, bytes) else json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + b"\0" * data)
    return path


@pytest.mark.parametrize("case", sorted(HEADERS))
def test_headers_are_refused_exactly_when_safetensors_refuses_them(case, tmp_path):
    path = _write(tmp_path / "m.safetensors", *HEADERS[case])
    try:
        with safe_open(str(path), "pt") as f:
            names = sorted(f.keys())
        library_ok = True
    except Exception:  # noqa: BLE001  (safetensors raises its own SafetensorError or an OSError)
        library_ok = False
    if library_ok:
        assert sorted(read_header(path).tensors) == names
        return
    with pytest.raises(CheckpointError) as err:
        read_header(path)
    assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_a_git_lfs_pointer_is_named_as_one(tmp_path):
    path = tmp_path / "ltx-2-19b-dev.safetensors"
    path.write_text("version https://git-lfs.github.com/spec/v1\noid sha256:0123\nsize 43000000000\n")
    with pytest.raises(CheckpointError, match="git-lfs pointer.*git lfs pull"):
        read_header(path)


@pytest.fixture
def gemma_copy(tiny_dir, tmp_path) -> Path:
    return Path(shutil.copytree(tiny_dir / "gemma", tmp_path / "gemma"))


@pytest.mark.parametrize(
    ("file", "content", "message"),
    [
        ("tokenizer.json", b"version https://git-lfs.github.com/spec/v1\noid sha256:ab\nsize 1\n", "git-lfs pointer"),
        ("tokenizer.model", b"version https://git-lfs.github.com/spec/v1\noid sha256:ab\nsize 1\n", "git-lfs pointer"),
        ("tokenizer.json", b'{"version": "1.0", "mod', "tokenizer.json is not JSON"),
        ("tokenizer.json", b"[]", "is not a tokenizer file"),
        ("tokenizer.json", b"", "is empty"),
        ("tokenizer_config.json", b"{oops", "tokenizer_config.json is not JSON"),
    ],
)
def test_broken_tokenizer_files_are_refused_in_one_line(gemma_copy, file, content, message):
    (gemma_copy / file).write_bytes(content)
    with pytest.raises(CheckpointError) as err:
        inspect_gemma_folder(gemma_copy)
    assert message in str(err.value) and str(gemma_copy / file) in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda c: c.update(text_config=[1, 2]), "its text_config is list, not an object"),
        (lambda c: c.update(vision_config="big"), "its vision_config is str, not an object"),
        (lambda c: c["text_config"].update(num_hidden_layers=10**7), "text_config.num_hidden_layers is 10000000"),
        (lambda c: c["text_config"].update(hidden_size="big"), "text_config.hidden_size is 'big'"),
        (lambda c: c["text_config"].update(num_attention_heads=0), "text_config.num_attention_heads is 0"),
        (lambda c: c["text_config"].update(head_dim=True), "text_config.head_dim is True"),
        (lambda c: c["vision_config"].update(image_size=-4), "vision_config.image_size is -4"),
    ],
)
def test_gemma_configs_of_the_wrong_shape_are_refused(gemma_copy, change, message):
    config = json.loads((gemma_copy / "config.json").read_text())
    change(config)
    (gemma_copy / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError) as err:
        inspect_gemma_folder(gemma_copy)
    assert message in str(err.value) and "\n" not in str(err.value)


def _png_header(path: Path, width: int, height: int) -> Path:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    body = chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + body)
    return path


@pytest.mark.parametrize("size", [(60_000, 60_000), (2**31 - 1, 2**31 - 1), (10_000, 9_000)])
def test_an_image_claiming_an_enormous_size_is_refused_before_decoding(size, tmp_path):
    path = _png_header(tmp_path / "bomb.png", *size)
    with pytest.raises(RequestError) as err:
        check_image_files([ImageSpec(path, 0, 1.0)])
    message = str(err.value)
    assert err.value.field == "--image" and f"at most {MAX_IMAGE_PIXELS / 1e6:.0f} megapixels" in message
    assert "\n" not in message


@pytest.mark.parametrize(
    ("kwargs", "flag", "allowed"),
    [
        ({"num_inference_steps": 3_000_000_000}, "--num-inference-steps", f"at most {MAX_STEPS}"),
        ({"frame_rate": 1e-300}, "--frame-rate", "from 1 to 240"),
        ({"frame_rate": 1e300}, "--frame-rate", "from 1 to 240"),
        ({"frame_rate": float("inf")}, "--frame-rate", "from 1 to 240"),
        ({"frame_rate": float("nan")}, "--frame-rate", "from 1 to 240"),
        ({"width": 3_200_000_000}, "--width", f"at most {MAX_SIDE}"),
        ({"height": 10**400}, "--height", f"at most {MAX_SIDE}"),
        ({"num_frames": 800_000_001}, "--num-frames", f"from 1 to {MAX_FRAMES}"),
        ({"seed": 10**30}, "--seed", "from 0 to"),
        ({"num_frames": 1, "frame_rate": 60.0}, "--frame-rate", "below 50 fps for 1 frame(s)"),
        ({"prompt": "rain \udcff on a roof"}, "--prompt", "text in UTF-8 (character 5"),
        ({"negative_prompt": "\udc80"}, "--negative-prompt", "text in UTF-8"),
        ({"prompt": "x" * 200_000}, "--prompt", "at most 100000 characters"),
        ({"audio_channels": True}, "--audio-channels", "1 (mono) or 2 (stereo)"),
    ],
)
def test_absurd_numbers_are_refused_with_their_range(kwargs, flag, allowed):
    with pytest.raises(RequestError) as err:
        GenerationRequest(**{"prompt": "a cat", **kwargs})
    message = str(err.value)
    assert err.value.field == flag and message.startswith(flag + "=") and allowed in message, message
    assert "\n" not in message and len(message) < 400


@pytest.mark.parametrize(("frames", "fps"), [(1, 49.0), (9, 240.0), (1, 1.0), (MAX_FRAMES, 240.0)])
def test_extreme_but_legal_clips_are_accepted(frames, fps):
    assert GenerationRequest(prompt="x", num_frames=frames, frame_rate=fps).duration_s == frames / fps


@pytest.mark.parametrize("strength", [float("nan"), float("inf"), 1e20, -11.0, 10.5])
def test_lora_strengths_beyond_the_range_are_refused(strength):
    with pytest.raises(RequestError) as err:
        LoraSpec(Path("style.safetensors"), strength)
    assert err.value.field == "--lora" and "from -10 to 10" in str(err.value)
    assert LoraSpec(Path("style.safetensors"), -10).strength == -10.0


@pytest.mark.parametrize("text", ["9" * 400, "1e400", "8EiB", "0.0000001", "1" + "0" * 30 + "TiB"])
def test_sizes_beyond_eight_exbibytes_are_refused(text):
    with pytest.raises(RequestError) as err:
        parse_size(text)
    assert err.value.field == "--budget" and "below 8 EiB" in str(err.value) and len(str(err.value)) < 300


@pytest.mark.parametrize("device", ["foo", "cuda:x", "gpu", "cuda:", "CPU", "", 3])
def test_unknown_devices_are_refused_before_torch_is_asked(device):
    with pytest.raises(RequestError) as err:
        check_device(device)
    assert err.value.field == "--device" and "cpu, cuda or cuda:N" in str(err.value)
    assert check_device("cuda:1") == "cuda:1" and check_device(None) is None


def test_every_field_is_spelled_as_its_flag():
    for given in ("num_inference_steps", "num-inference-steps", "--num-inference-steps", " seed "):
        err = RequestError(given, 0, "x")
        assert err.field == flag_name(given) and err.field.startswith("--") and "_" not in err.field
        assert str(err).startswith(err.field + "=") and err.param == err.field[2:].replace("-", "_")


@pytest.mark.parametrize("dtype", ["F8_E4M3", "I8"])
def test_a_pre_quantized_file_of_another_precision_is_refused_from_its_header(dtype, tmp_path):
    stored = {"F8_E4M3": "fp8", "I8": "int8"}[dtype]
    header = {"blocks.0.ff.weight": _entry(dtype, [2, 2], 0, 4), "blocks.0.ff.weight_scale": _entry("F32", [2], 4, 12)}
    path = _write(tmp_path / "q.safetensors", header, 12)
    read = read_header(path)
    assert stored_precision(read) == stored
    check_precision_matches([read], stored, "auto")  # the file's own precision runs
    for asked in ("fp8", "int8", "bf16"):
        if asked == stored:
            continue
        with pytest.raises(RequestError) as err:
            check_precision_matches([read], asked, asked)
        message = str(err.value)
        assert err.value.field == "--quantization" and f"q.safetensors is pre-quantized to {stored}" in message
        assert f"--quantization {stored}" in message and "\n" not in message
    other = "int8" if stored == "fp8" else "fp8"
    with pytest.raises(RequestError, match=f"which means {other} on this device"):
        check_precision_matches([read], other, "auto")
    plain = read_header(_write(tmp_path / "f.safetensors", {"a.weight": _entry("BF16", [2, 2], 0, 8)}, 8))
    assert stored_precision(plain) is None
    check_precision_matches([plain], "int8", "auto")  # a float file is quantized at load: anything goes
