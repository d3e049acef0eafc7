"""The prediction model's arithmetic (issue 17, item 2): W1 planned from full-size headers with a synthetic profile,
every new term checked against numbers worked out by hand in the comments (not by calling the same code again).

The synthetic profile's GEMM, attention and conv rates are 1e12 TFLOP/s, so every FLOP floor is ~1e-10 s and the
figures are the measured-timing terms alone; its pinned copy rate makes one streamed block's copy exactly 8 ms.
W1: 512x288, 97 frames, 20 steps, CFG 2, fp8: rows = 2 x (1872 video + 101 audio) = 3946.
"""

from __future__ import annotations

from dataclasses import replace
from types import SimpleNamespace

import pytest

from ltx2_edge.accel import settings as accel_settings
from ltx2_edge.calibrate.block_timing import Run, ShapeRuns, fit_step_timings
from ltx2_edge.calibrate.profile_file import ProfileFileError, document_from_profile, profile_from_document
from ltx2_edge.errors import RequestError
from ltx2_edge.plan.block_placement import resident_positions, run_order, streamed_positions
from ltx2_edge.plan.budget import Budget, GiB
from ltx2_edge.plan.plan_text import format_plan, plan_to_json
from ltx2_edge.plan.plan_types import PlanRequest
from ltx2_edge.plan.planner import plan
from ltx2_edge.plan.profiles import H100, profile_for
from ltx2_edge.plan.step_time import GRAPH_MIN_REPLAYS, pipeline_steps
from ltx2_edge.plan.timings import (
    DecodeTimings,
    EncodeTimings,
    Line,
    LoadTimings,
    StartupTimings,
    StepTimings,
    Timings,
)

SLOT = 436_924_416  # one fp8 block of LTX-2 19B on the device (the 16 GiB run's slot_bytes)
TIMINGS = Timings(
    step=StepTimings(
        eager_block=Line(0.002, 1e-6), eager_fixed=Line(0.02, 0.0), launch_block_s=0.003,
        eager_first_step=Line(0.1, 0.005), graph_block=Line(0.001, 1e-6), graph_fixed=Line(0.01, 2e-6),
        graph_first_step=Line(0.2, 0.01), capture=Line(0.05, 0.004), backend_choice_s=0.07,
    ),
    load=LoadTimings(quantized_gbps=14.0, bf16_gbps=3.0, transformer_fixed_s=0.3, pin_gbps=1.0, stream_fixed_s=0.3,
                     release_gbps=20.0, decoders_s=0.45, decoders_bytes=1_231_778_344, embeddings_s=0.7,
                     embeddings_bytes=2_862_950_400),
    decode=DecodeTimings(decoder_tflops=60.0, first_call_s=0.1),
    encode=EncodeTimings("libx264", Line(0.004, 1e-7), 0.06),
    startup=StartupTimings(import_s=8.0, cuda_init_s=1.0, exit_s=1.0, setup_s=1.5),
)  # fmt: skip


@pytest.fixture(scope="module")
def profile():
    h200 = profile_for("nvidia-h200-sm90")  # its runtime bytes, so the 16 GiB residency is the runs' (30 + 18)
    fast = 1e12
    return replace(h200, bf16_tflops=fast, fp8_rowwise_tflops=fast, int8_tops=fast, attention_tflops=fast,
                   conv_tflops=fast, h2d_pinned_gbps=SLOT / 0.008 / 1e9, timings=TIMINGS)  # fmt: skip


def _w1(headers, profile, budget_gib, num_frames=97, **kw):
    ltx, gemma = headers
    request = PlanRequest(512, 288, num_frames, 24.0, 20, precision="fp8", expandable_segments=True, **kw)
    return plan(ltx, gemma, request, Budget(budget_gib * GiB, None, False), profile)


def test_graphed_resident_steps(full_headers, profile):
    den = _w1(full_headers, profile, 32).stage("denoise")
    assert den.graphed and den.streamed_units == 0
    # replay: block 0.001 + 1e-6 x 3946 = 0.004946; step 0.01 + 2e-6 x 3946 + 48 x 0.004946 = 0.017892 + 0.237408
    assert den.steady_step_seconds == pytest.approx(0.2553, abs=1e-6)
    # step 0: eager block max(0.002 + 0.003946, 0.003) = 0.005946, step 0.02 + 48 x 0.005946 = 0.305408, + 0.2 +
    # 48 x 0.01 = 0.68; step 1: 0.305408 + capture 0.05 + 48 x 0.004 = 0.242, + one replay 0.2553
    assert den.capture_seconds == pytest.approx(0.242, abs=1e-6)
    assert den.first_steps_seconds == pytest.approx(0.305408 + 0.68 + 0.305408 + 0.242 + 0.2553, abs=1e-6)
    # 1.788116 + 18 replays x 0.2553
    assert den.predicted_seconds == pytest.approx(6.383516, abs=1e-6)


