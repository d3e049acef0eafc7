"""bench/multi_gpu.py runs unchanged on the CPU: two gloo ranks and the one-device runs on the tiny model.

Its timings mean nothing here (two CPU processes share the cores); what is checked is that the program runs end
to end and that its equality and memory verdicts are read from the runs, not assumed: the same latents give
"bit-identical", a perturbed copy does not.
"""

from __future__ import annotations

import json

import torch

from conftest import load_bench


def test_the_multi_gpu_bench_runs_on_two_gloo_ranks(tiny_dir, tmp_path):
    bench = load_bench("multi_gpu")
    out = tmp_path / "multi_gpu.json"
    result = bench.main(["--checkpoint-path", str(tiny_dir / "ltx2.safetensors"), "--gemma-root",
                         str(tiny_dir / "gemma"), "--device", "cpu", "--ranks", "2", "--width", "96", "--height", "64",
                         "--frames", "17", "--steps", "2", "--with-sequential", "--work", str(tmp_path / "work"),
                         "--out", str(out), "--quiet"])  # fmt: skip
    assert json.loads(out.read_text()) == json.loads(json.dumps(result))
    eq = result["equality"]
    assert eq["ranks_identical"]
    assert all(eq["rank0_vs_batched"][k]["within_oracle_tolerance"] for k in ("video", "audio"))
    assert all(eq["rank0_vs_sequential"][k]["bit_identical"] for k in ("video", "audio"))
    assert not eq["sequential_vs_batched"]["video"]["bit_identical"]  # the floor is rounding, not nothing
    speed = result["speedup"]
    assert len(speed["per_rank"]) == 2 and all(len(r["step_seconds"]) == 2 for r in speed["per_rank"])
    assert speed["speedup_steps"] > 0 and speed["meets_goal"] == (speed["speedup_steps"] >= 1.7)
    assert [r["passes"] for r in result["parallel"]] == [["cond"], ["uncond"]]
    for rank in result["parallel"]:
        assert {m["stage"] for m in rank["memory"]} >= {"text_encode", "denoise"}
        assert all(m["peak_bytes"] > 0 and m["within_budget"] for m in rank["memory"])
    assert result["machine"]["device"] == "cpu" and result["budget"] == "32GiB"

    saved = torch.load(tmp_path / "work" / "batched.pt")
    nudged = {k: v.clone() for k, v in saved.items()}
    nudged["video"][(0,) * nudged["video"].ndim] += 1.0
    diff = bench._diff(nudged, saved)
    assert not diff["video"]["bit_identical"] and not diff["video"]["within_oracle_tolerance"]
    assert abs(diff["video"]["max_abs_diff"] - 1.0) < 1e-3 and diff["audio"]["bit_identical"]
