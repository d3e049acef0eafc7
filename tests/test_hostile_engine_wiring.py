"""Issue 20's rules that the engine carries out, through the CLI: an output is never an input, a pre-quantized
file of another precision is refused before any weight (``plan`` too), the MP4 and its report land as one unit,
names without ``.mp4`` or beside another run's report are refused, a name at the filesystem's limit works.

The checks themselves live in ``atomic``, ``video_output`` and ``checkpoint.validate`` (tested directly in
``test_hostile_paths.py`` and ``test_hostile_inputs.py``); these tests prove the Generator calls them.
"""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path

import pytest

from ltx2_edge import cli
from ltx2_edge.atomic import name_max
from ltx2_edge.errors import EXIT_OUTPUT, EXIT_REFUSED
from ltx2_edge.report import RunReport
from ltx2_edge.streaming.tensor_reader import TensorReader

SMALL = ["--width", "64", "--height", "64", "--num-frames", "9", "--num-inference-steps", "1", "--quiet"]


@pytest.fixture(scope="module")
def model(tiny_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the tiny model (these tests hard-link its files under output names), with a LoRA and an image."""
    from PIL import Image

    from ltx2_edge.synth.lora_writer import make_lora

    root = Path(shutil.copytree(tiny_dir, tmp_path_factory.mktemp("wiring") / "model"))
    make_lora("tiny", root / "style.safetensors", 4)
    Image.new("RGB", (64, 64), (200, 40, 40)).save(root / "first.png")
    return root


def _args(model: Path, out: Path, *extra: str) -> list[str]:
    return ["generate", "--checkpoint-path", str(model / "ltx2.safetensors"), "--gemma-root", str(model / "gemma"),
            "--prompt", "rain on a tin roof", "--output-path", str(out), *SMALL, *extra]  # fmt: skip


def _tree(*roots: Path) -> dict[str, tuple[int, int]]:
    return {
        str(p): (p.stat().st_size, p.stat().st_mtime_ns) for r in roots for p in sorted(r.rglob("*")) if p.is_file()
    }


def _refused(capsys, code: int, needle: str, expected: int = EXIT_REFUSED) -> str:
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("ltx2-edge: error:")]
    assert code == expected and len(lines) == 1 and "Traceback" not in err, err
    assert needle in lines[0], lines[0]
    return lines[0]


@pytest.fixture
def no_weights(monkeypatch):
    def never(*_a, **_k):
        raise AssertionError("a weight was read before the input was refused")

    monkeypatch.setattr(TensorReader, "read", never)


@pytest.mark.parametrize("which", ["ltx2.safetensors", "gemma/model-00001-of-00001.safetensors", "gemma/config.json",
                                   "gemma/tokenizer.json", "ltx-2-spatial-upscaler-x2-1.0.safetensors",
                                   "style.safetensors", "first.png"])  # fmt: skip
def test_an_output_that_is_one_of_the_inputs_is_refused_even_with_overwrite(which, model, tmp_path, capsys,
                                                                             no_weights):  # fmt: skip
    out = tmp_path / "clip.mp4"
    os.link(model / which, out)  # the same file under an MP4's name: replacing it would destroy the input
    before = _tree(model, tmp_path)
    extra = ["--pipeline", "distilled", "--width", "128", "--height", "128", "--num-inference-steps", "8",
             "--spatial-upsampler-path", str(model / "ltx-2-spatial-upscaler-x2-1.0.safetensors")]  # fmt: skip
    extra = {"style.safetensors": ["--lora", str(model / "style.safetensors"), "0.5"],
             "first.png": ["--image", str(model / "first.png"), "0", "1"],
             "ltx-2-spatial-upscaler-x2-1.0.safetensors": extra}.get(which, [])  # fmt: skip
    code = cli.main(_args(model, out, "--overwrite", *extra))
    _refused(capsys, code, "not one of this run's inputs")
    assert _tree(model, tmp_path) == before


@pytest.fixture(scope="module")
def fp8_file(model: Path) -> Path:
    from ltx2_edge.quant.convert import quantize_checkpoint

    out = model.parent / "ltx2-fp8.safetensors"
    quantize_checkpoint(model / "ltx2.safetensors", out, "fp8")
    return out


@pytest.mark.parametrize("command", ["generate", "plan"])
@pytest.mark.parametrize("quantization", ["auto", "int8", "bf16"])
def test_a_pre_quantized_file_of_another_precision_is_refused_before_any_weight(command, quantization, model,
                                                                                fp8_file, tmp_path, capsys,
                                                                                no_weights):  # fmt: skip
    argv = _args(model, tmp_path / "clip.mp4", "--quantization", quantization)
    argv[0], argv[argv.index("--checkpoint-path") + 1] = command, str(fp8_file)
    line = _refused(capsys, cli.main(argv), "--quantization=")
    assert "pre-quantized to fp8" in line and "--quantization fp8" in line
    assert list(tmp_path.iterdir()) == []


def test_a_failing_report_write_leaves_neither_file(model, tmp_path, capsys, monkeypatch):
    def full(*_a, **_k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(RunReport, "to_json", full)
    _refused(capsys, cli.main(_args(model, tmp_path / "clip.mp4")), "no space left", EXIT_OUTPUT)
    assert list(tmp_path.iterdir()) == []


def test_a_failing_report_write_keeps_the_previous_pair(model, tmp_path, capsys, monkeypatch):
    (tmp_path / "clip.mp4").write_bytes(b"old mp4")
    (tmp_path / "clip.report.json").write_bytes(b"old report")
    monkeypatch.setattr(RunReport, "to_json", lambda *_a, **_k: (_ for _ in ()).throw(OSError(errno.ENOSPC, "full")))
    _refused(capsys, cli.main(_args(model, tmp_path / "clip.mp4", "--overwrite")), "no space left", EXIT_OUTPUT)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == {"clip.mp4": b"old mp4",
                                                                     "clip.report.json": b"old report"}  # fmt: skip


@pytest.mark.parametrize("name", ["clip", "clip.mov", "clip.mp4.tmp"])
def test_names_without_mp4_are_refused_before_any_weight(name, model, tmp_path, capsys, no_weights):
    _refused(capsys, cli.main(_args(model, tmp_path / name)), "ending in .mp4")
    assert list(tmp_path.iterdir()) == []


def test_another_runs_report_is_not_overwritten_without_overwrite(model, tmp_path, capsys, no_weights):
    (tmp_path / "clip.report.json").write_bytes(b"another run's report")
    _refused(capsys, cli.main(_args(model, tmp_path / "clip.mp4")), "clip.report.json")
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == {"clip.report.json": b"another run's report"}


def test_a_name_at_the_filesystems_limit_is_written(model, tmp_path, capsys):
    longest = name_max(tmp_path) - len(".report.json")  # the report's name is the longer one
    out = tmp_path / ("k" * longest + ".mp4")
    assert cli.main(_args(model, out)) == 0, capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([out.name, out.with_suffix(".report.json").name])
    _refused(capsys, cli.main(_args(model, tmp_path / ("k" * (longest + 1) + ".mp4"))), f"at most {longest + 4} bytes")