def test_streamed_steps_are_a_pipeline_of_copies_and_blocks(full_headers, profile):
    den = _w1(full_headers, profile, 16, cuda_graph=False).stage("denoise")
    assert (den.resident_units, den.streamed_units, den.n_slots, den.slot_bytes) == (30, 18, 3, SLOT)
    assert not den.graphed
    # c = 0.005946 (eager, text K/V every step), d = 0.008, f = 0.02. The 18 streamed blocks are spread between the
    # resident ones (blocks 1, 4, 6, ..., 46: 2-3 blocks = 11.9-17.8 ms of compute apart, each copy 8 ms), so after
    # step 0's first block no block waits: every step is its compute, 48c + f (the copies, 18d = 0.144 s, hide).
    # Gathered after the 30 resident blocks (the order before) the same plan cost 32c + 15d + f = 0.330272 a step.
    step = 48 * 0.005946 + 0.02
    assert den.steady_step_seconds == pytest.approx(step, abs=1e-6) and step == pytest.approx(0.305408)
    assert den.bottleneck == "compute"
    # Step 0: block 1 waits for the first copy (done at d, block 0 done at c): + d - c = 0.002054; + step 0's extra
    # 0.1 + 48 x 0.005.
    assert den.predicted_seconds == pytest.approx(20 * 0.305408 + 0.002054 + 0.34, abs=1e-6)


def test_streamed_from_pinned_memory_steps_are_graphed_with_their_copies(full_headers, profile):
    den = _w1(full_headers, profile, 16).stage("denoise")
    assert den.graphed and den.streamed_units == 18 and den.bottleneck == "compute"
    # Replayed, a block computes its text K/V too (nothing is frozen while blocks stream): 0.001 + 1e-6 x 3946 =
    # 0.004946 + the K/V's floor (~0 at these rates); the step 0.017892 + 48 x 0.004946 = 0.2553, as resident: the
    # copies hide behind the spread blocks, and the last ones (the next step's first blocks, issued after block 46)
    # finish inside blocks 47 and the fixed part (22.8 ms > 8 ms), so ending the graph with them costs nothing.
    assert den.steady_step_seconds == pytest.approx(0.2553, abs=1e-5)
    # Step 0 eager as above (0.307462) + the graphed run's first-step extra 0.68; step 1 warm-up 0.305408 + capture
    # 0.242 + one replay.
    first = 0.307462 + 0.68 + 0.305408 + 0.242 + 0.2553
    assert den.first_steps_seconds == pytest.approx(first, abs=1e-5)
    assert den.predicted_seconds == pytest.approx(first + 18 * 0.2553, abs=1e-4)
    assert "CUDA graph with the copies of 18 streamed blocks" in den.time_note
    # From the file (one pool) no graph: host reads sit between the blocks.
    ltx, gemma = full_headers
    request = PlanRequest(512, 288, 97, 24.0, 20, precision="fp8", expandable_segments=True)
    unified = plan(ltx, gemma, request, Budget(16 * GiB, None, True), profile).stage("denoise")
    assert unified.source_tier == "file" and unified.streamed_units and not unified.graphed


def test_pipeline_by_hand():
    # 1 resident + 3 streamed through 2 slots (position p in slot p % 2), block 1 s, copy 2 s. Step 0: resident ends
    # 1; copies of positions 0, 1 at [0,2], [2,4]; block 0 [2,3], then position 2's copy (slot 0) [4,6]; block 1
    # [4,5], then the next step's position 1 (slot 1) [6,8]; block 2 [6,7] -> 7, then the next step's position 0
    # (slot 0, free only now) [8,10]. Step 1: resident [7,8]; block 0 waits for its copy: [10,11], position 2's
    # copy [11,13]; block 1 [11,12]; block 2 [13,14] -> 7. Three blocks in two fixed slots: one slot's two users
    # are adjacent across the step boundary, so one copy is exposed every step.
    assert pipeline_steps((False, True, True, True), 2, 1.0, 2.0, 0.0, 2) == [7.0, 7.0]
    # Compute-bound: copies never wait, a step is its blocks.
    assert pipeline_steps((False, False, True, True), 2, 1.0, 0.5, 0.25, 3) == [4.25, 4.25, 4.25]
    # A CUDA graph ends when its copies do: the next step's first copies are part of this step.
    assert pipeline_steps((False, True, True, True), 2, 1.0, 2.0, 0.0, 2, join=True) == [10.0, 8.0]


def test_pipeline_spread_hides_copies_that_gathered_blocks_wait_for():
    # 4 resident + 4 streamed through 2 slots, block 1 s, copy 2 s: copies are the bound, 8 s a step at best.
    # Gathered after the resident ones, the streamed blocks run back to back and wait: 10 s a step. Spread (blocks
    # 1, 3, 5, 7), each copy runs while a resident block computes: 8 s from the second step on.
    gathered = (False,) * 4 + (True,) * 4
    spread = run_order(8, 4)
    assert spread == (False, True) * 4
    g = pipeline_steps(gathered, 2, 1.0, 2.0, 0.0, 4)
    s = pipeline_steps(spread, 2, 1.0, 2.0, 0.0, 4)
    assert g == pytest.approx([10.0] * 4) and s == pytest.approx([9.0, 8.0, 8.0, 8.0])
    # The 16 GiB W1 shape on the H200 (30 + 18 blocks, 3 slots, ~4.5 ms eager block, ~8 ms copy): gathered is
    # copy-bound by about the streamed blocks' copies; spread comes within a copy of max(compute, copies).
    g = pipeline_steps((False,) * 30 + (True,) * 18, 3, 0.0045, 0.008, 0.0, 6)[-1]
    s = pipeline_steps(run_order(48, 30), 3, 0.0045, 0.008, 0.0, 6)[-1]
    floor = max(48 * 0.0045, 18 * 0.008)
    assert g > 1.2 * floor and s < floor + 0.008


