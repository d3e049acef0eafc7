"""Denoising accelerations (issue 5) on the CPU: step invariants, compiled blocks, the choices and their reasons.

CUDA graphs and the SDPA backend measurement need a GPU (bench/step_speed.py runs them); here their choice
logic is checked, and everything that runs on a CPU is compared with the plain eager forward.
"""

from __future__ import annotations

import logging
import stat
from pathlib import Path

import pytest
import torch
from torch import nn

import ltx2_edge  # noqa: F401  (torchaudio placeholder before ltx_core)
from ltx2_edge.accel import attention, compile_choice
from ltx2_edge.accel import compile as accel_compile
from ltx2_edge.accel.compile_choice import ClipsAhead
from ltx2_edge.accel.engine import AccelSettings
from ltx2_edge.accel.settings import AccelInputs, choose_accel
from ltx2_edge.accel.step_invariants import step_invariants, text_kv_bytes
from ltx2_edge.guidance import Guidance
from ltx2_edge.report import RunReport, StageRecord
from ltx2_edge.stages.denoise import Contexts, batch_passes, batched_forward, denoise, official_sigmas
from ltx2_edge.stages.latents import noised_latents, pixel_shape

W, H, F, STEPS = 64, 96, 17, 4


def _contexts(config: dict, tokens: int = 32) -> Contexts:
    g = torch.Generator().manual_seed(1)
    width = config["transformer"]["caption_channels"]
    return Contexts(*(torch.randn(1, tokens, width, generator=g) for _ in range(4)))


def _run(model: nn.Module, ctx: Contexts, accel: AccelSettings | None, guidance: str = "cfg") -> tuple:
    setup = noised_latents(pixel_shape(W, H, F, 24.0), torch.Generator().manual_seed(10), torch.device("cpu"),
                           torch.float32)  # fmt: skip
    stats: dict = {}
    v, a = denoise(model, setup.video_state, setup.audio_state, official_sigmas(STEPS, torch.device("cpu")), ctx,
                   Guidance.preset_named(guidance), accel=accel, accel_stats=stats)  # fmt: skip
    return v.latent, a.latent, stats


@pytest.mark.parametrize("guidance", ["cfg", "full"])
def test_step_invariants_are_bit_identical_and_computed_once(tiny_transformer_fp32, tiny_config, guidance):
    ctx = _contexts(tiny_config)
    v0, a0, _ = _run(tiny_transformer_fp32, ctx, None, guidance)
    v1, a1, stats = _run(tiny_transformer_fp32, ctx, AccelSettings(freeze_text_kv=True), guidance)
    assert torch.equal(v0, v1) and torch.equal(a0, a1)
    inv = stats["invariants"]
    blocks = tiny_config["transformer"]["num_layers"]
    # A forward asks for 6 memoised results (rotary tables: video, audio, 2 cross; 2 caption projections) and 4
    # text K/V per block. Only the first forward computes (the audio cross table equals the audio table here, so
    # it is a hit already), every other one reuses.
    per_forward = 6 + 4 * blocks
    assert inv["computed"] + inv["reused"] == STEPS * per_forward
    assert 4 * blocks < inv["computed"] <= per_forward
    batch = len(Guidance.preset_named(guidance).passes())
    assert inv["text_kv_bytes"] == text_kv_bytes(tiny_config, batch, 32, dtype_bytes=4)


def test_step_invariants_restore_the_model_and_refuse_a_new_context(tiny_transformer_fp32, tiny_config):
    model = tiny_transformer_fp32.velocity_model
    before = type(model.transformer_blocks[0].attn2.to_k)
    ctx = _contexts(tiny_config)
    with torch.inference_mode(), step_invariants(tiny_transformer_fp32, freeze_text_kv=True):
        proj = model.transformer_blocks[0].attn2.to_k
        proj(ctx.video)
        with pytest.raises(RuntimeError, match="frozen for another context"):
            proj(ctx.audio_negative[..., : ctx.video.shape[-1]].clone())
    assert type(model.transformer_blocks[0].attn2.to_k) is before is nn.Linear
    pre = model.video_args_preprocessor.simple_preprocessor
    assert "_prepare_positional_embeddings" not in vars(pre) and "_prepare_context" not in vars(pre)


