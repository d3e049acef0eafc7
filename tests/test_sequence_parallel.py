"""Sequence parallel (Ulysses) through ltx-core's attention functions: two gloo ranks, the tiny model, the whole
denoising loop, against the single-process loop on the same inputs (the oracle's tolerance; the ranks bit-identical).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

import ltx2_edge  # noqa: F401  (torchaudio placeholder before ltx_core)
from ltx2_edge.guidance import Guidance
from ltx2_edge.stages.denoise import Contexts, denoise, official_sigmas
from ltx2_edge.stages.latents import final_latents, noised_latents, pixel_shape

ORACLE_TOLERANCE = {"rtol": 1e-4, "atol": 1e-5}  # tests/test_oracle_denoise.py
W, H, F, STEPS, SEED = 96, 64, 17, 2, 10


def _inputs(width: int):
    g = torch.Generator().manual_seed(1)
    ctx = Contexts(*(torch.randn(1, 64, width, generator=g) for _ in range(4)))
    setup = noised_latents(pixel_shape(W, H, F, 24.0), torch.Generator().manual_seed(SEED), torch.device("cpu"),
                           torch.float32)  # fmt: skip
    return ctx, setup


def _loop(transformer, width: int, guidance: Guidance):
    ctx, setup = _inputs(width)
    video, audio = denoise(transformer, setup.video_state, setup.audio_state,
                           official_sigmas(STEPS, torch.device("cpu")), ctx, guidance)  # fmt: skip
    return final_latents(setup, video, audio)


def _rank(rank: int, world: int, port: int, checkpoint: str, width: int, preset: str, out: str) -> None:
    import torch.distributed as dist

    from ltx2_edge.models.loaders import load_transformer
    from ltx2_edge.parallel import env
    from ltx2_edge.parallel.ulysses import SequenceParallel

    os.environ.update(env.rank_environment(rank, world, port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method="env://", rank=rank, world_size=world)
    try:
        transformer = load_transformer(Path(checkpoint), torch.device("cpu"), torch.float32)
        video, audio = _loop(SequenceParallel(transformer, rank, world), width, _guidance(preset))
        torch.save({"video": video, "audio": audio}, Path(out) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def _guidance(preset: str) -> Guidance:
    from dataclasses import replace

    g = Guidance.preset_named(preset)
    if preset == "full":  # the tiny model has 2 blocks: STG on one that exists
        g = replace(g, video=replace(g.video, stg_blocks=[1]), audio=replace(g.audio, stg_blocks=[1]))
    return g


@pytest.mark.parametrize("preset", ["full"])
def test_two_ranks_split_over_video_tokens_equal_one_process(tiny_dir, tiny_transformer_fp32, tiny_config, tmp_path,
                                                              preset):  # fmt: skip
    import torch.multiprocessing as mp
    from torch.distributed import TCPStore

    width = tiny_config["transformer"]["caption_channels"]
    store = TCPStore("127.0.0.1", 0, is_master=True, wait_for_workers=False)
    mp.start_processes(_rank, args=(2, store.port, str(tiny_dir / "ltx2.safetensors"), width, preset,
                                    str(tmp_path)), nprocs=2, start_method="spawn")  # fmt: skip
    ref_v, ref_a = _loop(tiny_transformer_fp32, width, _guidance(preset))
    rank0, rank1 = (torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1))
    for key, ref in (("video", ref_v), ("audio", ref_a)):
        assert torch.equal(rank0[key], rank1[key])
        torch.testing.assert_close(rank0[key], ref, **ORACLE_TOLERANCE)
    assert ref_v.abs().max() > 1.0


def test_the_sequence_parallel_bench_runs_on_two_gloo_ranks(tiny_dir, tmp_path, monkeypatch):
    import importlib

    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1] / "bench"))  # the ranks import it by name
    bench = importlib.import_module("sequence_parallel")
    out = tmp_path / "sp.json"
    result = bench.main(["--checkpoint-path", str(tiny_dir / "ltx2.safetensors"), "--device", "cpu", "--ranks", "2",
                         "--seconds", "0.6", "--width", "96", "--height", "64", "--repeats", "2", "--work",
                         str(tmp_path / "work"), "--out", str(out)])  # fmt: skip
    (row,) = result["rows"]
    assert row["frames"] == 17 and row["tokens"]["video"] == 18 and row["ranks_identical"]
    assert row["video_vs_one_gpu"]["within_oracle_tolerance"] and row["audio_vs_one_gpu"]["within_oracle_tolerance"]
    assert [len(r["times"]) for r in row["per_rank"]] == [2, 2] and row["speedup"] > 0
    assert json.loads(out.read_text())["rows"][0]["speedup"] == row["speedup"]