def test_block_placement_spreads_every_count():
    for n in (1, 3, 6, 34, 48):
        for k in range(n + 1):
            streamed = streamed_positions(n, k)
            assert len(set(streamed)) == n - k and list(streamed) == sorted(streamed)
            assert sorted(streamed + resident_positions(n, k)) == list(range(n))
            if n - k >= 2:  # evenly spaced: gaps differ by at most one block
                gaps = [b - a for a, b in zip(streamed, streamed[1:], strict=False)]
                assert max(gaps) - min(gaps) <= 1
    with pytest.raises(ValueError, match="between 0 and n=4"):
        streamed_positions(4, 5)


def test_few_steps_run_eager_and_cuda_graph_off_too(full_headers, profile):
    assert GRAPH_MIN_REPLAYS == accel_settings.GRAPH_MIN_REPLAYS  # the planner's rule is the run's
    ltx, gemma = full_headers
    for request in (PlanRequest(512, 288, 97, 24.0, 11, precision="fp8"),  # 9 replays: not worth a capture
                    PlanRequest(512, 288, 97, 24.0, 20, precision="fp8", cuda_graph=False)):  # fmt: skip
        den = plan(ltx, gemma, request, Budget(32 * GiB, None, False), profile).stage("denoise")
        assert not den.graphed
        # resident: text K/V frozen (floor ~0 either way): block 0.005946, step 0.305408; step 0 + 0.34
        steps = request.num_inference_steps
        assert den.predicted_seconds == pytest.approx(steps * 0.305408 + 0.34, abs=1e-6)


def test_loads_setup_decode_mp4_and_end_to_end(full_headers, profile):
    p32, p16 = _w1(full_headers, profile, 32), _w1(full_headers, profile, 16)
    blocks = 37_063_163_904  # the 48 blocks' BF16 file bytes (772,149,248 B a block)
    den32, den16 = p32.stage("denoise"), p16.stage("denoise")
    # resident: fixed 0.3 + 37.063163904 GB / 14 GB/s
    assert den32.load_seconds == pytest.approx(0.3 + blocks / 14e9, abs=1e-9)
    # 18 blocks pinned: + 18 x 436924416 B / 1 GB/s + 0.3 once; released at 20 GB/s
    assert den16.load_seconds == pytest.approx(0.3 + blocks / 14e9 + 7.864639488 + 0.3, abs=1e-9)
    assert den16.setup_seconds == pytest.approx(0.07 + 7.864639488 / 20, abs=1e-9)
    assert den32.setup_seconds == pytest.approx(0.07)
    text, emb, dec = (p32.stage(n) for n in ("text_encode", "embeddings", "decode"))
    # Gemma 3 12B's language model: 23,532,068,352 B, of it the embedding table 262208 x 3840 x 2 B + the final
    # norm 3840 x 2 B = 2,013,765,120 B loaded as stored (3 GB/s), the 48 layers' 21,518,303,232 B at the blocks'
    # 8-bit rate (14 GB/s): 1.537021659 + 0.671255040 s
    assert text.file_read_bytes == 23_532_068_352
    assert text.load_seconds == pytest.approx(2.208276699, abs=1e-8)
    assert emb.load_seconds == pytest.approx(0.7) and dec.load_seconds == pytest.approx(0.45)  # measured, same bytes
    # the video decoder at W1: 18.711419551744 TFLOP of convolutions at the whole decoder's 60 TFLOP/s + 0.1 first call
    assert dec.flops_per_step == pytest.approx(18.711419551744e12, rel=1e-9)
    assert dec.predicted_seconds == pytest.approx(0.311856993 + 0.1, abs=1e-8)
    # 97 x (0.004 + 1e-7 x 147456) = 1.8183232; audio 97 / 24 s x 0.06 = 0.2425
    assert dec.mp4_seconds == pytest.approx(2.0608232, abs=1e-9)
    assert (p32.startup_seconds, p32.exit_seconds) == (10.5, 1.0)
    # stages (passes of text and embeddings ~1e-11 s): text 2.208276699; embeddings 0.7; denoise 2.947368850 +
    # 6.383516 + 0.07 = 9.400884850; decode 0.45 + 0.411856993 + 2.0608232 = 2.922680193. + start-up 10.5, exit 1.0
    assert den32.stage_seconds == pytest.approx(9.400884850, abs=1e-6)
    assert dec.stage_seconds == pytest.approx(2.922680193, abs=1e-8)
    assert p32.predicted_end_to_end_seconds == pytest.approx(26.731841742, abs=1e-6)
    doc = plan_to_json(p32)
    assert doc["predicted_end_to_end_seconds"] == pytest.approx(p32.predicted_end_to_end_seconds)
    assert doc["timings_not_measured"] == [] and doc["stages"][2]["stage_seconds"] == pytest.approx(den32.stage_seconds)
    assert "end to end: " in format_plan(p32) and "not measured" not in format_plan(p32).split("end to end:")[1]
    assert f"  denoise: {den32.stage_seconds:.2f} s (load: the transformer's fixed part" in format_plan(p32)


