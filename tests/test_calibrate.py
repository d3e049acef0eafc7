"""``ltx2-edge calibrate`` on the CPU, the profile file, and which profile a run uses (fake devices, no GPU).

The whole command runs here in a few seconds (``--device cpu --quick``): the same steps, files and table a GPU run
makes. Profile selection is checked with fake device identities and with torch's device properties monkeypatched,
in a temporary cache folder (``XDG_CACHE_HOME``), so no test reads or writes the user's cache.
"""

from __future__ import annotations

import json
import math
import platform
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from ltx2_edge.calibrate import choice, identity, profile_file, transfers
from ltx2_edge.calibrate.choice import DeviceIdentity, choose_profile
from ltx2_edge.calibrate.profile_file import (
    ProfileFileError,
    document_from_profile,
    read_profile,
    write_profile,
)
from ltx2_edge.calibrate.shapes import block_linears, gemm_shapes, w1_tokens
from ltx2_edge.checkpoint.configs import ltx2_config
from ltx2_edge.checkpoint.names import TRANSFORMER_BLOCKS
from ltx2_edge.cli import main
from ltx2_edge.memory import runtime
from ltx2_edge.plan.flops import linear_flops, transformer_rows
from ltx2_edge.plan.planner import default_is_quantized
from ltx2_edge.plan.profiles import CPU, H100, THOR_T5000
from ltx2_edge.plan.provenance import RATE_FIELDS, RATE_LABELS, origin_line, profile_origin, rate_origin

H100_NAME, H200_NAME = "NVIDIA H100 80GB HBM3", "NVIDIA H200"


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    """A private $XDG_CACHE_HOME: calibrated profiles go to ``cache / "ltx2-edge" / "profiles"``."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    return tmp_path / "xdg" / "ltx2-edge" / "profiles"


@pytest.fixture
def no_shipped(tmp_path, monkeypatch) -> Path:
    """An empty shipped-profiles folder (the test adds files to it); the package's own is read elsewhere."""
    folder = tmp_path / "shipped"
    folder.mkdir()
    monkeypatch.setattr(profile_file, "shipped_dir", lambda: folder)
    return folder


def _calibrated_doc(device: str, capability: str, date: str = "2026-12-03", torch_version: str = "2.11.0",
                    driver: str = "580.1", bf16: float = 800.0) -> dict:  # fmt: skip
    """A calibrated profile document: H100's figures, measured (this date) on ``device``."""
    rates = tuple((f, replace(H100.provenance.source_of(f), kind="measured")) for f in RATE_FIELDS)
    prov = replace(H100.provenance, device=device, capability=capability, date=date, torch=torch_version,
                   driver=driver, rates=rates)  # fmt: skip
    slug = profile_file.device_slug(device, capability)
    return document_from_profile(replace(H100, name=slug, bf16_tflops=bf16, provenance=prov, source="calibrated"))


def _write(folder: Path, doc: dict) -> Path:
    path = folder / f"{doc['name']}.json"
    write_profile(doc, path)
    return path


# --- the command on the CPU ---------------------------------------------------------------------------------------


