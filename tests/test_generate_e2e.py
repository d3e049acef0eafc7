"""End to end on the tiny generated checkpoint: CLI -> MP4 with sound + report, bad input, offline, interrupts."""

from __future__ import annotations

import json
import socket
import struct
from fractions import Fraction
from pathlib import Path

import pytest
import torch

from ltx2_edge import cli
from ltx2_edge.engine.settings import RunSettings
from ltx2_edge.errors import EXIT_BUDGET
from ltx2_edge.models import weights
from ltx2_edge.mp4.mux import probe_mp4
from ltx2_edge.pipeline import Generator
from ltx2_edge.request import GenerationRequest

SMALL = ["--width", "96", "--height", "64", "--num-frames", "17", "--num-inference-steps", "2"]


def _args(tiny_dir: Path, out: Path, *extra: str) -> list[str]:
    return [
        "generate", "--checkpoint-path", str(tiny_dir / "ltx2.safetensors"), "--gemma-root", str(tiny_dir / "gemma"),
        "--prompt", "a red kite over the sea", "--output-path", str(out), "--quiet", *SMALL, *extra,
    ]  # fmt: skip


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_generate_writes_mp4_with_sound_and_report(tiny_dir, tmp_path, capsys):
    out = tmp_path / "clip.mp4"
    assert cli.main(_args(tiny_dir, out)) == 0
    probe = probe_mp4(out)
    assert (probe.video_codec, probe.pix_fmt, probe.width, probe.height) == ("h264", "yuv420p", 96, 64)
    assert probe.frames == 17 and probe.fps == Fraction(24)
    assert (probe.audio_codec, probe.sample_rate, probe.channels) == ("aac", 24000, 2)
    assert abs(probe.audio_duration_s - 17 / 24) <= 1 / 24
    meta = json.loads(probe.metadata["comment"])
    assert meta["prompt"] == "a red kite over the sea" and meta["seed"] == 10 and meta["model_version"]

    report = json.loads(out.with_suffix(".report.json").read_text())
    assert [s["stage"] for s in report["stages"]] == ["text_encode", "denoise", "decode"]
    assert all(s["seconds"] > 0 and s["peak_bytes"] > 0 and s["technique"] for s in report["stages"])
    assert report["request"]["width"] == 96 and report["device"]["type"] == "cpu"
    assert report["versions"]["ltx-core"] == "1.0.0" and report["total_seconds"] > 0
    assert report["guidance"]["passes"] == ["cond", "uncond"]
    table = capsys.readouterr().out
    assert "decode" in table and "peak GiB" in table
    decode = report["stages"][2]["details"]
    assert (decode["sample_rate"], decode["channels"], decode["source_channels"]) == (24000, 2, 2)
    assert decode["frames"] == 17 and decode["audio_samples"] == round(17 / 24 * 24000)
    assert decode["video_decode_seconds"] > 0 and decode["audio_decode_seconds"] > 0
    assert 0 <= decode["audio_hidden_seconds"] <= decode["audio_decode_seconds"] + 1e-6
    assert (decode["tiles"], decode["tiling"], decode["video_chunks"]) == (1, "untiled", 1)
    assert decode["video_encode_s"] > 0 and decode["encode_after_decode_seconds"] >= 0
    assert _leftovers(tmp_path) == ["clip.mp4", "clip.report.json"]


def test_mono_output(tiny_dir, tmp_path):
    out = tmp_path / "mono.mp4"
    assert cli.main(_args(tiny_dir, out, "--audio-channels", "1")) == 0
    assert probe_mp4(out).channels == 1
    decode = json.loads(out.with_suffix(".report.json").read_text())["stages"][2]["details"]
    assert (decode["channels"], decode["source_channels"]) == (1, 2)  # the vocoder's stereo, mixed down


def _pickle_file(path: Path) -> Path:
    path.write_bytes(b"\x80\x04\x95" + b"\x00" * 64)
    return path


def _safetensors_without_config(path: Path) -> Path:
    header = json.dumps({"x": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}).encode()
    path.write_bytes(struct.pack("<Q", len(header)) + header + b"\x00" * 4)
    return path