def test_without_timings_the_plan_keeps_the_floor_and_says_what_is_left_out(full_headers):
    ltx, gemma = full_headers
    p = plan(ltx, gemma, PlanRequest(512, 288, 97, 24.0, 20, precision="fp8"), Budget(16 * GiB, None, False), H100)
    den = p.stage("denoise")
    assert den.predicted_seconds == pytest.approx(20 * max(den.compute_seconds_per_step, den.copy_seconds_per_step))
    assert den.load_seconds == pytest.approx(den.warm_load_seconds) and den.mp4_seconds == 0.0
    assert p.predicted_end_to_end_seconds == pytest.approx(sum(s.load_seconds + s.predicted_seconds for s in p.stages))
    text = format_plan(p)  # the built-in H100: no timings at all; the plan names every stand-in
    assert "end to end: " in text and "(start-up 0.0, " in text
    assert (
        "not measured by profile h100 (`ltx2-edge calibrate` measures them): step: denoise steps at the "
        "FLOP floor, max(compute, copy) each; load: loads at the warm checkpoint read rate; decode: "
    ) in text
    assert "startup: start-up and exit left out (0 s)" in text
    assert plan_to_json(p)["timings_not_measured"] == ["step", "load", "decode", "encode", "startup"]
    half = replace(H100, timings=Timings(encode=TIMINGS.encode))
    text = format_plan(plan(ltx, gemma, PlanRequest(512, 288, 97, 24.0, 20), Budget(None, None, False), half))
    assert "measures them): step: " in text and "encode:" not in text.split("measures them)")[1].split("\n")[0]


def test_timings_round_trip_through_the_profile_file_and_bad_ones_are_refused(profile):
    doc = document_from_profile(profile)
    assert profile_from_document(doc).timings == TIMINGS
    doc["timings"]["load"]["quantized_gbps"] = 0
    with pytest.raises(ProfileFileError, match=r"timings\.load\.quantized_gbps=0 must be > 0"):
        profile_from_document(doc)
    doc["timings"]["load"]["quantized_gbps"] = 14.0
    doc["timings"]["step"]["eager_block"] = [0.1, 0.2]
    with pytest.raises(ProfileFileError, match=r"timings\.step\.eager_block is not a line"):
        profile_from_document(doc)
    del doc["timings"]
    assert profile_from_document(doc).timings == Timings()  # an older file: nothing measured


def _shape(rows, floor, floor_frozen, eager_block, graph_block, eager_fixed, graph_fixed, cold_extra, first_e,
           first_g, capture):  # fmt: skip
    """Runs as a device would time them at one shape, from chosen per-block and per-step figures."""

    def steps(first, then, n=6):
        return (first, *([then] * (n - 1)))

    runs = {}
    for blocks in (2, 4):
        e = eager_fixed + blocks * eager_block
        g = graph_fixed + blocks * graph_block
        runs[f"E{blocks}"] = Run(steps(e + first_e[blocks], e))
        runs[f"G{blocks}"] = Run((e + first_g[blocks], e + capture[blocks] + g, *([g] * 5)), 2)
    e2 = eager_fixed + 2 * eager_block
    runs["E2c"] = Run(steps(e2 + first_e[2] + cold_extra, e2))
    return ShapeRuns(rows, 0.05, runs, floor, floor_frozen)


def test_calibrate_fits_the_lines_it_was_given():
    # Blocks over their floors: graphed 0.001 + 1e-6 x rows; eager 0.0004 more; floors 1e-6 x rows (frozen 0.9e-6).
    # Fixed: eager 0.02, graphed 0.01 + 2e-6 x rows. Step 0 extra: 0.1 + 0.005 / block eager (0.3 more on a cold
    # shape), 0.2 + 0.01 / block graphed; capture 0.05 + 0.004 / block.
    def at(rows):
        floor, frozen = 1e-6 * rows, 0.9e-6 * rows
        g = frozen + 0.001 + 1e-6 * rows
        e = floor + 0.0014 + 1e-6 * rows
        return _shape(rows, floor, frozen, e, g, 0.02, 0.01 + 2e-6 * rows, 0.3,
                      {2: 0.11, 4: 0.12}, {2: 0.22, 4: 0.24}, {2: 0.058, 4: 0.066})  # fmt: skip

    small = _shape(300, 0.0, 0.0, 0.0031, 0.0, 0.02, 0.0, 0.0, {2: 0.1, 4: 0.1}, {2: 0, 4: 0}, {2: 0, 4: 0})
    t = fit_step_timings(small, at(1000), at(3000), graphs=True, how="test")
    assert t.graph_block.at_zero == pytest.approx(0.001) and t.graph_block.per_unit == pytest.approx(1e-6)
    assert t.eager_block.at_zero == pytest.approx(0.0014) and t.eager_block.per_unit == pytest.approx(1e-6)
    assert t.graph_fixed.at_zero == pytest.approx(0.01) and t.graph_fixed.per_unit == pytest.approx(2e-6)
    assert t.eager_fixed.at(5000) == pytest.approx(0.02) and t.launch_block_s == pytest.approx(0.0031)
    # eager step 0: 0.11 at 2 blocks + 0.3 cold, 0.005 / block -> 0.41 - 2 x 0.005 at 0 blocks
    assert t.eager_first_step.per_unit == pytest.approx(0.005) and t.eager_first_step.at(2) == pytest.approx(0.41)
    assert t.graph_first_step.per_unit == pytest.approx(0.01) and t.graph_first_step.at(2) == pytest.approx(0.52)
    assert t.capture.per_unit == pytest.approx(0.004) and t.capture.at(2) == pytest.approx(0.058)
    assert t.rows == (300, 1000, 3000) and t.backend_choice_s == 0.05


