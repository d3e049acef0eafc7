"""The memory planner on full-size LTX-2 19B and Gemma 3 12B headers built on the meta device (no weights)."""

from __future__ import annotations

import json
import math

import pytest

from ltx2_edge.checkpoint.configs import ltx2_config
from ltx2_edge.checkpoint.header import Header
from ltx2_edge.checkpoint.names import AUDIO_DECODER, CONNECTORS, VIDEO_DECODER
from ltx2_edge.checkpoint.names import TRANSFORMER_PREFIX as DIT
from ltx2_edge.errors import BudgetError, CheckpointError, RequestError
from ltx2_edge.plan import activations as act
from ltx2_edge.plan.budget import Budget, GiB
from ltx2_edge.plan.plan_text import format_plan, plan_to_json
from ltx2_edge.plan.plan_types import PlanRequest
from ltx2_edge.plan.planner import minimum_budget, plan, plan_decode
from ltx2_edge.plan.profiles import CPU, H100, profile_for
from ltx2_edge.plan.stage_fit import SLACK_BYTES, SLACK_EXPANDABLE_BYTES
from ltx2_edge.plan.tile_plan import candidate_tilings, plan_tiling, split_lengths

W1 = dict(width=512, height=288, num_frames=97, frame_rate=24.0, num_inference_steps=20)
DISCRETE = 100 * GiB  # host budget for the discrete cases


@pytest.fixture(scope="module")
def headers(full_headers):
    """Full-size headers from the checkpoint layout (conftest's ``full_headers``), all BF16."""
    return full_headers


def _plan(headers, budget_gib, precision="bf16", unified=False, host=DISCRETE, profile=H100, **kw):
    ltx, gemma = headers
    request = PlanRequest(**{**W1, **kw}, precision=precision)
    device = None if budget_gib is None else int(budget_gib * GiB)
    return plan(ltx, gemma, request, Budget(device, None if unified else host, unified), profile)


def test_full_header_sizes(headers):
    ltx, gemma = headers
    transformer = sum(t.nbytes for n, t in ltx.tensors.items() if n.startswith(DIT) and not n.startswith(CONNECTORS))
    assert transformer == pytest.approx(37.8e9, rel=0.01)
    assert sum(t.nbytes for n, t in gemma.items() if n.startswith("language_model.")) == pytest.approx(23.5e9, rel=0.01)


def test_unlimited_budget_keeps_everything_resident(headers):
    p = _plan(headers, None)
    for s in p.stages:
        assert (s.streamed_units, s.weights_streamed_bytes, s.n_slots, s.source_tier) == (0, 0, 0, "resident")
    assert p.stage("denoise").resident_units == 48 and p.stage("text_encode").resident_units == 48
    assert p.stage("decode").tiles.tiles == 1
    assert p.stage("denoise").weights_resident_bytes == pytest.approx(37.8e9, rel=0.01)


def test_32gib_bf16_streams_the_transformer_but_fp8_is_resident(headers):
    bf16 = _plan(headers, 32).stage("denoise")
    assert 0 < bf16.resident_units < 48 and bf16.streamed_units == 48 - bf16.resident_units
    assert bf16.source_tier == "pinned" and bf16.n_slots == 3
    assert bf16.predicted_peak_bytes <= 32 * GiB
    fp8 = _plan(headers, 32, "fp8").stage("denoise")
    assert (fp8.resident_units, fp8.streamed_units, fp8.source_tier) == (48, 0, "resident")
    # FP8 blocks + BF16 keep-list (A/V cross-attention 4.8 GB) + BF16 non-block tensors.
    assert 19 * GiB <= fp8.weights_resident_bytes <= 21 * GiB


def test_expandable_segments_take_a_smaller_allowance(headers):
    caching, expandable = (_plan(headers, 32, "fp8", expandable_segments=e) for e in (False, True))
    for stage in ("text_encode", "denoise", "decode"):
        a, b = caching.stage(stage), expandable.stage(stage)
        assert a.resident_units == b.resident_units  # all resident at 32 GiB either way
        assert a.predicted_peak_bytes - b.predicted_peak_bytes == SLACK_BYTES - SLACK_EXPANDABLE_BYTES, stage
    # the 16 GiB plan keeps more blocks resident when less is set aside
    assert (_plan(headers, 16, "fp8", expandable_segments=True).stage("denoise").resident_units
            > _plan(headers, 16, "fp8").stage("denoise").resident_units)  # fmt: skip


