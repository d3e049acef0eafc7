"""A property-style sweep: generated hostile values for every numeric and path flag of every command.

Each case runs ``cli.main`` in this process on the tiny model with one flag set to a value drawn (seeded, so a
failure reproduces) from that flag's pool of values that must be refused, and asserts the rules of issue 20:
a non-zero exit (2 refused, 3 over the budget), exactly one ``ltx2-edge: error:`` line, no traceback, nothing
written or changed anywhere under the test's folders and the model's, and no weight read (the tensor reader and
every writer raise if they are reached). The cases that need the engine's output checks (an output that is an
input, a name without ``.mp4``, a pre-quantized file of another precision) are in
``test_hostile_engine_wiring.py``.
"""

from __future__ import annotations

import itertools
import os
import random
import shutil
import struct
import zlib
from pathlib import Path

import pytest

from ltx2_edge import cli
from ltx2_edge.checkpoint.names import UPSAMPLER_FILE
from ltx2_edge.streaming.tensor_reader import TensorReader

SEED = 20  # change it to draw other values; every pool below holds only values that must be refused
DRAWS = 2  # values per flag and command
SMALL = ["--width", "64", "--height", "64", "--num-frames", "9", "--quiet"]
STEPS = ["--num-inference-steps", "1"]


_KINDS = itertools.count()


def _huge(rng: random.Random) -> int:
    return 10 ** rng.randint(19, 400)  # above every flag's range, seeds (2**63 - 1) included


def _not_numbers(rng: random.Random) -> str:
    return rng.choice(["abc", "", "1.5.2", "nan", "inf", "-inf", "1e309", "0x20", "12 8", "--", "64.0"])


def _int_pool(bad_ints: list[int], rng: random.Random) -> str:
    """A value for an integer flag: one of ``bad_ints``, a huge or a negative number, or text that is no integer."""
    kind = next(_KINDS) % 4  # in turn, so that every kind reaches every flag across the draws
    if kind == 0:
        return str(rng.choice(bad_ints))
    if kind == 1:
        return str(_huge(rng))
    if kind == 2:
        return str(-rng.randint(1, 2**70))
    return _not_numbers(rng)


def _side(rng: random.Random) -> str:
    return _int_pool([0, 1, 33, 100, 8224, 10**9 * 32, 63, 8193], rng)


def _frames(rng: random.Random) -> str:
    return _int_pool([0, 2, 8, 96, 1449, 10**6 * 8 + 1], rng)


def _steps(rng: random.Random) -> str:
    return _int_pool([0, 1001, 10**12], rng)


def _seed(rng: random.Random) -> str:
    return _int_pool([2**63, 2**64, 10**30], rng)


def _prefetch(rng: random.Random) -> str:
    return _int_pool([0, 1, 48, 10**10], rng)


def _rank(rng: random.Random) -> str:
    return _int_pool([0, 513, 10**12], rng)


def _fps(rng: random.Random) -> str:
    return rng.choice(["0", "-24", "nan", "inf", "-inf", "1e-300", "1e300", "0.999", "240.001", "1e309", "abc", ""])


def _size(rng: random.Random) -> str:
    return rng.choice(["0", "-1", "9" * rng.randint(25, 400), "1e400", "8EiB", "12XB", "", "nan", "inf", "GiB",
                       "0.0000001", "1" + "0" * rng.randint(20, 60) + "TiB", "1.2.3g"])  # fmt: skip


def _device(rng: random.Random) -> str:
    return rng.choice(["foo", "cuda:x", "gpu", "cuda:", "CPU", "", "cuda:1:2", "tpu", "-1"])


def _prompt(rng: random.Random) -> str:
    return rng.choice(["", "   ", "\t\n", "rain \udcff on a roof", "\udc80" * 3, "x" * rng.randint(100_001, 300_000)])


def _strength(rng: random.Random) -> str:
    return rng.choice(["nan", "inf", "-inf", "1e20", "-11", "10.5", "1e309", "abc"])