def test_a_streamed_blocks_own_cost_is_fitted_from_s4_and_priced_per_streamed_block(full_headers, profile):
    def at(rows, extra):
        shape = _shape(rows, 0.0, 0.0, 0.004, 0.003, 0.02, 0.01, 0.0, {2: 0.1, 4: 0.1}, {2: 0.2, 4: 0.2},
                       {2: 0.05, 4: 0.05})  # fmt: skip
        if extra is not None:  # blocks 1 and 3 of 4 streamed: each `extra` over a resident eager block
            e4 = shape.runs["E4"].steady
            shape.runs["S4"] = Run((e4 + 0.1, *([e4 + 2 * extra] * 5)))
        return shape

    t = fit_step_timings(None, at(1000, 0.002), at(3000, 0.003), graphs=True, how="test")
    assert t.streamed_block_s == pytest.approx(0.0025)
    assert fit_step_timings(None, at(1000, None), at(3000, None), graphs=True, how="t").streamed_block_s is None
    # Priced at 16 GiB eager (30 resident + 18 streamed, compute-bound once spread): + 18 x 2.5 ms a step.
    base = _w1(full_headers, profile, 16, cuda_graph=False).stage("denoise").steady_step_seconds
    timed = replace(profile, timings=replace(TIMINGS, step=replace(TIMINGS.step, streamed_block_s=0.0025)))
    den = _w1(full_headers, timed, 16, cuda_graph=False).stage("denoise")
    assert den.steady_step_seconds == pytest.approx(base + 18 * 0.0025, abs=1e-6)
    assert "+2.50 ms a streamed one" in den.time_note
    # A replay runs no hook: graphed, the steady step does not pay it (steps 0 and 1, eager, do).
    graphed = _w1(full_headers, timed, 16).stage("denoise")
    graphed_base = _w1(full_headers, profile, 16).stage("denoise")
    assert graphed.steady_step_seconds == pytest.approx(graphed_base.steady_step_seconds, abs=1e-9)
    assert graphed.first_steps_seconds > graphed_base.first_steps_seconds + 2 * 17 * 0.0025


def test_the_start_up_probe_times_a_fresh_interpreter():
    from ltx2_edge.calibrate.startup import measure_startup

    t, fresh = measure_startup("cpu", reps=1, modules=("json",))
    assert fresh is None
    assert t.import_s > 0 and t.cuda_init_s >= 0 and t.exit_s >= 0 and t.setup_s is None
    assert t.before_first_stage_s == pytest.approx(t.import_s + t.cuda_init_s)
    assert "one fresh interpreter" in t.how and "not measured" in t.how


def test_the_start_up_probe_loads_gemma_as_a_fresh_run_does(tiny_dir):
    """With a precision the child also loads Gemma whole and encodes (its seconds kept apart from the start-up)."""
    from ltx2_edge.calibrate.startup import measure_startup

    ckpt, gemma = tiny_dir / "ltx2.safetensors", tiny_dir / "gemma"
    t, fresh = measure_startup("cpu", ckpt, gemma, text="int8")
    assert fresh is not None and fresh.seconds > 0 and fresh.encode_s > 0 and not fresh.why
    assert fresh.embeddings_s > 0 and fresh.embeddings_first_s > 0
    assert t.setup_s is not None and t.import_s > 0


def test_process_times_split_the_wall_time_outside_the_stages(monkeypatch):
    from ltx2_edge.cli import process_times

    clock = iter([100.0 + x for x in (2.0, 9.5, 11.0, 41.0)])  # command, engine imported, generator, generated
    monkeypatch.setattr(process_times.time, "time", lambda: next(clock))
    monkeypatch.setattr("psutil.Process", lambda pid: SimpleNamespace(create_time=lambda: 100.0))
    times = process_times.ProcessTimes()
    for mark in ("engine_imported", "generator_ready", "generated"):
        times.mark(mark)
    out = times.record(run_seconds=28.5)
    # 2.0 to the command; imports 7.5; setup 1.5; generate 30.0, of it 1.5 outside the report's clock
    assert (out["to_command_s"], out["engine_import_s"], out["setup_s"], out["generate_s"]) == (2.0, 7.5, 1.5, 30.0)
    assert out["outside_run_s"] == 1.5 and out["before_first_stage_s"] == 12.5
    plan = {"stages": [{"name": "text_encode", "stage_seconds": 4.25, "predicted_seconds": 0.1},
                       {"name": "denoise", "stage_seconds": 9.5, "predicted_seconds": 5.125}],
            "startup_seconds": 11.0, "exit_seconds": 1.5, "predicted_end_to_end_seconds": 26.25,
            "timings_not_measured": ["encode"]}  # fmt: skip
    line = process_times.prediction_line(plan, out, 28.5, 5.0)
    assert line == (
        "predicted / measured: before the first stage 11.0 / 12.5 s; the run 13.8 / 28.5 s; denoise "
        "steps 5.12 / 5.00 s; end to end 26.2 s predicted, exit 1.5 s included (not measured by the "
        "profile, left out or at the floor: encode)"
    )