@pytest.mark.parametrize(
    ("case", "needle"),
    [
        ("width", "width=100"),
        ("frames", "--num-frames=96"),
        ("fps", "--frame-rate=0.0"),
        ("steps", "--num-inference-steps=0"),
        ("empty_prompt", "prompt="),
        ("long_prompt", "tokens"),
        ("missing_checkpoint", "does not exist"),
        ("checkpoint_is_dir", "not a file"),
        ("pickle", "pickle"),
        ("no_config", "config"),
        ("missing_gemma", "gemma"),
        ("missing_out_dir", "--output-path"),
        ("exists", "--overwrite"),
    ],
)
def test_bad_input_is_refused_before_weights(case, needle, tiny_dir, tmp_path, capsys, monkeypatch):
    def no_weights(*_a, **_k):
        raise AssertionError("weights were read before the input was validated")

    monkeypatch.setattr(weights, "load_into", no_weights)
    out = tmp_path / "out.mp4"
    args = _args(tiny_dir, out)
    ckpt = args.index("--checkpoint-path") + 1
    gemma = args.index("--gemma-root") + 1

    def set_flag(flag: str, value: str) -> None:
        args[args.index(flag) + 1] = value

    if case == "width":
        set_flag("--width", "100")
    elif case == "frames":
        set_flag("--num-frames", "96")
    elif case == "fps":
        args += ["--frame-rate", "0"]
    elif case == "steps":
        set_flag("--num-inference-steps", "0")
    elif case == "empty_prompt":
        set_flag("--prompt", "  ")
    elif case == "long_prompt":
        set_flag("--prompt", "waves " * 1500)
    elif case == "missing_checkpoint":
        args[ckpt] = str(tmp_path / "nope.safetensors")
    elif case == "checkpoint_is_dir":
        args[ckpt] = str(tmp_path)
    elif case == "pickle":
        args[ckpt] = str(_pickle_file(tmp_path / "model.ckpt"))
    elif case == "no_config":
        args[ckpt] = str(_safetensors_without_config(tmp_path / "bare.safetensors"))
    elif case == "missing_gemma":
        args[gemma] = str(tmp_path / "no-gemma")
    elif case == "missing_out_dir":
        set_flag("--output-path", str(tmp_path / "missing" / "out.mp4"))
    elif case == "exists":
        out.write_bytes(b"keep me")
    before = _leftovers(tmp_path)
    assert cli.main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("ltx2-edge: error:") and needle in err and "\n" not in err, err
    assert _leftovers(tmp_path) == before
    if case == "exists":
        assert out.read_bytes() == b"keep me"


def test_argparse_errors_are_one_line(capsys):
    with pytest.raises(SystemExit) as info:
        cli.main(["generate", "--prompt", "x"])
    assert info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("ltx2-edge: error:") and "\n" not in err