@pytest.fixture(scope="module")
def files(tiny_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Bad input files of every kind, made once."""
    root = tmp_path_factory.mktemp("hostile-files")
    lfs = root / "lfs.safetensors"
    lfs.write_text("version https://git-lfs.github.com/spec/v1\noid sha256:ab\nsize 43000000000\n")
    pickle = root / "model.ckpt"
    pickle.write_bytes(b"\x80\x04\x95" + b"\0" * 64)
    overlap = root / "overlap.safetensors"
    raw = (
        b'{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}'
    )
    overlap.write_bytes(struct.pack("<Q", len(raw)) + raw + b"\0" * 12)
    cut = root / "cut.safetensors"
    cut.write_bytes((tiny_dir / "ltx2.safetensors").read_bytes()[:4096])
    text = root / "notes.txt"
    text.write_text("not a model")
    gemma_lfs = Path(shutil.copytree(tiny_dir / "gemma", root / "gemma-lfs"))
    (gemma_lfs / "tokenizer.json").write_bytes(lfs.read_bytes())
    png = root / "bomb.png"
    ihdr = struct.pack(">IIBBBBB", 60_000, 60_000, 8, 2, 0, 0, 0)
    chunk = struct.pack(">I", len(ihdr)) + b"IHDR" + ihdr + struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    png.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk)
    folder = root / "a-folder"
    folder.mkdir()
    return {"lfs": lfs, "pickle": pickle, "overlap": overlap, "cut": cut, "text": text, "gemma_lfs": gemma_lfs,
            "bomb": png, "folder": folder, "missing": root / "missing" / "x.safetensors"}  # fmt: skip


def _model_file(files: dict[str, Path], rng: random.Random) -> str:
    return str(files[rng.choice(["lfs", "pickle", "overlap", "cut", "text", "folder", "missing"])])


def _gemma(files: dict[str, Path], rng: random.Random) -> str:
    return str(files[rng.choice(["gemma_lfs", "text", "missing", "folder"])])


def _image(files: dict[str, Path], tiny_dir: Path, rng: random.Random) -> list[str]:
    good = str(tiny_dir / "ltx2.safetensors")  # a real file that is not an image
    return rng.choice([[str(files["bomb"]), "0", "1"], [str(files["missing"]), "0", "1"], [good, "0", "1"],
                       [str(files["folder"]), "0", "1"], ["x.png", "9", "1"], ["x.png", "0", "nan"],
                       ["x.png", "0", "2"], ["x.png", "0", "1", "52"], ["x.png", "0"],
                       ["x.png", "-1", "1"]])  # fmt: skip


def _output(work: Path, rng: random.Random) -> str:
    existing = work / "kept.mp4"
    return str(rng.choice([work / "missing" / "o.mp4", work, Path("/dev/null"), work / ("y" * 300 + ".mp4"),
                           existing]))  # fmt: skip


_DISTILLED = ["--pipeline", "distilled", "--height", "128", "--width", "128"]
_TWO_STAGE = ["--pipeline", "two-stage", "--height", "128", "--width", "128"]


def _lora(files: dict[str, Path], tiny_dir: Path, rng: random.Random) -> list[str]:
    """PATH [STRENGTH] of a LoRA that must be refused: no such file, not a LoRA, or a strength out of range."""
    return rng.choice([[str(files["missing"])], [str(tiny_dir / "ltx2.safetensors")], [str(files["text"])],
                       [str(files["folder"]), "0.5"], [str(tiny_dir / "ltx2.safetensors"), _strength(rng)],
                       ["a.safetensors", "1", "2"]])  # fmt: skip


def _clip_cases(files, tiny_dir, work, rng) -> dict[str, list[str]]:
    """Flag -> the argument list of one hostile draw, for the clip flags generate, plan and demo share."""
    return {
        "--width": ["--width", _side(rng)],
        "--height": ["--height", _side(rng)],
        "--num-frames": ["--num-frames", _frames(rng)],
        "--frame-rate": ["--frame-rate", _fps(rng)]
        if rng.random() < 0.8
        else ["--num-frames", "1", "--frame-rate", str(rng.uniform(50.001, 240))],  # fmt: skip
        "--num-inference-steps": ["--num-inference-steps", _steps(rng)],
        "--seed": ["--seed", _seed(rng)],
        "--prompt": ["--prompt", _prompt(rng)],
        "--budget": ["--budget", _size(rng)],
        "--host-budget": ["--host-budget", _size(rng)],
        "--prefetch-depth": ["--prefetch-depth", _prefetch(rng)],
        "--device": ["--device", _device(rng)],
        "--image": ["--image", *_image(files, tiny_dir, rng)],
        "--lora": ["--lora", *_lora(files, tiny_dir, rng)],
        "--spatial-upsampler-path": [*_DISTILLED, "--spatial-upsampler-path", _model_file(files, rng)],
        "--distilled-lora": [
            *_TWO_STAGE,
            "--spatial-upsampler-path",
            str(tiny_dir / UPSAMPLER_FILE),
            "--distilled-lora",
            *_lora(files, tiny_dir, rng),
        ],  # fmt: skip
        "--output-path": ["--output-path", _output(work, rng)],
    }


def _cases(files: dict[str, Path], tiny_dir: Path, work: Path) -> list[tuple[str, str, list[str]]]:
    global _KINDS
    rng, _KINDS = random.Random(SEED), itertools.count()
    ckpt, gemma = str(tiny_dir / "ltx2.safetensors"), str(tiny_dir / "gemma")
    cases = []
    for _ in range(DRAWS):
        for command in ("generate", "plan", "demo"):
            for flag, extra in _clip_cases(files, tiny_dir, work, rng).items():
                if command == "plan" and flag == "--output-path":
                    continue  # plan writes nothing
                model = [] if command == "demo" else ["--checkpoint-path", ckpt, "--gemma-root", gemma]
                out = ["--output-path", str(work / "o.mp4")] if command != "plan" and flag != "--output-path" else []
                prompt = [] if flag == "--prompt" else ["--prompt", "rain on a tin roof"]
                steps = [] if flag == "--spatial-upsampler-path" else STEPS  # distilled runs its own 8 steps
                cases.append((command, flag, [command, *model, *prompt, *SMALL, *steps, *out, *extra]))
            if command != "demo":
                rest = ["--prompt", "x", *SMALL, "--output-path", str(work / "o.mp4")]
                bad_model, bad_gemma = _model_file(files, rng), _gemma(files, rng)
                cases += [
                    (command, "--checkpoint-path", [command, "--checkpoint-path", bad_model, "--gemma-root", gemma,
                                                    *rest, *STEPS]),
                    (command, "--gemma-root", [command, "--checkpoint-path", ckpt, "--gemma-root", bad_gemma, *rest,
                                               *STEPS]),
                    (command, "--distilled-checkpoint-path", [command, "--distilled-checkpoint-path",
                                                              _model_file(files, rng), "--gemma-root", gemma, *rest,
                                                              "--pipeline", "distilled-one-stage"]),
                ]  # fmt: skip
        q = ["quantize", "--to", "int8"]
        cases += [
            ("quantize", "--checkpoint-path", [*q, "--checkpoint-path", _model_file(files, rng), "--out",
                                               str(work / "q.safetensors")]),
            ("quantize", "--gemma-root", [*q, "--gemma-root", _gemma(files, rng), "--out", str(work / "qg")]),
            ("quantize", "--out", [*q, "--checkpoint-path", ckpt, "--overwrite", "--out",
                                   rng.choice([ckpt, str(work / "missing" / "q.safetensors"), str(work),
                                               str(work / ("q" * 300))])]),
            ("quantize", "--out", [*q, "--gemma-root", gemma, "--out",
                                   rng.choice([gemma, str(Path(gemma) / "q"), str(work / "missing" / "g")])]),
            ("quantize", "--device", [*q, "--checkpoint-path", ckpt, "--out", str(work / "q.safetensors"),
                                      "--device", _device(rng)]),
            ("quantize", "--lora", [*q, "--checkpoint-path", ckpt, "--out", str(work / "q.safetensors"),
                                    "--lora", ckpt, _strength(rng)]),
            ("make-checkpoint", "--out", ["make-checkpoint", "--size", "tiny", "--out",
                                          rng.choice([str(work / "missing" / "m"), str(work / "kept.mp4")])]),
            ("make-checkpoint", "--gemma-dir", ["make-checkpoint", "--size", "tiny", "--out", str(work / "m"),
                                                "--gemma-dir", str(work / "missing" / "g")]),
            ("make-checkpoint", "--seed", ["make-checkpoint", "--size", "tiny", "--out", str(work / "m"),
                                           "--seed", _seed(rng)]),
            ("make-checkpoint", "--device", ["make-checkpoint", "--size", "tiny", "--out", str(work / "m"),
                                             "--device", _device(rng)]),
            ("make-lora", "--rank", ["make-lora", "--size", "tiny", "--out", str(work / "l.safetensors"),
                                     "--rank", _rank(rng)]),
            ("make-lora", "--seed", ["make-lora", "--size", "tiny", "--out", str(work / "l.safetensors"),
                                     "--seed", _seed(rng)]),
            ("make-lora", "--out", ["make-lora", "--size", "tiny", "--overwrite", "--out",
                                    rng.choice([ckpt, str(work / "missing" / "l.safetensors"), str(work),
                                                str(work / ("l" * 300))])]),
        ]  # fmt: skip
    return cases


def _snapshot(*roots: Path) -> dict[str, tuple[int, int]]:
    out = {}
    for root in roots:
        for dirpath, _, names in os.walk(root):
            for name in names:
                p = Path(dirpath) / name
                st = p.lstat()
                out[str(p)] = (st.st_size, st.st_mtime_ns)
    return out


def test_every_flag_of_every_command_refuses_hostile_values(tiny_dir, files, tmp_path, monkeypatch, capsys):
    def never(*_a, **_k):
        raise AssertionError("reached a weight read or a file write with a hostile value")

    monkeypatch.setattr(TensorReader, "read", never)
    for module, name in (("ltx2_edge.quant.convert", "_write"), ("ltx2_edge.synth.generator", "write_safetensors"),
                         ("ltx2_edge.synth.upsampler_writer", "write_safetensors"),
                         ("ltx2_edge.synth.lora_writer", "save_file")):  # fmt: skip
        monkeypatch.setattr(f"{module}.{name}", never)
    work = tmp_path / "work"
    work.mkdir()
    (work / "kept.mp4").write_bytes(b"the user's clip")
    cache = tmp_path / "cache"
    shutil.copytree(tiny_dir, cache / "ltx2-edge" / "tiny-v1")  # the demo's model, already made
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache))
    monkeypatch.chdir(work)
    before = _snapshot(tmp_path, tiny_dir, files["lfs"].parent)
    cases = _cases(files, tiny_dir, work)
    assert {c for c, _, _ in cases} == {"generate", "plan", "demo", "quantize", "make-checkpoint", "make-lora"}
    for command, flag, argv in cases:
        try:
            code = cli.main(argv)
        except SystemExit as exc:  # argparse: a value of the wrong type or an unknown choice
            code = exc.code
        err = capsys.readouterr().err
        where = f"{command} {flag}: {[a[:60] for a in argv[-3:]]}"
        errors = [line for line in err.splitlines() if line.startswith("ltx2-edge: error:")]
        assert code in (2, 3), f"{where}: exit {code}: {err[-2000:]}"
        assert "Traceback" not in err and len(errors) == 1, f"{where}: {err[-2000:]}"
        assert _snapshot(tmp_path, tiny_dir, files["lfs"].parent) == before, f"{where}: something was written"
    assert (work / "kept.mp4").read_bytes() == b"the user's clip"