def test_freezing_text_kv_is_refused_where_the_context_changes_per_step():
    class AdaLnModel(nn.Module):
        cross_attention_adaln = True
        transformer_blocks = nn.ModuleList()

    with pytest.raises(ValueError, match="cross-attention AdaLN"), step_invariants(AdaLnModel(), freeze_text_kv=True):
        pass


def test_compiled_blocks_match_eager_and_compile_once(tiny_transformer_fp32, tiny_config, tmp_path, monkeypatch):
    # Inductor's CPU backend: the same code path as on the GPU up to the kernels it generates.
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "inductor"))
    ctx = _contexts(tiny_config)
    v0, a0, _ = _run(tiny_transformer_fp32, ctx, None)
    v1, a1, stats = _run(tiny_transformer_fp32, ctx, AccelSettings(compile=True, freeze_text_kv=True))
    # fp32: fused kernels reorder a few sums; four steps keep the difference at float rounding.
    torch.testing.assert_close(v1, v0, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(a1, a0, rtol=1e-4, atol=1e-5)
    assert stats["compiled_graphs"] == 1, stats["graph_breaks"]  # both blocks share one graph, no breaks
    assert stats["compile_step_seconds"] > 0 and stats["eager_steps"] == 1
    block = tiny_transformer_fp32.velocity_model.transformer_blocks[0]
    assert "forward" not in vars(block)  # undone after the run, attention dispatch included
    from ltx_core.model.transformer.attention import AttentionFunction

    assert isinstance(block.attn1.attention_function, AttentionFunction)


def test_block_invariant_perturbations_answer_like_ltx_core():
    from ltx_core.guidance.perturbations import PerturbationType

    for name in ("cfg", "full"):
        guidance = Guidance.preset_named(name)
        original = batch_passes(guidance, Contexts(*(torch.zeros(1, 2, 4) for _ in range(4)))).perturbations
        if name == "full":  # STG names single blocks: the compiled path must refuse it, not guess
            with pytest.raises(ValueError, match="on blocks"):
                accel_compile.block_invariant(original)
            continue
        fixed = accel_compile.block_invariant(original)
        for t in PerturbationType:
            for block in (0, 5, 47):
                assert fixed.any_in_batch(t, block) == original.any_in_batch(t, block)
                assert fixed.all_in_batch(t, block) == original.all_in_batch(t, block)


CHEAP = compile_choice.CompileEconomics(1.0, "this process", 6.8)  # a 1280x704 clip again in a long-lived Generator
COSTLY = compile_choice.CompileEconomics(9.0, "warm cache", 0.8)  # a one-shot W1 run (H100 estimates)


@pytest.mark.parametrize(
    ("mode", "support", "economics", "stg", "enabled", "reason"),
    [
        ("off", None, CHEAP, False, False, "off (--compile off)"),
        ("auto", None, CHEAP, False, True, "compiled: saving ~6.8 s over this clip alone against a ~1.0 s compile "
                                           "(compiled before in this process); transformer block"),
        ("auto", None, None, False, True, "compiled: transformer block"),
        ("auto", None, COSTLY, False, False, "would cost ~9.0 s (warm Inductor cache) and save ~0.8 s over this clip "
                                             "alone"),
        ("auto", "Triton is not installed", CHEAP, False, False, "eager: Triton is not installed"),
        ("auto", None, CHEAP, True, False, "perturbs single blocks"),
        ("on", None, COSTLY, False, True, "compiled: transformer block"),
    ],
)  # fmt: skip
def test_decide_compile(mode, support, economics, stg, enabled, reason):
    decision = compile_choice.decide_compile(mode, support, economics, stg)
    assert decision.enabled is enabled and reason in decision.reason


@pytest.fixture
def fresh_process(tmp_path, monkeypatch) -> Path:
    """No shape compiled in this process yet, and an empty Inductor cache (returned: fill it to make it warm)."""
    monkeypatch.setattr(compile_choice, "_COMPILED_HERE", set())
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_compile_economics(fresh_process):
    key = ("test-shape", 1)
    cold = compile_choice.compile_economics(key, floor_seconds=2.4, copy_bound=False)
    assert (cold.cost_note, cold.cost_s) == ("cold", compile_choice.COMPILE_COST_S["cold"])
    assert cold.saving_s == pytest.approx(2.4 * compile_choice.COMPILE_SAVING_X_FLOOR)
    fresh_process.mkdir()
    (fresh_process / "entry").write_text("x")
    assert compile_choice.compile_economics(key, 2.4, False).cost_note == "warm cache"
    compile_choice.note_compiled(key)
    again = compile_choice.compile_economics(key, 2.4, copy_bound=True)
    assert (again.cost_note, again.saving_s) == ("this process", 0.0)  # copy-bound: faster kernels buy nothing


W1_FLOOR = 2.4  # W1's denoising compute floor at fp8 on the H100 (docs/benchmarks.md), one clip


def _decide(clips: ClipsAhead, floor: float = W1_FLOOR, key: tuple = ("w1",)) -> compile_choice.CompileDecision:
    economics = compile_choice.compile_economics(key, floor, False, clips)
    return compile_choice.decide_compile("auto", None, economics, False)


def test_auto_weighs_the_compile_against_every_clip_ahead(fresh_process):
    fresh_process.mkdir()
    (fresh_process / "entry").write_text("x")  # a warm Inductor cache: ~9 s to compile
    alone = _decide(ClipsAhead())
    assert not alone.enabled
    assert alone.reason == ("eager: compiling would cost ~9.0 s (warm Inductor cache) and save ~0.8 s over this clip "
                            "alone (--compile on forces it)")  # fmt: skip
    queued = _decide(ClipsAhead(batch=1, queued=29))  # one job picked, 29 alike posted behind it
    saving = W1_FLOOR * compile_choice.COMPILE_SAVING_X_FLOOR * 30
    # The queued clips run in a later batch, which enters the compiled code once more: 9 + 1 s.
    assert queued.enabled and queued.reason.startswith(
        f"compiled: saving ~{saving:.0f} s over 30 clips of this shape (this one, 29 queued behind it) against a "
        "~10 s compile (warm Inductor cache); transformer block"
    )
    batch = _decide(ClipsAhead(batch=7))  # the measured 8-at-once burst's second batch
    assert not batch.enabled and "save ~5.7 s over 7 clips of this shape in this batch" in batch.reason
    assert not _decide(ClipsAhead(batch=7, queued=5)).enabled  # 12 clips: ~9.8 s saved against 9 + 1 s
    assert _decide(ClipsAhead(batch=7, queued=6)).enabled  # 13: ~10.6 s
    # A cold cache (36 s) wants more: 45 W1 clips, or longer ones (the floor grows with the clip).
    (fresh_process / "entry").unlink()
    assert not _decide(ClipsAhead(batch=1, queued=29)).enabled
    assert _decide(ClipsAhead(batch=1, queued=29), floor=4 * W1_FLOOR).enabled


def test_a_shape_compiled_in_this_process_is_not_charged_again(fresh_process):
    before = compile_choice.compile_economics(("w1",), W1_FLOOR, False, ClipsAhead(batch=3))
    assert (before.cost_note, before.cost_s) == ("cold", 36.0)
    compile_choice.note_compiled(("w1",))
    after = compile_choice.compile_economics(("w1",), W1_FLOOR, False, ClipsAhead(batch=3))
    assert (after.cost_note, after.cost_s) == ("this process", compile_choice.COMPILE_COST_S["this process"])
    again = _decide(ClipsAhead(batch=3))
    assert again.enabled and "against a ~1.0 s compile (compiled before in this process)" in again.reason
    assert not _decide(ClipsAhead(batch=3), key=("other shape",)).enabled  # another shape still pays its compile
    # A lone W1 clip saves ~0.8 s: less than even the re-entry, so it stays eager; a 6 s clip (floor x 1.5) does not.
    assert not _decide(ClipsAhead()).enabled
    assert _decide(ClipsAhead(), floor=1.5 * W1_FLOOR).enabled


@pytest.mark.parametrize(
    ("value", "match"),
    [(0, "runs_ahead=0 is not allowed"), (True, "runs_ahead=True"), ("3", "runs_ahead='3'"), (-2, "runs_ahead=-2")],
)
def test_clips_ahead_refuses_bad_counts_in_one_line(value, match):
    with pytest.raises(ValueError, match=match) as info:
        ClipsAhead.of(value)
    assert "\n" not in str(info.value)
    with pytest.raises(ValueError, match="clips ahead: queued=-1 is not allowed: an integer >= 0"):
        ClipsAhead(batch=1, queued=-1)


def test_clips_ahead_counts_one_shape_in_the_batch_and_behind_it():
    a, b = ("a",), ("b",)
    assert ClipsAhead.among(a, [a, b, a], [b, a, a, None]) == ClipsAhead(batch=2, queued=2)
    assert ClipsAhead.among(a, [], []) == ClipsAhead()  # the clip itself always counts
    assert ClipsAhead.among(None, [None, None], [None]) == ClipsAhead()  # unknown shapes never count together
    assert ClipsAhead.of(4) == ClipsAhead(batch=4) and ClipsAhead(3, 2).clips == 5


def test_compile_support_on_cpu_and_ptxas_version(tmp_path, monkeypatch):
    assert "CUDA devices only" in accel_compile.compile_support(torch.device("cpu"))
    fake = tmp_path / "ptxas"
    fake.write_text("#!/bin/sh\necho 'Cuda compilation tools, release 12.8, V12.8.93'\n")
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("TRITON_PTXAS_PATH", str(fake))
    assert accel_compile._ptxas_major() == 12
    fake.write_text("#!/bin/sh\necho 'Cuda compilation tools, release 13.0, V13.0.48'\n")
    assert accel_compile._ptxas_major() == 13


def _inputs(**kw) -> AccelInputs:
    base = dict(compile_mode="auto", compile_support=None, compile_economics=CHEAP, cuda_graph_mode="auto",
                device_type="cuda",
                batched=True, block_perturbations=False, streamed_blocks=0, budget_bytes=32 * 2**30,
                predicted_peak_bytes=23 * 2**30, text_kv_bytes=int(2.25 * 2**30), steps=20)  # fmt: skip
    return AccelInputs(**(base | kw))


@pytest.mark.parametrize(("steps", "graph"), [(20, True), (12, True), (11, False), (8, False), (3, False)])
def test_cuda_graph_only_when_its_replays_pay_for_the_capture(steps, graph):
    choice = choose_accel(_inputs(steps=steps))
    assert choice.settings.cuda_graph is graph
    assert graph or f"{steps - 2} replays would not pay back its capture" in choice.settings.reasons[1]


def test_choose_accel_resident_streamed_and_tight():
    full = choose_accel(_inputs())
    assert (full.settings.compile, full.settings.cuda_graph, full.settings.freeze_text_kv) == (True, True, True)
    assert full.extra_peak_bytes == int(2.25 * 2**30)
    streamed = choose_accel(_inputs(streamed_blocks=30, budget_bytes=16 * 2**30, predicted_peak_bytes=15 * 2**30))
    # From pinned memory the graph holds the copies; from the file (host reads between blocks) it cannot.
    assert streamed.settings.compile and streamed.settings.cuda_graph and not streamed.settings.freeze_text_kv
    assert "copies of its 30 streamed blocks" in streamed.settings.reasons[1] and streamed.extra_peak_bytes == 0
    from_file = choose_accel(_inputs(streamed_blocks=30, budget_bytes=16 * 2**30, predicted_peak_bytes=15 * 2**30,
                                     stream_tier="file"))  # fmt: skip
    assert not from_file.settings.cuda_graph and "read from the file" in from_file.settings.reasons[1]
    tight = choose_accel(_inputs(predicted_peak_bytes=31 * 2**30))
    assert (
        tight.settings.cuda_graph
        and not tight.settings.freeze_text_kv
        and "exceeds the budget" in tight.settings.reasons[2]
    )
    cpu = choose_accel(_inputs(device_type="cpu", compile_support="compiling pays off on CUDA devices only"))
    assert not cpu.settings.compile and not cpu.settings.cuda_graph and "no CUDA graph on cpu" in cpu.settings.reasons
    sequential = choose_accel(_inputs(batched=False))
    assert sequential.settings == AccelSettings(reasons=sequential.settings.reasons)
    with pytest.raises(ValueError, match="cuda_graph='always'"):
        choose_accel(_inputs(cuda_graph_mode="always"))


def test_text_kv_bytes_full_size():
    from ltx2_edge.checkpoint.configs import ltx2_config

    # 48 blocks x (K + V) x 2 passes x 1024 tokens x (4096 + 2048) x bf16 = 2.25 GiB, as the GPU run measured.
    assert text_kv_bytes(ltx2_config("full"), 2, 1024) == 2_415_919_104


def test_attention_shapes_and_cpu_dispatch(tiny_config):
    shapes = attention.step_shapes(tiny_config, 2, 100, 10, 64)
    t = tiny_config["transformer"]
    assert shapes[0] == (2, t["num_attention_heads"], 100, 100, t["attention_head_dim"])
    assert shapes[3] == (2, t["audio_num_attention_heads"], 10, 64, t["audio_attention_head_dim"])
    backend, timings = attention.choose_backend(shapes, torch.device("cpu"), torch.float32)
    assert backend is None and "not measured on cpu" in timings["note"]


def test_report_table_gives_compile_its_own_line():
    report = RunReport(request={}, device={}, versions={}, output_path="x.mp4")
    report.stages.append(StageRecord("denoise", 40.5, 2**30, "cuda allocated", "fp8",
                                     {"sub_rows": [("compile + graph capture", 25.1, "inside denoise")]}))  # fmt: skip
    lines = report.table().splitlines()
    assert lines[2].startswith("denoise") and lines[3].startswith("  compile + graph capture | 25.10")


def test_generator_refuses_compile_on_before_loading(tiny_dir: Path):
    from ltx2_edge.engine.settings import RunSettings
    from ltx2_edge.errors import RequestError
    from ltx2_edge.pipeline import Generator
    from ltx2_edge.request import GenerationRequest

    gen = Generator(
        tiny_dir / "ltx2.safetensors", tiny_dir / "gemma", RunSettings(device="cpu", budget=None, compile="on")
    )
    with pytest.raises(RequestError, match=r"compile='on' is not allowed: compiling pays off on CUDA devices only"):
        gen.check(GenerationRequest(prompt="a kite"), None, overwrite=False)
    auto = Generator(tiny_dir / "ltx2.safetensors", tiny_dir / "gemma", RunSettings(device="cpu", budget=None))
    request = GenerationRequest(prompt="a kite")
    reasons = auto.prepare(request).passes[0].accel.settings.reasons
    assert reasons[0].startswith("eager: compiling pays off on CUDA devices only")
    with pytest.raises(RequestError, match="compile='maybe'"):
        Generator(tiny_dir / "ltx2.safetensors", tiny_dir / "gemma", RunSettings(device="cpu", compile="maybe"))


def test_batched_forward_is_what_the_engine_runs(tiny_transformer_fp32, tiny_config):
    # The engine's eager step 0 is batched_forward itself: same tensors out for the same inputs.
    ctx = _contexts(tiny_config)
    setup = noised_latents(pixel_shape(W, H, F, 24.0), torch.Generator().manual_seed(3), torch.device("cpu"),
                           torch.float32)  # fmt: skip
    batched = batch_passes(Guidance.preset_named("cfg"), ctx)
    sigma = official_sigmas(STEPS, torch.device("cpu"))[1]
    with torch.inference_mode():
        plain = batched_forward(tiny_transformer_fp32, batched, setup.video_state, setup.audio_state, sigma)
        with step_invariants(tiny_transformer_fp32, freeze_text_kv=True):
            first = batched_forward(tiny_transformer_fp32, batched, setup.video_state, setup.audio_state, sigma)
            again = batched_forward(tiny_transformer_fp32, batched, setup.video_state, setup.audio_state, sigma)
    for p, f, a in zip(plain, first, again, strict=True):
        assert torch.equal(p, f) and torch.equal(p, a) and p.shape[0] == 2


def test_compiled_blocks_keep_working_with_streamed_blocks(tiny_dir, tiny_config, monkeypatch):
    # The streamer waits for each streamed block's copy in a forward pre-hook; compiling the block's forward (not
    # its call) must leave those hooks eager and read the slot's weights. aot_eager: Dynamo + AOT, no codegen.
    from ltx2_edge.accel import engine as accel_engine
    from ltx2_edge.models.streamed_transformer import load_streamed_transformer
    from ltx2_edge.quant.policy import QuantPolicy

    original = accel_engine.compile_blocks
    monkeypatch.setattr(accel_engine, "compile_blocks", lambda m, d: original(m, d, backend="aot_eager"))
    ckpt, policy = tiny_dir / "ltx2.safetensors", QuantPolicy.from_flags("int8")
    streamed, streamer = load_streamed_transformer(ckpt, torch.device("cpu"), torch.float32, policy, 1, "pinned", 2)
    ctx = _contexts(tiny_config)
    with streamer:
        v0, a0, _ = _run(streamed, ctx, None)
        v1, a1, stats = _run(streamed, ctx, AccelSettings(compile=True))
        copies = streamer.stats().copies
    torch.testing.assert_close(v1, v0, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(a1, a0, rtol=1e-5, atol=1e-6)
    # One graph for resident and streamed blocks alike: a streamed block's weights are slot views bound once, not
    # rebound every forward, so nothing the graph guards on changes. The streamed block crossed every step of both
    # runs.
    assert stats["compiled_graphs"] == 1 and copies == 2 * STEPS


def test_a_capture_out_of_memory_runs_the_steps_eager_and_says_so(tiny_transformer_fp32, tiny_config, monkeypatch,
                                                                  caplog):  # fmt: skip
    # The graph's private pool cannot reuse the eager steps' cached memory, so where the budget is tight its capture
    # can fail where eager steps fit. The run then computes the same latents eager, and the report and log say why.
    from ltx2_edge.accel import step_graph

    def no_room(self, video, audio, sigma):  # noqa: ANN001
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 280.00 MiB. 15.26 GiB allowed")

    monkeypatch.setattr(step_graph.StepGraph, "capture", no_room)
    ctx = _contexts(tiny_config)
    v0, a0, _ = _run(tiny_transformer_fp32, ctx, None)
    with caplog.at_level(logging.WARNING, logger="ltx2_edge.accel.engine"):
        v1, a1, stats = _run(tiny_transformer_fp32, ctx, AccelSettings(cuda_graph=True))
    assert torch.equal(v0, v1) and torch.equal(a0, a1)
    assert stats["graph_refused"].startswith("the CUDA graph's capture ran out of memory inside the budget")
    assert stats["eager_steps"] == STEPS and stats["graph_replays"] == 0 and stats["capture_seconds"] is None
    assert "--cuda-graph off skips the capture" in caplog.text