def test_the_prediction_table_compares_the_stages_own_peak_and_marks_the_targets():
    from conftest import load_bench

    table = load_bench("prediction_table")
    gib = 2**30
    plan_stage = {"name": "denoise", "predicted_seconds": 5.0, "stage_seconds": 8.0, "predicted_peak_bytes": 20 * gib}
    report = {
        "budget": {"device_bytes": 32 * gib, "unified": False}, "total_seconds": 17.0,
        "plan": {"stages": [plan_stage], "total_seconds": 5.0, "predicted_end_to_end_seconds": 20.0,
                 "startup_seconds": 10.0, "exit_seconds": 1.0},
        "stages": [{"stage": "denoise", "seconds": 8.5, "peak_bytes": 23 * gib,
                    "details": {"steps_seconds": 5.4, "predicted_peak_bytes": 24 * gib,
                                "peak_reserved_bytes": 25 * gib, "load_seconds": 2.9}}],
        "process": {"before_first_stage_s": 12.0, "marks_s": {"generated": 29.0}},
    }  # fmt: skip
    r = table.row_for({"label": "w1", "process_wall_s": 30.0}, report)
    assert r["peak_pred_gib"] == 24 and r["peak_meas_gib"] == 25 and r["peak_within"]  # 24 / 25: 4 % off
    assert r["denoise_steps_ratio"] == pytest.approx(1.08) and r["denoise_steps_within"]
    assert r["end_to_end_ratio"] == pytest.approx(1.5) and not r["end_to_end_within"]  # 20 / 30: 33 % off
    assert r["parts_meas"]["startup_s"] == 12.0 and r["parts_meas"]["exit_s"] == 1.0  # 30 - 29 after the run
    text = table.markdown([r])
    assert "20.00 / 30.00 (1.50) **off**" in text and "24.00 / 25.00 (1.04, denoise) ok" in text


def test_load_timings_split_blocks_from_the_fixed_part_and_charge_unresolved_blocks_their_most():
    from ltx2_edge.calibrate.load_rates import PinnedLoads, TransformerLoads, load_timings

    def loads(t2, t4):  # blocks of 1 GB in the file, 0.5 GB on the device; 0.8 GB outside them
        return TransformerLoads({}, {2: t2, 4: t4}, 1e9, 500_000_000, 800_000_000)

    # 2 blocks 1.0 s, 4 blocks 1.6 s: a block 0.3 s (1 / 0.3 GB/s), fixed 1.0 - 0.6 = 0.4 s (0.8 GB / 0.4 s = 2 GB/s
    # as stored, no decoders measured). Pinned, all 4 streamed: 3.9 s, of it the resident part 1.2 s, the wait for the
    # buffer 0.5 s (charged from populate instead) and the packing 1.6 s, so the streaming's fixed cost is 0.6 s; with
    # the pinned copy rate measured (55 GB/s) a pinned block adds its copy out of the device, whatever the packing
    # took (its read is a resident block's); 4 x 0.5 GB freed in 0.25 s.
    parts = {"resident_s": 1.2, "buffer_wait_s": 0.5, "pack_s": 1.6}
    pinned = PinnedLoads(3.9, 0.25, parts)
    t = load_timings(loads(1.0, 1.6), pinned, {}, "test", copy_gbps=55.0)
    assert t.quantized_gbps == pytest.approx(1 / 0.3) and t.transformer_fixed_s == pytest.approx(0.4)
    assert t.bf16_gbps == pytest.approx(2.0) and t.pin_gbps == pytest.approx(55.0)
    assert t.stream_fixed_s == pytest.approx(0.6) and t.release_gbps == pytest.approx(8.0)
    # Without the copy rate the packing less a resident block's load stands in: 1.6 / 4 - 0.3 = 0.1 s, 5 GB/s.
    t = load_timings(loads(1.0, 1.6), pinned, {}, "test")
    assert t.pin_gbps == pytest.approx(5.0) and t.stream_fixed_s == pytest.approx(0.6)
    # 4 blocks 0.505 s against 0.5 s: 1 % apart, noise. A block is charged 0.505 / 4 = 0.12625 s, the fixed part
    # 0.5 - 0.2525 = 0.2475 s (the 2-block load as measured); a decoder load gives the as-stored rate: 2 GB in 4 s.
    t = load_timings(loads(0.5, 0.505), "not measured: a CPU", {"decoders": (4.0, 2_000_000_000)}, "test")
    assert t.quantized_gbps == pytest.approx(1 / 0.12625) and t.transformer_fixed_s == pytest.approx(0.2475)
    assert t.bf16_gbps == pytest.approx(0.5) and t.pin_gbps is None and t.release_gbps is None
    assert (t.decoders_s, t.decoders_bytes, t.embeddings_s) == (4.0, 2_000_000_000, None)
    assert t.populate_gbps is None
    # The pinned buffer made at a run's size: its rate is kept where pinning was measured, dropped where it was not.
    t = load_timings(loads(1.0, 1.6), pinned, {}, "test", (4.5, 2_000_000_000), 55.0)
    assert t.populate_gbps == 4.5
    t = load_timings(loads(1.0, 1.6), "not measured: a CPU", {}, "test", (4.5, 2_000_000_000))
    assert t.populate_gbps is None
    # A wide load of 12 blocks (4.0 s) sets the per-block rate against the 2-block load: (4.0 - 1.0) / 10 = 0.3 s a
    # block whatever the 4-block load says (here 1.05 s, which alone would charge a quarter of it: unresolved).
    from ltx2_edge.calibrate.load_rates import WIDE

    wide = TransformerLoads({}, {2: 1.0, 4: 1.05, WIDE: 1.0 + 0.3 * (WIDE - 2)}, 1e9, 500_000_000, 800_000_000)
    t = load_timings(wide, "not measured: a CPU", {}, "test")
    assert t.quantized_gbps == pytest.approx(1 / 0.3) and t.transformer_fixed_s == pytest.approx(0.4)