def test_calibrate_cpu_quick_writes_a_profile_that_cpu_runs_then_use(cache, capsys):
    assert main(["calibrate", "--device", "cpu", "--quick", "--quiet"]) == 0
    out = capsys.readouterr().out
    files = list(cache.glob("*.json"))
    assert (
        len(files) == 1 and files[0].name == profile_file.device_slug(choice.cpu_model(), platform.machine()) + ".json"
    )
    doc = json.loads(files[0].read_text())
    assert doc["schema"] == profile_file.SCHEMA and doc["schema_version"] == profile_file.SCHEMA_VERSION
    assert doc["software"]["torch"] == torch.__version__ and doc["quick"] is True
    assert doc["flags"] == {"unified": True, "sdpa_materializes_scores": True}
    rates = doc["rates"]
    assert set(rates) == set(RATE_FIELDS)
    for field in ("bf16_tflops", "fp8_rowwise_tflops", "int8_tops", "attention_tflops", "conv_tflops",
                  "h2d_pinned_gbps", "memory_bandwidth_gbps", "file_read_warm_gbps"):  # fmt: skip
        entry = rates[field]
        assert entry["kind"] == "measured" and math.isfinite(entry["value"]) and entry["value"] > 0, field
        assert len(entry["samples"]) == 3 and "median of 3" in entry["how"], field
    # The CPU has no CUDA runtime: the nominal figure stands in, and says so.
    assert rates["runtime_overhead_bytes"]["kind"] == "not measured"
    assert rates["runtime_overhead_bytes"]["value"] == CPU.runtime_overhead_bytes
    assert "fp8_simulated" in rates["fp8_rowwise_tflops"]["how"]
    assert "int8_simulated" in rates["int8_tops"]["how"]
    assert rates["file_read_cold_gbps"]["kind"] in ("measured", "not measured")
    for label in RATE_LABELS.values():
        assert label in out
    assert f"wrote {files[0]}" in out and "device_profiles" in out
    # The timings beyond the rates: on a CPU without a checkpoint, the steps (eager only), the loads (no pinned
    # tier: one pool) and the MP4; the decoders need --checkpoint-path and --quick leaves out the start-up.
    timings = doc["timings"]
    assert set(timings) == {"step", "load", "encode"}
    assert doc["timings_detail"]["not_measured"] == ["decode", "startup"]
    assert timings["step"]["graph_block"] is None and len(timings["step"]["rows"]) == 2
    assert timings["load"]["quantized_gbps"] > 0 and timings["load"]["pin_gbps"] is None
    assert timings["encode"]["encoder"] == "libx264" and timings["encode"]["audio_s_per_s"] > 0
    assert "timings beyond the rates" in out and "startup: not measured" in out
    # A CPU run now uses it, as this device's own.
    profile, note = runtime.device_profile(torch.device("cpu"))
    assert note == "" and profile.provenance.chosen == "calibrated" and profile.name == doc["name"]
    assert profile.bf16_tflops == rates["bf16_tflops"]["value"]
    assert profile.timings.step is not None and profile.timings.missing() == ["decode", "startup"]
    assert rate_origin(profile, "bf16_tflops") == f"measured on this device, {doc['date']}"
    assert rate_origin(profile, "runtime_overhead_bytes").startswith("not measured: a CPU run has no CUDA runtime")