def test_whole_run_is_offline(tiny_dir, tmp_path, monkeypatch):
    attempts: list[object] = []

    def refuse(*args, **_kwargs):
        attempts.append(args)
        raise OSError("network is disabled in this test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    out = tmp_path / "offline.mp4"
    assert cli.main(_args(tiny_dir, out)) == 0
    assert out.is_file() and attempts == []


@pytest.mark.parametrize("exc", [KeyboardInterrupt, RuntimeError])
def test_failure_mid_run_leaves_no_partial_mp4(exc, tiny_dir, tmp_path, monkeypatch):
    from ltx2_edge.stages import decode

    real = decode.decode_video

    def failing(*a, **k):
        for i, chunk in enumerate(real(*a, **k)):
            if i == 0:
                yield chunk
            raise exc("CUDA out of memory (simulated)")
        raise exc("CUDA out of memory (simulated)")

    monkeypatch.setattr(decode, "decode_video", failing)  # what the overlapped decode stage runs
    out = tmp_path / "partial.mp4"
    if exc is KeyboardInterrupt:
        assert cli.main(_args(tiny_dir, out)) == 130
    else:
        with pytest.raises(RuntimeError, match="simulated"):
            cli.main(_args(tiny_dir, out))
    assert _leftovers(tmp_path) == []


def test_long_lived_generator_reuses_resident_stages(tiny_dir, tmp_path, monkeypatch):
    from ltx2_edge.models import loaders

    calls: list[str] = []
    real = loaders.load_transformer

    def counting(*a, **k):
        calls.append("transformer")
        return real(*a, **k)

    monkeypatch.setattr(loaders, "load_transformer", counting)
    gen = Generator(tiny_dir / "ltx2.safetensors", tiny_dir / "gemma", RunSettings(keep_resident=True, budget=None))
    request = GenerationRequest(prompt="rain on a tin roof", width=64, height=64, num_frames=9, num_inference_steps=2)
    first = gen.generate(request, tmp_path / "a.mp4")
    second = gen.generate(request, tmp_path / "b.mp4")
    assert calls == ["transformer"]
    assert torch.equal(first.latents.video, second.latents.video)
    assert torch.equal(first.latents.audio, second.latents.audio)
    gen.close()


def test_keep_resident_is_refused_loudly_under_a_budget(tiny_dir):
    gen = Generator(tiny_dir / "ltx2.safetensors", tiny_dir / "gemma", RunSettings(keep_resident=True))
    assert gen.setup.keep_resident is False and any("keep_resident" in n for n in gen.setup.notes)


def test_plan_command_prints_every_stage(tiny_dir, capsys):
    argv = ["plan", "--checkpoint-path", str(tiny_dir / "ltx2.safetensors"), "--gemma-root", str(tiny_dir / "gemma"),
            "--budget", "2GiB"]  # fmt: skip
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    for stage in ("text_encode", "embeddings", "denoise", "decode"):
        assert stage in out
    assert "audio decoder + vocoder beside it" in out
    assert "budget: device 2.0 GiB" in out and "predicted" in out


@pytest.mark.parametrize("value", ["0", "-1", "12XB", ""])
def test_bad_budget_is_refused(value, tiny_dir, tmp_path, capsys):
    assert cli.main([*_args(tiny_dir, tmp_path / "x.mp4"), "--budget", value]) == 2
    err = capsys.readouterr().err
    assert "budget" in err and "32GiB" in err and "\n" not in err.strip()


def test_impossible_budget_is_refused_with_the_smallest_that_works(tiny_dir, tmp_path, capsys, monkeypatch):
    def no_weights(*_a, **_k):
        raise AssertionError("weights were read before the budget was checked")

    monkeypatch.setattr(weights, "load_into", no_weights)
    assert cli.main([*_args(tiny_dir, tmp_path / "x.mp4"), "--budget", "64MiB"]) == EXIT_BUDGET  # its own status
    err = capsys.readouterr().err.strip()
    assert "Smallest budget that works for this request" in err and "\n" not in err
    smallest = err.split("Smallest budget that works for this request: ")[1].split(" GiB")[0]
    monkeypatch.undo()
    capsys.readouterr()
    out = tmp_path / "ok.mp4"
    assert cli.main([*_args(tiny_dir, out), "--budget", f"{smallest}GiB"]) == 0
    report = json.loads(out.with_suffix(".report.json").read_text())
    assert report["budget"]["device_bytes"] == int(float(smallest) * 1024**3)


def test_stage_weights_are_released_between_stages(tiny_dir, tmp_path, monkeypatch):
    """Staged residency: with a budget, nothing holds the transformer or the decoders after their stage."""
    import gc

    from conftest import track_loaded_modules

    names = ("load_transformer", "load_video_decoder", "load_audio_decoder", "load_vocoder")
    refs = track_loaded_modules(monkeypatch, names)
    gen = Generator(tiny_dir / "ltx2.safetensors", tiny_dir / "gemma")
    request = GenerationRequest(prompt="rain", width=64, height=64, num_frames=9, num_inference_steps=2)
    gen.generate(request, tmp_path / "r.mp4")
    gc.collect()
    assert len(refs) == 4 and all(r() is None for r in refs)