def test_pinning_charges_only_the_buffer_s_making_that_outlasts_the_resident_load():
    """The pinned buffer is made on a thread while the resident weights load: 8 GB at 4 GB/s (2 s) behind a 1.5 s
    resident load adds 0.5 s; behind a 3 s one, nothing; packing (8 GB at pin_gbps 2) and the fixed 0.3 s always."""
    from ltx2_edge.plan.stage_time import pinning_seconds

    lt = replace(TIMINGS.load, pin_gbps=2.0, stream_fixed_s=0.3, populate_gbps=4.0)
    assert pinning_seconds(lt, 8_000_000_000, 1.5) == pytest.approx(4.0 + 0.3 + 0.5)
    assert pinning_seconds(lt, 8_000_000_000, 3.0) == pytest.approx(4.0 + 0.3)
    assert pinning_seconds(replace(lt, populate_gbps=None), 8_000_000_000, 0.0) == pytest.approx(4.3)
    assert pinning_seconds(lt, 0, 0.0) == 0.0 and pinning_seconds(replace(lt, pin_gbps=None), 8_000_000_000, 0) == 0


def test_a_refused_step_shape_is_measured_at_a_run_shape_or_said(monkeypatch, capsys):
    """A kernel refusing calibrate's step shape (cuBLASLt FP8 did on an H200) moves that role to a shape the runs
    use; when no shape of a needed role runs, the refusal is raised with every reason (calibrate notes it)."""
    from types import SimpleNamespace

    import torch

    from ltx2_edge.calibrate import block_timing as bt

    refused = {bt.GPU_SHAPES[1], bt.GPU_SHAPES[0]}

    def fake_time_shape(models, config, shape, *args):
        if shape in refused:
            raise RuntimeError("CUDA error: CUBLAS_STATUS_NOT_SUPPORTED when calling `cublasLtMatmulAlgoGetHeuristic`")
        return SimpleNamespace(shape=shape, rows=shape.frames, choice_s=0.0, floor_block=0.0, runs={})

    seen = {}

    def fake_fit(small, mid, large, graphs, how):
        seen.update(small=small, mid=mid, large=large, how=how)
        return "timings"

    monkeypatch.setattr(bt, "time_shape", fake_time_shape)
    monkeypatch.setattr(bt, "fit_step_timings", fake_fit)
    streamers = []

    def fake_streamed_mini(model, device):
        streamers.append(SimpleNamespace(closed=False, resets=0))
        s = streamers[-1]
        return "S4 model", SimpleNamespace(close=lambda: setattr(s, "closed", True),
                                           reset=lambda: setattr(s, "resets", s.resets + 1))  # fmt: skip

    monkeypatch.setattr(bt, "streamed_mini", fake_streamed_mini)
    step, _ = bt.measure_step_timings({4: None}, {}, torch.device("cuda"), torch.bfloat16, None, "fp8", False)
    # The streamed copy is reset after every refused shape (a forward may have stopped mid-step) and closed after.
    assert streamers[0].closed and streamers[0].resets == 2
    assert step == "timings"
    assert seen["small"].shape == bt.GPU_FALLBACKS[0] and seen["mid"].shape == bt.GPU_FALLBACKS[1]
    assert seen["large"].shape == bt.GPU_SHAPES[2]
    assert "256x160x25: CUDA error: CUBLAS_STATUS_NOT_SUPPORTED" in seen["how"] and "512x288x81" in seen["how"]
    assert "CUBLAS_STATUS_NOT_SUPPORTED" in capsys.readouterr().err  # the traceback, to find the GEMM
    refused.add(bt.GPU_FALLBACKS[0])  # the launch floor is optional: without it the fit goes on
    bt.measure_step_timings({4: None}, {}, torch.device("cuda"), torch.bfloat16, None, "fp8", False)
    assert seen["small"] is None and seen["mid"].shape == bt.GPU_FALLBACKS[1]
    refused.add(bt.GPU_FALLBACKS[1])
    with pytest.raises(bt.StepTimingRefused, match="512x288x97: CUDA error"):
        bt.measure_step_timings({4: None}, {}, torch.device("cuda"), torch.bfloat16, None, "fp8", False)
    assert streamers[2].closed  # closed on the way out of a refusal too


def test_a_cold_checkpoint_is_timed_at_the_disk_and_the_plan_says_so(full_headers):
    h200 = profile_for("nvidia-h200-sm90")  # the shipped, measured profile (load timings and both read rates)
    warm = _w1(full_headers, h200, 32).stage("denoise")
    assert warm.load_seconds == _w1(full_headers, h200, 32, checkpoint_cached=1.0).stage("denoise").load_seconds
    cold = _w1(full_headers, h200, 32, checkpoint_cached=0.0).stage("denoise")
    # Nothing cached: every byte the load reads at the cold rate, which here is slower than the warm pipeline.
    assert cold.load_seconds == pytest.approx(cold.file_read_bytes / (h200.file_read_cold_gbps * 1e9), rel=1e-9)
    assert cold.load_seconds > 3 * warm.load_seconds and "not in the page cache" in cold.time_note
    half = _w1(full_headers, h200, 32, checkpoint_cached=0.5).stage("denoise")
    assert warm.load_seconds < half.load_seconds < cold.load_seconds
    # Gemma's folder is its own file set: a cold checkpoint leaves the text stage's load as it was.
    text = _w1(full_headers, h200, 32).stage("text_encode")
    assert _w1(full_headers, h200, 32, checkpoint_cached=0.0).stage("text_encode").load_seconds == text.load_seconds
    assert _w1(full_headers, h200, 32, gemma_cached=0.0).stage("text_encode").load_seconds > text.load_seconds
    with pytest.raises(RequestError, match="checkpoint-cached"):
        PlanRequest(512, 288, 97, 24.0, 20, checkpoint_cached=1.5)


