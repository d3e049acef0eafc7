"""bench/decode_bench.py runs on the CPU with the tiny checkpoint and records every mode of every case."""

from __future__ import annotations

import json

import pytest

from conftest import load_bench


@pytest.fixture(scope="module")
def bench():
    return load_bench("decode_bench")


def test_decode_bench_on_cpu(bench, tiny_dir, tmp_path, capsys):
    out = tmp_path / "decode.json"
    argv = ["--checkpoint-path", str(tiny_dir / "ltx2.safetensors"), "--device", "cpu", "--sizes", "128x64x17",
            "--budgets", "32,16", "--repeats", "2", "--out", str(out)]  # fmt: skip
    result = bench.main(argv)
    assert json.loads(out.read_text()) == json.loads(json.dumps(result, default=str))
    assert set(result["load_seconds"]) == {"video_decoder", "audio_decoder", "vocoder"}
    assert [(c["size"], c["budget_gib"], c["tiling"]) for c in result["cases"]] == [
        ("128x64x17", 32.0, "untiled"), ("128x64x17", 16.0, "untiled"),
    ]  # fmt: skip
    for case in result["cases"]:
        for mode in bench.MODES:
            runs = 1 if mode in ("encode", "stage") else 2
            assert len(case[mode]["seconds"]) == runs and all(s > 0 for s in case[mode]["seconds"]), mode
        assert case["video"]["frames"] == case["serial"]["frames"] == case["stage"]["frames"] == 17
        assert case["audio"]["sample_rate"] == 24000 and case["audio"]["samples"] == case["serial"]["samples"]
        assert case["stage"]["audio_samples"] == 17000  # 17 frames at 24 fps, 24 kHz
        ov = case["overlapped"]
        assert ov["chunks"] == 1 and 0 <= ov["audio_hidden_seconds"] <= ov["audio_seconds"] + 1e-6
        assert case["overlapped_over_video"] == pytest.approx(ov["median"] / case["video"]["median"])
        assert case["target_met"] == (ov["median"] <= 1.1 * case["video"]["median"])
        assert case["encode"]["file_bytes"] > 1000 and case["predicted_peak_bytes"] > 0
        assert "peak_allocated_bytes" not in case["video"]  # CPU: no device allocator to read
    lines = capsys.readouterr().out.strip().splitlines()
    assert (
        len(lines) == 2
        and lines[0].startswith("128x64x17 @32GiB untiled: video ")
        and "stage with encoding" in lines[0]
    )


def test_bad_size_is_refused(bench, tmp_path, capsys):
    with pytest.raises(SystemExit):
        bench.main(["--checkpoint-path", "x", "--out", str(tmp_path / "o.json"), "--sizes", "512x288"])
    assert "expected WIDTHxHEIGHTxFRAMES" in capsys.readouterr().err
