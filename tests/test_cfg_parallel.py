"""CFG parallel (issue 19, item 2): a step's guidance passes split over processes, tested with two gloo ranks.

One launch of two CPU ranks on the tiny model must give the latents of the single-process batched run within the
oracle's tolerance (tests/test_oracle_denoise.py: rtol 1e-4, atol 1e-5), bit for bit those of the sequential run
(each rank's forward has the shapes of one sequential pass), the same latents on both ranks, and the MP4 from rank 0
alone. That launch and the two single-process runs are bench/multi_gpu.py's, run once on the CPU (module fixture):
the tests compare the tensors it saved themselves, and check that the bench reads its verdicts from the runs. The
rest (the flag, the pass shares, the per-rank plan, the launcher's failure handling) runs without starting a process.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import pytest
import torch

from conftest import load_bench
from ltx2_edge import cli
from ltx2_edge.errors import RequestError
from ltx2_edge.mp4.probe import probe_mp4
from ltx2_edge.parallel import env
from ltx2_edge.parallel.ranks import pass_ranges, rank_layout

SIZE = {"width": 96, "height": 64, "num_frames": 17, "num_inference_steps": 2}
PROMPT = "a red kite over the sea"
ORACLE_TOLERANCE = {"rtol": 1e-4, "atol": 1e-5}  # tests/test_oracle_denoise.py, batched against the official loop


def _scratch_dirs() -> set[str]:
    return {p.name for p in Path(tempfile.gettempdir()).glob("ltx2-edge-rank*-*")}


@pytest.fixture(scope="module")
def launched(tiny_dir, tmp_path_factory):
    """bench/multi_gpu.py once: two gloo ranks, then the batched and the sequential run in this process. Its result
    and JSON file, its work folder (rank 0's MP4 and report, the ranks' latents in ``parallel/``, the single runs'
    latents), what ``run_cfg_parallel`` returned, and the rank scratch folders left behind."""
    import ltx2_edge.parallel.launch as launch

    bench = load_bench("multi_gpu")
    work, out = tmp_path_factory.mktemp("cfg-work"), tmp_path_factory.mktemp("cfg-bench") / "multi_gpu.json"
    summaries: list[dict] = []
    real = launch.run_cfg_parallel

    def recording(job, layout):
        summaries.extend(real(job, layout))
        return summaries

    before = _scratch_dirs()
    with pytest.MonkeyPatch.context() as mp:  # the bench imports run_cfg_parallel from the module when it runs
        mp.setattr(launch, "run_cfg_parallel", recording)
        result = bench.main(["--checkpoint-path", str(tiny_dir / "ltx2.safetensors"), "--gemma-root",
                             str(tiny_dir / "gemma"), "--device", "cpu", "--ranks", "2", "--width", str(SIZE["width"]),
                             "--height", str(SIZE["height"]), "--frames", str(SIZE["num_frames"]), "--steps",
                             str(SIZE["num_inference_steps"]), "--with-sequential", "--work", str(work), "--out",
                             str(out), "--quiet"])  # fmt: skip
    return result, out, work, summaries, _scratch_dirs() - before


def test_two_ranks_equal_the_single_process_runs(launched):
    _, _, work, _, _ = launched
    rank0, rank1 = (torch.load(work / "parallel" / f"rank{r}.pt") for r in (0, 1))
    batched, sequential = torch.load(work / "batched.pt"), torch.load(work / "sequential.pt")
    for key in ("video", "audio"):
        assert torch.equal(rank0[key], rank1[key])  # the gathered predictions are the same on every rank
        torch.testing.assert_close(rank0[key], batched[key], **ORACLE_TOLERANCE)
        assert torch.equal(rank0[key], sequential[key])
    # Guards against a comparison that cannot fail: batched differs from sequential by rounding, not by nothing,
    # and the latents are far from zero.
    assert not torch.equal(batched["video"], sequential["video"])
    assert rank0["video"].abs().max() > 1.0


def test_only_rank_0_writes_the_mp4_and_its_report_holds_every_rank(launched):
    _, _, work, summaries, scratch_left = launched
    # The parallel run's files are rank 0's MP4 and report; the rest are the bench's single runs and latents.
    assert sorted(p.name for p in work.iterdir()) == [
        "batched.pt", "parallel", "parallel.mp4", "parallel.report.json", "sequential.pt", "single-batched.mp4",
        "single-batched.report.json", "single-sequential.mp4", "single-sequential.report.json",
    ]  # fmt: skip
    assert sorted(p.name for p in (work / "parallel").iterdir()) == ["rank0.pt", "rank1.pt"]
    assert not scratch_left  # rank 1's private scratch folder is gone
    assert summaries[0]["output_path"] == str(work / "parallel.mp4") and "output_path" not in summaries[1]
    assert [s["passes"] for s in summaries] == [["cond"], ["uncond"]]
    assert probe_mp4(work / "parallel.mp4").frames == SIZE["num_frames"]
    report = json.loads((work / "parallel.report.json").read_text())
    per_rank = report["cfg_parallel"]["per_rank"]
    assert report["cfg_parallel"]["ranks"] == 2 and report["cfg_parallel"]["backend"] == "gloo"
    assert [r["rank"] for r in per_rank] == [0, 1] and [r["passes"] for r in per_rank] == [["cond"], ["uncond"]]
    for row in per_rank:  # every rank denoised all its steps within its own budget
        denoise = next(s for s in row["stages"] if s["stage"] == "denoise")
        assert len(denoise["step_seconds"]) == SIZE["num_inference_steps"] and denoise["within_budget"]
    assert [s["stage"] for s in report["stages"]] == ["text_encode", "denoise", "decode"]
    assert any("rank 0: cond; rank 1: uncond" in n for n in report["notes"])


def test_the_multi_gpu_bench_reads_its_verdicts_from_the_runs(launched):
    # bench/multi_gpu.py runs unchanged on the CPU. Its timings mean nothing here (two CPU processes share the
    # cores); its equality and memory verdicts must come from the runs: the same latents give "bit-identical", a
    # perturbed copy does not.
    result, out, work, _, _ = launched
    bench = load_bench("multi_gpu")
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

    saved = torch.load(work / "batched.pt")
    nudged = {k: v.clone() for k, v in saved.items()}
    nudged["video"][(0,) * nudged["video"].ndim] += 1.0
    diff = bench._diff(nudged, saved)
    assert not diff["video"]["bit_identical"] and not diff["video"]["within_oracle_tolerance"]
    assert abs(diff["video"]["max_abs_diff"] - 1.0) < 1e-3 and diff["audio"]["bit_identical"]


# ---- without starting a process ----


def test_passes_are_shared_in_order_the_first_ranks_taking_the_extra():
    assert pass_ranges(2, 2) == ((0, 1), (1, 2))
    assert pass_ranges(4, 2) == ((0, 2), (2, 4))
    assert pass_ranges(3, 2) == ((0, 2), (2, 3))
    assert pass_ranges(4, 3) == ((0, 2), (2, 3), (3, 4))
    with pytest.raises(ValueError):
        pass_ranges(2, 3)
    full = rank_layout(2, "one-stage", ("cond", "uncond", "perturbed", "isolated"), "cuda", 2)
    assert [full.share(r) for r in (0, 1)] == [("cond", "uncond"), ("perturbed", "isolated")]
    assert full.largest_share == 2 and full.device(1) == "cuda:1" and full.backend == "nccl"


def test_the_split_cuts_contexts_and_perturbations_once_per_rank():
    from ltx2_edge.guidance import Guidance
    from ltx2_edge.parallel.cfg_split import CfgSplit
    from ltx2_edge.stages.denoise import Contexts, batch_passes

    guidance = Guidance.preset_named("full")
    ctx = Contexts(*(torch.full((1, 3, 4), float(i)) for i in range(4)))  # video, audio, video_neg, audio_neg
    stacked = batch_passes(guidance, ctx)
    local = CfgSplit(1, 2, meet=False).local(stacked)
    assert local.passes == ("perturbed", "isolated")
    assert local.video_context.shape[0] == 2 and torch.equal(local.video_context, stacked.video_context[2:])
    assert local.perturbations.perturbations == stacked.perturbations.perturbations[2:]
    first = CfgSplit(0, 2, meet=False).local(stacked)
    assert first.passes == ("cond", "uncond") and torch.equal(first.audio_context[1], ctx.audio_negative[0])
    with pytest.raises(ValueError, match="gather before local"):
        CfgSplit(0, 2).gather((torch.zeros(1), torch.zeros(1)))


def test_each_rank_plans_its_share_and_still_encodes_both_prompts(full_headers):
    from ltx2_edge.plan.budget import Budget, GiB
    from ltx2_edge.plan.plan_types import PlanRequest
    from ltx2_edge.plan.planner import plan
    from ltx2_edge.plan.profiles import H100

    ltx, gemma = full_headers

    def one(**kw):
        request = PlanRequest(512, 288, 97, 24.0, 20, precision="fp8", **kw)
        return plan(ltx, gemma, request, Budget(32 * GiB, 100 * GiB, False), H100)

    batched, rank = one(guidance_batch=2), one(guidance_batch=1, guidance_ranks=2)
    assert rank.stage("denoise").activations_bytes < batched.stage("denoise").activations_bytes
    assert rank.stage("denoise").flops_per_step == pytest.approx(batched.stage("denoise").flops_per_step / 2)
    assert rank.stage("text_encode").predicted_peak_bytes == batched.stage("text_encode").predicted_peak_bytes
    assert "on each of 2 ranks" in rank.stage("denoise").technique
    with pytest.raises(RequestError, match="--cfg-parallel"):
        PlanRequest(512, 288, 97, 24.0, 20, guidance_batch=1, guidance_ranks=5)


def test_every_rank_environment_keeps_nvlink_multicast_off():
    values = env.rank_environment(1, 2, 29500)
    assert {k: values[k] for k in env.MULTICAST_OFF} == {
        "NCCL_NVLS_ENABLE": "0",
        "TORCH_SYMM_MEM_DISABLE_MULTICAST": "1",
        "NVSHMEM_DISABLE_NVLS": "1",
    }
    assert (values["RANK"], values["WORLD_SIZE"], values["MASTER_PORT"]) == ("1", "2", "29500")
    import os

    had = os.environ.get("RANK")
    with env.patched(values):
        assert os.environ["NCCL_NVLS_ENABLE"] == "0" and os.environ["RANK"] == "1"
    assert os.environ.get("RANK") == had  # the launcher's own environment is left as it was


def _cli(tiny_dir: Path, out: Path, *extra: str) -> list[str]:
    return ["generate", "--checkpoint-path", str(tiny_dir / "ltx2.safetensors"), "--gemma-root",
            str(tiny_dir / "gemma"), "--prompt", PROMPT, "--output-path", str(out), "--quiet",
            *(f"--{k.replace('_', '-')}={v}" for k, v in SIZE.items()), *extra]  # fmt: skip


@pytest.mark.parametrize(
    ("extra", "says"),
    [
        (["--cfg-parallel", "1"], "--cfg-parallel=1 is not allowed: an integer >= 2"),
        (["--cfg-parallel", "3", "--device", "cpu"], "at most 2 ranks, one per guidance pass"),
        (["--cfg-parallel", "2", "--device", "cuda:1"], "--device='cuda:1' is not allowed: cuda or cpu with"),
        (["--cfg-parallel", "5", "--device", "cpu", "--guidance", "full"], "at most 4 ranks, one per guidance pass"),
        (["--cfg-parallel", "two"], "argument --cfg-parallel: invalid int value: 'two'"),
    ],
)  # fmt: skip
def test_bad_flags_are_one_line_before_any_rank_starts(tiny_dir, tmp_path, capsys, monkeypatch, extra, says):
    import ltx2_edge.parallel.launch as launch

    monkeypatch.setattr(launch, "run_cfg_parallel", lambda *a: pytest.fail("a rank was started"))
    try:
        code = cli.main(_cli(tiny_dir, tmp_path / "clip.mp4", *extra))
    except SystemExit as exc:  # argparse's own refusal
        code = exc.code
    err = capsys.readouterr().err.strip()
    assert code == 2 and says in err and len(err.splitlines()) == 1, err
    assert not list(tmp_path.iterdir())


def test_more_ranks_than_gpus_is_refused_naming_the_flag():
    with pytest.raises(RequestError, match=r"^--cfg-parallel=2 .*2 ranks need 2 GPUs, 1 visible"):
        rank_layout(2, "one-stage", ("cond", "uncond"), "cuda", 1)
    with pytest.raises(RequestError, match="0 visible; --device cpu runs the ranks as CPU processes"):
        rank_layout(2, "one-stage", ("cond", "uncond"), None, 0)
    with pytest.raises(RequestError, match="this request runs 1: cond: nothing to split"):
        rank_layout(2, "one-stage", ("cond",), "cpu", 0)


@pytest.mark.parametrize(
    ("pipeline", "why"),
    [("distilled-one-stage", "runs one unguided pass per step: nothing to split"),
     ("two-stage", "ends in a stage of one unguided pass"), ("distilled", "ends in a stage of one unguided pass")],
)  # fmt: skip
def test_pipelines_with_a_single_pass_stage_are_refused_saying_what_to_run(pipeline, why):
    with pytest.raises(RequestError) as info:
        rank_layout(2, pipeline, ("cond", "uncond"), "cpu", 0)
    message = str(info.value)
    assert message.startswith("--cfg-parallel=2 is not allowed: --pipeline one-stage only") and why in message
    assert "leave --cfg-parallel out to run it on one GPU" in message and "\n" not in message


class _FakeProc:
    def __init__(self, exitcode):
        self.exitcode = exitcode

    def join(self, *_):
        pass


class _FakeQueue:
    def __init__(self, messages):
        self.messages = list(messages)

    def get(self, timeout):
        import queue

        if not self.messages:
            raise queue.Empty
        return self.messages.pop(0)


def test_the_launcher_reports_the_first_failure_with_its_exit_status():
    from ltx2_edge.errors import EXIT_BUDGET
    from ltx2_edge.parallel.launch import RankFailure, _collect

    failed = _FakeQueue([("failed", 1, "--budget=1 is too small: 20.1 GiB needed", EXIT_BUDGET)])
    with pytest.raises(RankFailure, match=r"^rank 1 of the --cfg-parallel run: --budget=1") as info:
        _collect([_FakeProc(None), _FakeProc(None)], failed, 2)
    assert info.value.exit_code == EXIT_BUDGET
    # A rank that dies without a word (killed) is a failure too, not a wait for ever.
    with pytest.raises(RankFailure, match="rank 0 .* exited with status -9 without a result"):
        _collect([_FakeProc(-9), _FakeProc(None)], _FakeQueue([]), 2)
    # A rank's result that lands as it exits is still read.
    done = _FakeQueue([("done", 0, {"rank": 0}), ("done", 1, {"rank": 1})])
    assert _collect([_FakeProc(0), _FakeProc(0)], done, 2) == [{"rank": 0}, {"rank": 1}]