def test_step_timings_stand_when_the_streamed_copy_cannot_be_made(monkeypatch):
    from types import SimpleNamespace

    import torch

    from ltx2_edge.calibrate import block_timing as bt

    def refuse(model, device):
        raise RuntimeError("no pinned memory for the streamed copy")

    seen = {}
    monkeypatch.setattr(bt, "streamed_mini", refuse)

    def fake_time_shape(models, config, shape, *args):
        seen[shape] = args[-1]  # the streamed model time_shape was given
        return SimpleNamespace(shape=shape, rows=shape.frames, choice_s=0.0, floor_block=0.0, runs={})

    monkeypatch.setattr(bt, "time_shape", fake_time_shape)
    monkeypatch.setattr(bt, "fit_step_timings", lambda small, mid, large, graphs, how: how)
    how, _ = bt.measure_step_timings({4: None}, {}, torch.device("cuda"), torch.bfloat16, None, "fp8", False)
    assert "a streamed block's extra not measured (RuntimeError: no pinned memory" in how
    assert set(seen.values()) == {None}  # every shape timed without S4


def test_a_graphed_denoise_keeps_room_for_its_capture(full_headers, profile):
    from ltx2_edge.plan.stage_fit import capture_room_bytes

    # 0.26 a^2 (a in GiB): the H200's 20 s clip at 32 GiB, 3.26 GiB of activations, reserved 2.77 GiB over the
    # eager prediction.
    assert capture_room_bytes(int(3.26 * GiB)) / GiB == pytest.approx(2.763, abs=1e-3)
    for frames in (97, 241):
        graphed = _w1(full_headers, profile, 16, num_frames=frames).stage("denoise")
        eager = _w1(full_headers, profile, 16, num_frames=frames, cuda_graph=False).stage("denoise")
        room = capture_room_bytes(eager.activations_bytes)
        assert graphed.graphed and not eager.graphed
        # The graphed plan is the eager one with the room inside the same budget: fewer resident blocks where the
        # eager plan left less than the room.
        freed = eager.weights_resident_bytes - graphed.weights_resident_bytes
        assert graphed.predicted_peak_bytes == eager.predicted_peak_bytes - freed + room
        assert graphed.predicted_peak_bytes <= 16 * GiB  # the runtime's own bytes are inside the figure
        if frames == 241:  # 1.68 GiB of activations: 0.73 GiB of room, two blocks fewer resident
            assert eager.resident_units - graphed.resident_units >= 2
    ltx, gemma = full_headers
    request = PlanRequest(512, 288, 241, 24.0, 20, precision="fp8", expandable_segments=True)
    unified = plan(ltx, gemma, request, Budget(16 * GiB, None, True), profile).stage("denoise")
    # From the file nothing is captured: no room kept.
    assert not unified.graphed


def test_a_budget_that_fits_eager_but_not_a_capture_plans_eager_not_a_refusal(full_headers, profile):
    from ltx2_edge.accel.settings import choose_accel
    from ltx2_edge.plan.stage_fit import capture_room_bytes

    # The 20 s clip at 8 GiB: 4 blocks resident eager, and no K leaves the capture's room (2.76 GiB) beside even
    # one streamed block's slots. Planned eager, as --cuda-graph off would be, not refused.
    ltx, gemma = full_headers
    request = PlanRequest(512, 288, 481, 24.0, 20, precision="fp8", expandable_segments=True)
    den = plan(ltx, gemma, request, Budget(8 * GiB, None, False), profile).stage("denoise")
    eager = plan(ltx, gemma, replace(request, cuda_graph=False), Budget(8 * GiB, None, False), profile).stage("denoise")
    assert den.no_capture_room and not den.graphed and "no room for its capture" in den.technique
    assert den.resident_units == eager.resident_units and den.predicted_peak_bytes == eager.predicted_peak_bytes
    assert den.predicted_peak_bytes + capture_room_bytes(den.activations_bytes) > 8 * GiB
    from test_accel import _inputs  # the accel choice honours it

    choice = choose_accel(_inputs(streamed_blocks=den.streamed_units, capture_room=False))
    assert not choice.settings.cuda_graph and "no room for its capture" in choice.settings.reasons[1]


def test_gemma_measured_whole_by_calibrate_prices_the_text_stage(full_headers, profile):
    """With ``gemma_s`` over ``gemma_bytes`` (calibrate's whole load) the text stage's load is its read at that
    rate, and its compute the measured first encode when that exceeds the floor (~0 at these rates)."""
    borrowed = _w1(full_headers, profile, 32).stage("text_encode")
    assert "transformer blocks' loader rate" in borrowed.time_note and borrowed.predicted_seconds < 0.01
    read = borrowed.file_read_bytes  # all 48 layers resident at 32 GiB: one read of every language-model tensor
    load = replace(TIMINGS.load, gemma_s=3.0, gemma_bytes=2 * read, gemma_encode_s=0.5)
    measured = replace(profile, timings=replace(TIMINGS, load=load))
    text = _w1(full_headers, measured, 32).stage("text_encode")
    assert text.load_seconds == pytest.approx(1.5) and text.predicted_seconds == pytest.approx(0.5)
    assert "as calibrate loaded it" in text.time_note and "its first run as calibrate measured" in text.time_note
    with_connectors = replace(TIMINGS, load=replace(load, embeddings_first_s=0.4))
    connectors = _w1(full_headers, replace(profile, timings=with_connectors), 32).stage("embeddings")
    assert connectors.predicted_seconds == pytest.approx(0.4) and "first run" in connectors.time_note