def test_calibrate_refuses_a_missing_device_or_checkpoint_in_one_line(cache, capsys, tmp_path):
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    assert main(["calibrate", "--device", f"cuda:{gpus}", "--quick"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("ltx2-edge: error: ") and f"device='cuda:{gpus}'" in err and len(err.splitlines()) == 1
    assert main(["calibrate", "--device", "cpu", "--checkpoint-path", str(tmp_path / "none.safetensors")]) == 2
    assert "checkpoint-path=" in capsys.readouterr().err
    assert main(["calibrate", "--device", "cpu", "--gemma-root", str(tmp_path)]) == 2  # without --checkpoint-path
    assert "gemma-root=" in capsys.readouterr().err
    assert not cache.exists() or not list(cache.glob("*.json"))


def test_calibrate_with_the_tiny_checkpoint_times_its_decoders_and_builds_4_blocks_apart(cache, capsys, tmp_path,
                                                                                          tiny_dir):  # fmt: skip
    from ltx2_edge.checkpoint.header import read_header
    from ltx2_edge.checkpoint.names import AUDIO_DECODER, VIDEO_DECODER

    ckpt = tiny_dir / "ltx2.safetensors"
    # A folder that is no Gemma: refused in one line before anything is measured.
    assert main(["calibrate", "--device", "cpu", "--checkpoint-path", str(ckpt), "--gemma-root", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert "Gemma folder" in err and len(err.splitlines()) == 1 and not cache.exists()
    out_file = tmp_path / "p.json"
    assert main(["calibrate", "--device", "cpu", "--checkpoint-path", str(ckpt), "--quick", "--quiet",
                 "--out", str(out_file)]) == 0  # fmt: skip
    out = capsys.readouterr().out
    doc = json.loads(out_file.read_text())
    load = doc["timings"]["load"]
    # The tiny model has 2 blocks: the 4-block mini transformers come from a scratch file at its width; the
    # decoders from the checkpoint itself, their bytes read from its header.
    assert "has fewer than 4 blocks" in load["how"]
    decoders = sum(
        t.nbytes for n, t in read_header(ckpt).tensors.items() if n.startswith(VIDEO_DECODER + AUDIO_DECODER)
    )
    assert load["decoders_bytes"] == decoders and load["decoders_s"] > 0 and load["embeddings_s"] > 0
    assert doc["timings"]["decode"]["decoder_tflops"] > 0
    assert doc["timings_detail"]["not_measured"] == ["startup"]
    steps = doc["timings_detail"]["step_seconds"]
    assert list(steps) == ["GEMM bf16/int8/fp8", "attention", "VAE conv3d", "copies", "checkpoint reads", "loads",
                           "denoise steps", "MP4 encode", "runtime memory", "start-up"]  # fmt: skip
    assert "calibrate's own steps, s: GEMM bf16/int8/fp8 " in out
    assert load.get("gemma_s") is None and "Gemma not measured (no --gemma-root)" in load["how"]

    # With the Gemma folder: its language model loaded whole with the run's loader, its bytes from its headers.
    from ltx2_edge.models.gemma import find_gemma_files, language_model_key

    with_gemma = tmp_path / "g.json"
    gemma_root = str(tiny_dir / "gemma")
    assert main(["calibrate", "--device", "cpu", "--checkpoint-path", str(ckpt), "--gemma-root", gemma_root,
                 "--quick", "--quiet", "--out", str(with_gemma)]) == 0  # fmt: skip
    load = json.loads(with_gemma.read_text())["timings"]["load"]
    _, shards, _ = find_gemma_files(tiny_dir / "gemma")
    lm = sum(t.nbytes for f in shards for n, t in read_header(f).tensors.items() if language_model_key(n) is not None)
    assert load["gemma_bytes"] == lm and load["gemma_s"] > 0 and load["gemma_encode_s"] > 0
    assert load["embeddings_first_s"] > 0
    assert f"Gemma from {tiny_dir / 'gemma'} loaded whole in" in load["how"]


def test_calibrate_help_imports_no_torch():
    code = (
        "import sys\nfrom ltx2_edge.cli import main\ntry:\n    main(['calibrate', '--help'])\n"
        "except SystemExit as exc:\n    assert exc.code == 0\nassert 'torch' not in sys.modules\nprint('ok')\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0 and done.stdout.strip().endswith("ok"), done.stderr
    assert "--checkpoint-path" in done.stdout and "--quick" in done.stdout


# --- the file -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("profile", [H100, THOR_T5000, CPU], ids=lambda p: p.name)
def test_built_in_profiles_round_trip_through_the_file_format(profile, tmp_path):
    back = read_profile(_write(tmp_path, document_from_profile(profile)))
    for field in (*RATE_FIELDS, "unified", "sdpa_materializes_scores", "name", "source"):
        assert getattr(back, field) == getattr(profile, field), field
    assert back.provenance.rates == profile.provenance.rates
    assert back.provenance.file.endswith(f"{profile.name}.json")


@pytest.mark.parametrize(
    ("mangle", "says"),
    [
        (lambda d: d.update(schema="other"), "schema is 'other'"),
        (lambda d: d.update(schema_version=2), "schema version 2, newer than"),
        (lambda d: d["rates"].pop("conv_tflops"), "rates miss conv_tflops"),
        (lambda d: d["rates"]["bf16_tflops"].update(value=-1.0), "rates.bf16_tflops.value=-1.0"),
        (lambda d: d["rates"]["h2d_pinned_gbps"].update(value=float("nan")), "rates.h2d_pinned_gbps.value=nan"),
        (lambda d: d["rates"]["int8_tops"].update(unit="TFLOP/s"), "rates.int8_tops.unit='TFLOP/s'"),
        (lambda d: d["rates"]["int8_tops"].update(kind="guessed"), "rates.int8_tops.kind='guessed'"),
        (lambda d: d["flags"].pop("unified"), "flags.unified"),
        (lambda d: d.update(name="Has Spaces"), "name='Has Spaces'"),
    ],
)
def test_a_bad_profile_document_is_refused_naming_the_field(mangle, says, tmp_path):
    doc = document_from_profile(H100)
    mangle(doc)
    with pytest.raises(ProfileFileError) as err:
        write_profile(doc, tmp_path / "p.json")
    assert says in str(err.value) and len(str(err.value).splitlines()) == 1
    assert not (tmp_path / "p.json").exists()  # validated before anything is written


def test_the_shipped_profiles_are_valid_and_distinct():
    shipped = profile_file.shipped_profiles()
    names = [p.name for p in shipped] + [p.name for p in choice.BUILT_IN]
    assert len(set(p.name for p in shipped)) == len(shipped)
    assert profile_file.shipped_dir().is_dir() and "h100" in names
    for p in shipped:
        assert p.provenance.device and p.provenance.capability and p.provenance.date


# --- which profile a run uses -------------------------------------------------------------------------------------


def test_a_shipped_device_uses_its_profile_and_an_unknown_one_the_nearest_with_a_note(cache, no_shipped):
    h100, note = choose_profile(DeviceIdentity(H100_NAME, "9.0", False, "cuda"))
    assert (h100.name, h100.provenance.chosen, note) == ("h100", "shipped", "")
    assert rate_origin(h100, "bf16_tflops") == "measured on this device, 2026-11-24"
    assert rate_origin(h100, "memory_bandwidth_gbps") == "published"
    h200, note = choose_profile(DeviceIdentity(H200_NAME, "9.0", False, "cuda"))
    assert h200.name == "h100" and h200.provenance.chosen == "nearest"
    assert f"times predicted with {H100_NAME}'s rates" in note and "ltx2-edge calibrate" in note
    assert rate_origin(h200, "bf16_tflops") == "another device's (measured on NVIDIA H100 80GB HBM3, 2026-11-24)"
    assert origin_line(h200).startswith(f"times predicted with {H100_NAME}'s rates")
    rtx, note = choose_profile(DeviceIdentity("NVIDIA GeForce RTX 4090", "8.9", False, "cuda"))
    assert rtx.name == "h100" and "RTX 4090 (sm_89) has no profile of its own" in note


def test_dropping_a_file_in_the_shipped_folder_ships_that_device(cache, no_shipped):
    _write(no_shipped, _calibrated_doc(H200_NAME, "9.0"))
    profile, note = choose_profile(DeviceIdentity(H200_NAME, "9.0", False, "cuda"))
    assert (profile.name, profile.provenance.chosen, note) == ("nvidia-h200-sm90", "shipped", "")
    assert profile.bf16_tflops == 800.0 and rate_origin(profile, "conv_tflops") == "measured on this device, 2026-12-03"
    # The H100 keeps its built-in profile; the H200's file does not capture it.
    assert choose_profile(DeviceIdentity(H100_NAME, "9.0", False, "cuda"))[0].name == "h100"


def test_a_calibrated_profile_comes_first_and_other_software_gives_a_note(cache, no_shipped):
    ident = DeviceIdentity(H100_NAME, "9.0", False, "cuda", torch="2.11.0+cu130", driver="580.1")
    _write(cache, _calibrated_doc(H100_NAME, "9.0", date="2026-12-01", bf16=700.0))
    _write(cache, _calibrated_doc("NVIDIA A100-SXM4-80GB", "8.0", bf16=300.0))  # another machine's file
    profile, note = choose_profile(ident)
    assert (profile.provenance.chosen, profile.bf16_tflops, note) == ("calibrated", 700.0, "")
    assert origin_line(profile).startswith(f"rates measured on this device ({H100_NAME}, sm_90) by ltx2-edge calibrate")
    newer = _calibrated_doc(H100_NAME, "9.0", date="2026-12-05", torch_version="2.13.0", driver="590.2", bf16=710.0)
    write_profile(newer, cache / "again.json")
    profile, note = choose_profile(ident)
    assert profile.bf16_tflops == 710.0  # the newest of this device's files
    assert "torch 2.13.0 (this process: 2.11.0+cu130)" in note and "driver 590.2 (this machine: 580.1)" in note
    assert profile.provenance.note == note
    # A torch of the same major.minor and the same driver: no note.
    same = replace(ident, torch="2.13.0+cu130", driver="590.2")
    assert choose_profile(same)[1] == ""


def test_an_unreadable_cache_file_is_skipped_with_a_note(cache, no_shipped):
    cache.mkdir(parents=True)
    (cache / "broken.json").write_text("{not json")
    (cache / ".half-written.partial.json").write_text("{")  # an interrupted atomic write: never read
    profile, note = choose_profile(DeviceIdentity(H100_NAME, "9.0", False, "cuda"))
    assert profile.name == "h100" and note.startswith("ignored device profile ")
    assert "broken.json" in note and "half-written" not in note


def test_integrated_gpus_use_thor_published_figures_with_a_note(cache, no_shipped):
    thor, note = choose_profile(DeviceIdentity("NVIDIA Thor", "11.0", True, "cuda"))
    assert thor.name == "thor-t5000" and thor.provenance.chosen == "shipped" and thor.unified
    assert "published figures" in note and "not measured" in note
    assert rate_origin(thor, "bf16_tflops") == "published" and rate_origin(thor, "h2d_pinned_gbps") == "assumed"
    orin, note = choose_profile(DeviceIdentity("Orin", "8.7", True, "cuda"))
    assert orin.name == "thor-t5000" and orin.provenance.chosen == "nearest" and "NVIDIA Jetson AGX Thor" in note


def _fake_gpu(monkeypatch, name: str, major: int, minor: int, integrated: bool) -> torch.device:
    props = SimpleNamespace(name=name, major=major, minor=minor, is_integrated=integrated, total_memory=80 << 30)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda _device=None: props)
    monkeypatch.setattr(identity, "driver_version", lambda: "580.1")
    return torch.device("cuda")


@pytest.mark.parametrize(
    ("name", "cap", "integrated", "profile", "chosen", "note"),
    [
        (H100_NAME, (9, 0), False, "h100", "shipped", ""),
        (H200_NAME, (9, 0), False, "h100", "nearest", "times predicted with NVIDIA H100 80GB HBM3's rates"),
        ("NVIDIA Thor", (11, 0), True, "thor-t5000", "shipped", "published figures"),
    ],
)
def test_runtime_device_profile_reads_torchs_device_properties(cache, no_shipped, monkeypatch, name, cap, integrated,
                                                               profile, chosen, note):  # fmt: skip
    device = _fake_gpu(monkeypatch, name, *cap, integrated)
    got, got_note = runtime.device_profile(device)
    assert (got.name, got.provenance.chosen) == (profile, chosen)
    assert (note in got_note) if note else got_note == ""
    assert runtime.is_integrated(device) is integrated


def test_the_plan_prints_and_records_where_the_rates_come_from(cache, no_shipped, full_headers):
    from ltx2_edge.plan.budget import Budget, GiB
    from ltx2_edge.plan.plan_text import format_plan, plan_to_json
    from ltx2_edge.plan.plan_types import PlanRequest
    from ltx2_edge.plan.planner import plan

    profile, _ = choose_profile(DeviceIdentity(H200_NAME, "9.0", False, "cuda"))
    request = PlanRequest(width=512, height=288, num_frames=97, frame_rate=24.0, num_inference_steps=20)
    p = plan(*full_headers, request, Budget(None, 100 * GiB, False), profile)
    text = format_plan(p)
    assert f"rates: times predicted with {H100_NAME}'s rates" in text
    assert "measured: bf16 GEMM" in text and "published: device memory bandwidth" in text
    doc = json.loads(json.dumps(plan_to_json(p)))
    assert doc["profile_origin"] == json.loads(json.dumps(profile_origin(profile)))
    assert doc["profile_origin"]["chosen"] == "nearest" and set(doc["profile_origin"]["rates"]) == set(RATE_FIELDS)
    assert doc["profile"]["provenance"]["device"] == H100_NAME


# --- what calibrate times -----------------------------------------------------------------------------------------


def test_the_block_gemm_shapes_are_the_checkpoint_layouts(full_headers):
    ltx, _ = full_headers
    config = ltx2_config("full")
    block0 = {n: t.shape for n, t in ltx.tensors.items() if n.startswith(TRANSFORMER_BLOCKS + "0.")}
    linears = {n: s for n, s in block0.items() if n.endswith(".weight") and len(s) == 2}
    assert block_linears(config) == linears
    # The FLOPs calibrate weights its rates by are the planner's own for one block (CFG batch 2).
    tokens = w1_tokens(config)
    rows = transformer_rows(tokens)
    infos = [t for n, t in ltx.tensors.items() if n in linears]
    planner = linear_flops(infos, lambda n: 2 * rows(n.removeprefix("model.diffusion_model.")), default_is_quantized)
    shapes = gemm_shapes(config, tokens)
    assert sum(g.flops for g in shapes if g.quantized) == planner.linear_quantized
    assert sum(g.flops for g in shapes if not g.quantized) == planner.linear_bf16
    assert sum(g.flops for g in shapes) * 48 / 2 == pytest.approx(53.1e12, rel=0.01)  # per sample, docs' figure


def test_resident_fraction_sees_the_page_cache_and_a_drop_is_checked(tmp_path):
    path = tmp_path / "f.bin"
    path.write_bytes(b"\1" * (4 << 20))
    path.read_bytes()
    assert transfers.resident_fraction(path, 0, 4 << 20) == 1.0
    done, how = transfers.drop_page_cache(path, 0, 4 << 20)
    left = transfers.resident_fraction(path, 0, 4 << 20)
    if done:
        assert left <= transfers.COLD_RESIDENT_LIMIT and "checked with mincore" in how
    else:  # tmpfs, or a file system that keeps the pages: the reason is stated, never a fake cold figure
        assert "cached" in how or "tmpfs" in how or "mincore" in how


def test_a_drop_evicts_only_the_bytes_calibrate_reads_cold(tmp_path):
    """Calibrate's cold read drops its own range, not the file: dropping the whole checkpoint made the first run after
    calibrate a cold one (34 GB from the disk on a lent H200)."""
    path = tmp_path / "f.bin"
    path.write_bytes(b"\1" * (8 << 20))
    path.read_bytes()
    if transfers.resident_fraction(path, 0, 8 << 20) != 1.0:
        pytest.skip("no mincore here, or the file system keeps no page cache for it")
    done, how = transfers.drop_page_cache(path, 0, 4 << 20)
    if not done or "drop_caches" in how:  # tmpfs keeps pages; root's fallback drops every file's cache
        pytest.skip(how)
    assert transfers.resident_fraction(path, 4 << 20, 8 << 20) == 1.0  # the rest stays warm


def test_the_profile_side_of_calibrate_imports_no_torch():
    code = (
        "import sys\n"
        "import ltx2_edge.calibrate.profile_file, ltx2_edge.calibrate.choice, ltx2_edge.calibrate.shapes\n"
        "from ltx2_edge.plan.profiles import profile_for\n"
        "assert profile_for('h100').name == 'h100'\n"
        "assert 'torch' not in sys.modules and 'numpy' not in sys.modules, 'torch or numpy imported'\n"
        "print('ok')\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr


def test_cached_fraction_weighs_files_by_size_and_says_when_it_cannot_tell(tmp_path):
    from ltx2_edge.checkpoint.page_cache import cached_fraction

    a, b = tmp_path / "a.bin", tmp_path / "b.bin"
    a.write_bytes(b"\1" * (3 << 20))
    b.write_bytes(b"\2" * (1 << 20))
    both = cached_fraction([a, b])
    if both is None:
        pytest.skip("no mincore here")
    assert both == pytest.approx(1.0)  # just written: in the page cache
    dropped, _ = transfers.drop_page_cache(a, 0, 3 << 20)
    # A drop may fall back to the whole page cache (root): weigh only when a alone went.
    if dropped and transfers.resident_fraction(a, 0, 3 << 20) == 0.0 and transfers.resident_fraction(b, 0, 1 << 20):
        assert cached_fraction([a, b]) == pytest.approx(0.25)  # a's 3 MiB gone, b's 1 MiB left
    assert cached_fraction([tmp_path / "missing.bin"]) is None


def test_cached_fraction_samples_a_large_file_in_windows(tmp_path, monkeypatch):
    from ltx2_edge.checkpoint import page_cache

    monkeypatch.setattr(page_cache, "SAMPLES", 8)  # a 4 MiB file is "large": 8 windows of 16 KiB
    monkeypatch.setattr(page_cache, "WINDOW", 16 << 10)
    path = tmp_path / "big.bin"
    path.write_bytes(b"\3" * (4 << 20))
    sampled = page_cache.cached_fraction([path])
    if sampled is None:
        pytest.skip("no mincore here")
    assert sampled == pytest.approx(1.0)
    dropped, _ = transfers.drop_page_cache(path, 0, 4 << 20)
    if not dropped:
        return
    with path.open("rb") as f:  # the second half read back into the page cache
        f.seek(2 << 20)
        f.read()
    if transfers.resident_fraction(path, 0, 4 << 20) == pytest.approx(0.5, abs=0.01):
        assert page_cache.cached_fraction([path]) == pytest.approx(0.5)  # 4 of the 8 windows lie in the second half