def test_16gib_fp8_streams_with_the_most_resident_blocks_that_fit(headers):
    s = _plan(headers, 16, "fp8").stage("denoise")
    assert 0 < s.resident_units < 48 and s.n_slots == 3
    block = s.slot_bytes  # every block has the same size
    assert s.weights_streamed_bytes == s.streamed_units * block
    expected = s.weights_resident_bytes + 3 * block + s.activations_bytes + SLACK_BYTES + H100.runtime_overhead_bytes
    assert s.predicted_peak_bytes == expected <= 16 * GiB
    assert expected + block > 16 * GiB  # one more resident block would not fit
    assert s.bytes_moved_per_step == s.weights_streamed_bytes
    deeper = _plan(headers, 16, "fp8", prefetch_depth=3).stage("denoise")
    assert deeper.n_slots == 4 and deeper.resident_units == s.resident_units - 1


def test_w1_forward_flops_and_compute_floor(headers):
    one = _plan(headers, None, guidance_batch=1).stage("denoise")
    assert one.flops_per_step == pytest.approx(57.5e12, rel=0.05)
    # The floor for 20 steps x 2 forwards on the H100: 2.9 s bf16, 2.3 s with FP8 rowwise (docs/benchmarks.md,
    # "W1 under memory budgets").
    assert 20 * _plan(headers, None).stage("denoise").compute_seconds_per_step == pytest.approx(2.9, rel=0.1)
    assert 20 * _plan(headers, None, "fp8").stage("denoise").compute_seconds_per_step == pytest.approx(2.3, rel=0.1)


def test_calibrated_working_sets_match_the_official_pipeline(headers):
    p = _plan(headers, None, guidance_batch=1)
    # One decode stage holds both decoders; beside_bytes is the audio part (weights + working set), so the
    # video part is the rest: each still matches its own measurement.
    decode = p.stage("decode")
    video = decode.weights_resident_bytes + decode.activations_bytes - decode.beside_bytes
    assert video == pytest.approx(2.8 * GiB, rel=0.05)
    emb = _plan(headers, None).stage("embeddings")
    assert emb.weights_resident_bytes + emb.activations_bytes == pytest.approx(5.4 * GiB, rel=0.05)
    assert 0.3 * GiB <= p.stage("denoise").activations_bytes <= 0.55 * GiB  # measured 0.44 GiB
    assert decode.beside_bytes == pytest.approx(0.3 * GiB, rel=0.1)
    # Gemma's 49 hidden states of both prompts are kept for the feature extractor.
    assert _plan(headers, None).stage("text_encode").activations_bytes > 2 * 49 * 1024 * 3840 * 2


def test_impossible_budget_is_refused_with_the_smallest_that_works(headers):
    ltx, gemma = headers
    request = PlanRequest(**W1)
    with pytest.raises(BudgetError) as err:
        plan(ltx, gemma, request, Budget(4 * GiB, DISCRETE, False), H100)
    smallest = minimum_budget(ltx, gemma, request, Budget(4 * GiB, DISCRETE, False), H100)
    message = str(err.value)
    assert "for embeddings (" in message and "the budget is 4.0 GiB" in message
    assert f"Smallest budget that works for this request: {math.ceil(smallest / GiB * 10) / 10:.1f} GiB" in message
    assert "--quantization fp8" in message
    assert 5 * GiB < smallest < 7 * GiB
    assert plan(ltx, gemma, request, Budget(smallest, DISCRETE, False), H100).peak_bytes <= smallest
    with pytest.raises(BudgetError):
        plan(ltx, gemma, request, Budget(smallest - GiB, DISCRETE, False), H100)


def test_unified_pool_streams_from_the_file_and_counts_the_runtime(headers):
    discrete = _plan(headers, 16, "fp8").stage("denoise")
    unified = _plan(headers, 16, "fp8", unified=True).stage("denoise")
    assert discrete.source_tier == "pinned" and discrete.host_bytes >= discrete.weights_streamed_bytes
    assert unified.source_tier == "file" and unified.host_bytes == 0
    # The runtime's device memory counts in both; for W1 (no frames held on the host) the pool adds only the file
    # source's pinned staging ring, two 64 MiB buffers: never a pinned copy of a block.
    assert unified.resident_units == discrete.resident_units
    assert unified.predicted_peak_bytes == discrete.predicted_peak_bytes + 2 * 64 * 1024**2
    assert unified.predicted_peak_bytes <= 16 * GiB
    assert unified.bottleneck == "disk" and discrete.bottleneck in ("copy", "compute")
    # A discrete GPU whose host budget cannot pin the streamed blocks reads the file through one bounce buffer.
    small_host = _plan(headers, 16, "fp8", host=4 * GiB).stage("denoise")
    assert small_host.source_tier == "file"
    assert small_host.host_bytes == H100.runtime_overhead_bytes + small_host.slot_bytes


def test_too_small_host_budget_is_refused_naming_the_host(headers):
    with pytest.raises(BudgetError) as err:
        _plan(headers, 16, "fp8", host=GiB // 4)
    assert "of host memory for" in str(err.value) and "--host-budget" in str(err.value)


def test_decode_tiles_when_untiled_does_not_fit(headers):
    big = dict(width=1280, height=704, num_frames=241)
    assert _plan(headers, None, "fp8", **big).stage("decode").tiles.tiles == 1
    decode = _plan(headers, 16, "fp8", **big).stage("decode")
    assert decode.tiles.tiles > 1 and decode.predicted_peak_bytes <= 16 * GiB
    assert decode.beside_bytes > 0  # audio still decodes beside it


@pytest.mark.parametrize(("budget_gib", "unified"), [(None, False), (16, False), (8, False), (8, True), (4, False)])
def test_decode_peak_holds_both_decoders_and_both_working_sets(headers, budget_gib, unified):
    """The audio decodes while the video tiles decode: the stage's peak is the sum of both, plus slack."""
    ltx, _ = headers
    request = PlanRequest(**{**W1, "width": 1280, "height": 704, "num_frames": 241})
    budget = Budget(None if budget_gib is None else budget_gib * GiB, None if unified else DISCRETE, unified)
    s = plan_decode(ltx, request, budget, H100)
    video_weights = sum(t.nbytes for n, t in ltx.tensors.items() if n.startswith(VIDEO_DECODER))
    audio_weights = sum(t.nbytes for n, t in ltx.tensors.items() if n.startswith(AUDIO_DECODER))
    cfg = ltx2_config("full")
    audio_work = act.audio_decode_bytes(cfg, act.token_counts(cfg, 1280, 704, 241, 24.0).audio)
    assert s.weights_resident_bytes == video_weights + audio_weights
    assert s.beside_bytes == audio_weights + audio_work
    assert s.activations_bytes == s.tiles.working_bytes + audio_work
    in_pool = SLACK_BYTES + H100.runtime_overhead_bytes + (241 * 704 * 1280 * 3 if unified else 0)
    assert s.predicted_peak_bytes == video_weights + s.tiles.working_bytes + audio_weights + audio_work + in_pool
    if budget_gib is not None:
        assert s.predicted_peak_bytes <= budget_gib * GiB
        # The tiling is the fewest tiles that fit with the audio beside it: every tiling with fewer tiles would not.
        fewer = [o for o in candidate_tilings(cfg["vae"], 31, 22, 40) if o.tiles < s.tiles.tiles]
        assert len(fewer) > 0 or s.tiles.tiles == 1
        assert all(s.predicted_peak_bytes - s.tiles.working_bytes + o.working_bytes > budget_gib * GiB for o in fewer)


def test_plan_decode_alone_is_the_full_plans_decode_stage(headers):
    ltx, _ = headers
    big = PlanRequest(**{**W1, "width": 1280, "height": 704, "num_frames": 241}, precision="fp8")
    for gib in (None, 24, 16):
        budget = Budget(None if gib is None else gib * GiB, DISCRETE, False)
        assert plan_decode(ltx, big, budget, H100) == plan(ltx, headers[1], big, budget, H100).stage("decode")
    with pytest.raises(BudgetError, match=r"for decode \(video decoder .* audio decoder \+ vocoder"):
        plan_decode(ltx, big, Budget(GiB, DISCRETE, False), H100)


def test_token_counts_and_tile_splits_match_ltx_core():
    from ltx_core.model.video_vae.video_vae import split_temporal_latents, split_with_symmetric_overlaps
    from ltx_core.types import AudioLatentShape, VideoPixelShape

    cfg = ltx2_config("full")
    for frames, fps in ((97, 24.0), (121, 25.0), (9, 30.0), (257, 24.0)):
        tokens = act.token_counts(cfg, 512, 288, frames, fps)
        shape = AudioLatentShape.from_video_pixel_shape(VideoPixelShape(1, frames, 288, 512, fps))
        assert tokens.audio == shape.frames
    assert act.token_counts(cfg, 512, 288, 97, 24.0).video == 1872
    for length in range(1, 40):
        for size, overlap in ((4, 1), (8, 3), (12, 3), (16, 2)):
            sym = split_with_symmetric_overlaps(size, overlap)(length)
            assert split_lengths(length, size, overlap, causal=False) == [
                e - s for s, e in zip(sym.starts, sym.ends, strict=True)
            ]
            tmp = split_temporal_latents(size, overlap)(length)
            assert split_lengths(length, size, overlap, causal=True) == [
                e - s for s, e in zip(tmp.starts, tmp.ends, strict=True)
            ]


def test_tile_count_matches_ltx_core_decoder():
    import torch
    from ltx_core.model.video_vae.model_configurator import VideoDecoderConfigurator
    from ltx_core.model.video_vae.tiling import SpatialTilingConfig, TemporalTilingConfig, TilingConfig

    cfg = ltx2_config("tiny")
    with torch.device("meta"):
        decoder = VideoDecoderConfigurator.from_config(cfg)
    latent = torch.empty(1, 128, 31, 22, 40, device="meta")
    for px, ov, frames, fov in ((512, 64, 64, 24), (256, 64, 48, 24), (128, 32, 16, 8)):
        tiling = TilingConfig(SpatialTilingConfig(px, ov), TemporalTilingConfig(frames, fov))
        tiles = decoder._prepare_tiles(latent, tiling)
        ours = plan_tiling(cfg["vae"], 31, 22, 40, (px, ov), (frames, fov))
        assert ours.tiles == len(tiles)


def test_quantization_policy_is_pluggable(headers):
    ltx, gemma = headers
    request = PlanRequest(**W1, precision="fp8")
    budget = Budget(None, DISCRETE, False)
    none = plan(ltx, gemma, request, budget, H100, is_quantized=lambda n: False).stage("denoise")
    assert none.weights_resident_bytes == _plan(headers, None).stage("denoise").weights_resident_bytes
    everything = plan(ltx, gemma, request, budget, H100, is_quantized=lambda n: "transformer_blocks" in n)
    default = _plan(headers, None, "fp8").stage("denoise")
    assert everything.stage("denoise").weights_resident_bytes < default.weights_resident_bytes - 2 * GiB


def test_plan_text_and_json(headers):
    p = _plan(headers, 16, "fp8")
    text = format_plan(p)
    for s in p.stages:
        assert s.name in text
    assert H100.source in text and "pinned" in text and "moved/step" in text
    assert "includes 0.50 GiB of slack and 0.75 GiB for the runtime's own memory" in text
    expandable = format_plan(_plan(headers, 16, "fp8", expandable_segments=True))
    assert "includes 0.25 GiB of slack (CUDA expandable segments) and 0.75 GiB" in expandable
    doc = json.loads(json.dumps(plan_to_json(p)))
    assert [s["name"] for s in doc["stages"]] == [s.name for s in p.stages]
    assert doc["peak_bytes"] == p.peak_bytes and doc["profile"]["name"] == "h100"
    assert doc["stages"][3]["tiles"]["description"] == "untiled"


def test_cpu_profile_counts_math_attention_scores(headers):
    cpu = _plan(headers, None, profile=CPU, unified=True).stage("denoise")
    gpu = _plan(headers, None, unified=True).stage("denoise")
    scores = act.attention_scores_bytes(2, 32, 1872, 1872)
    assert cpu.activations_bytes - gpu.activations_bytes == scores
    assert profile_for("thor-t5000").unified and "not measured" in profile_for("thor-t5000").source


def test_bad_requests_and_headers_are_refused(headers):
    with pytest.raises(RequestError) as err:
        PlanRequest(**{**W1, "width": 500})
    assert err.value.field == "--width"
    with pytest.raises(RequestError):
        PlanRequest(**{**W1, "num_frames": 96})
    with pytest.raises(RequestError):
        PlanRequest(**W1, precision="fp4")
    with pytest.raises(RequestError):
        PlanRequest(**W1, prefetch_depth=1)
    with pytest.raises(RequestError):
        profile_for("a100")
    ltx, gemma = headers
    with pytest.raises(CheckpointError):
        plan(Header(ltx.path, {}, ltx.tensors), gemma, PlanRequest(**W1), Budget(None, None, False), H100)
