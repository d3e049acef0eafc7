"""Pre-quantized copies beside the originals: `quantize` writes them where runs look, runs read them (and say so in
the notes, the plan and the report, with the bytes each stage read), refuse a copy that is not of this original or
not of this policy, and read the originals with --prequantized off; the latents a copy makes are those of the
originals quantized at load, bit for bit (tests/test_quantized_pipeline.py holds the layers' bytes equal)."""

from __future__ import annotations

import json
import shutil
import struct
from pathlib import Path

import pytest
import torch

from ltx2_edge import cli
from ltx2_edge.checkpoint.header import read_header
from ltx2_edge.checkpoint.prequantized import SOURCE_KEY, prequantized_name, recorded_source, source_identity
from ltx2_edge.engine.settings import RunSettings
from ltx2_edge.engine.setup import EngineSetup
from ltx2_edge.errors import CheckpointError, RequestError
from ltx2_edge.plan.plan_text import format_plan, plan_to_json
from ltx2_edge.quant.policy import QuantPolicy
from ltx2_edge.quant.quantized_file import METADATA_KEY
from ltx2_edge.request import GenerationRequest

SMALL = {"width": 64, "height": 64, "num_frames": 9, "num_inference_steps": 1}
PRECISION = "int8"  # what --quantization auto runs on the CPU


@pytest.fixture(scope="module")
def originals(tiny_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny checkpoint and Gemma folder in a folder of their own, with their int8 copies written by `quantize`
    without --out (the session's tiny_dir must stay without copies: every other test reads it)."""
    root = tmp_path_factory.mktemp("prequantized")
    shutil.copy2(tiny_dir / "ltx2.safetensors", root / "ltx2.safetensors")
    shutil.copytree(tiny_dir / "gemma", root / "gemma")
    assert cli.main(["quantize", "--checkpoint-path", str(root / "ltx2.safetensors"), "--to", PRECISION]) == 0
    assert cli.main(["quantize", "--gemma-root", str(root / "gemma"), "--to", PRECISION]) == 0
    return root


def _setup(root: Path, **settings) -> EngineSetup:
    return EngineSetup.resolve(root / "ltx2.safetensors", root / "gemma", RunSettings(device="cpu", **settings))


def _with_metadata(src: Path, dst: Path, change) -> None:
    """``src`` copied to ``dst`` with its metadata changed by ``change(dict)`` (the tensor bytes untouched)."""
    raw = src.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    doc = json.loads(raw[8 : 8 + n])
    change(doc["__metadata__"])
    head = json.dumps(doc, separators=(",", ":")).encode()
    head += b" " * (-len(head) % 8)
    dst.write_bytes(struct.pack("<Q", len(head)) + head + raw[8 + n :])


def test_quantize_writes_where_runs_look_and_records_its_source(originals: Path, capsys) -> None:
    ckpt, gemma = originals / "ltx2.safetensors", originals / "gemma"
    assert prequantized_name(ckpt, "fp8") == originals / "ltx2.fp8.safetensors"
    assert prequantized_name(gemma, "int8") == originals / "gemma.int8"
    record = recorded_source(read_header(originals / "ltx2.int8.safetensors"))
    assert record == source_identity(ckpt) and record["loras"] == [] and record["size"] == ckpt.stat().st_size
    shard = next(gemma.glob("model*.safetensors"))
    assert recorded_source(read_header(originals / "gemma.int8" / shard.name)) == source_identity(shard)
    # A file with LoRAs baked in is another model: it never goes to the place runs read in the original's stead.
    capsys.readouterr()
    assert cli.main(["quantize", "--checkpoint-path", str(ckpt), "--to", "fp8", "--lora", str(ckpt)]) == 2
    assert capsys.readouterr().err.startswith("ltx2-edge: error: --out=None is not allowed: a path for a file with "
                                              "LoRAs baked in")  # fmt: skip
    assert not (originals / "ltx2.fp8.safetensors").exists()


def test_copies_are_read_and_the_plan_names_them(originals: Path) -> None:
    from ltx2_edge.pipeline import Generator

    setup = _setup(originals)
    assert setup.checkpoint.path == originals / "ltx2.int8.safetensors"
    assert setup.gemma.root == originals / "gemma.int8"
    notes = "\n".join(setup.notes)
    assert f"reads {originals / 'ltx2.int8.safetensors'}, the pre-quantized int8 copy of" in notes
    assert f"reads {originals / 'gemma.int8'}, the pre-quantized int8 copy of" in notes

    plan = Generator(originals / "ltx2.safetensors", originals / "gemma", setup.settings).prepare(
        GenerationRequest(prompt="rain", **SMALL)
    )
    reads = {s.name: s.reads for s in plan.memory.stages}
    copy = f"{originals / 'ltx2.int8.safetensors'} (pre-quantized int8 copy of {originals / 'ltx2.safetensors'})"
    assert reads["denoise"] == reads["decode"] == reads["embeddings"] == copy
    assert reads["text_encode"].startswith(f"{originals / 'gemma.int8'} (pre-quantized int8 copy of")
    assert "embeddings, denoise, decode: " in format_plan(plan.memory) and copy in format_plan(plan.memory)
    stages = {s["name"]: s for s in plan_to_json(plan.memory)["stages"]}
    header = read_header(originals / "ltx2.int8.safetensors")
    blocks = sum(t.nbytes for n, t in header.tensors.items() if n.startswith("model.diffusion_model.")
                 and not n.startswith("model.diffusion_model.video_embeddings_connector")
                 and not n.startswith("model.diffusion_model.audio_embeddings_connector"))  # fmt: skip
    assert stages["denoise"]["reads"] == copy and stages["denoise"]["file_read_bytes"] == blocks


def test_off_reads_the_originals_and_on_insists_on_copies(originals: Path, tiny_dir: Path) -> None:
    setup = _setup(originals, prequantized="off")
    assert setup.checkpoint.path == originals / "ltx2.safetensors" and setup.gemma.root == originals / "gemma"
    assert any("quantized to int8 at load (--prequantized off)" in n for n in setup.notes)
    assert _setup(originals, prequantized="on").checkpoint.path == originals / "ltx2.int8.safetensors"
    # tiny_dir has no copies: auto says where it looked and how to write one; on refuses.
    auto = EngineSetup.resolve(tiny_dir / "ltx2.safetensors", tiny_dir / "gemma", RunSettings(device="cpu"))
    assert auto.checkpoint.path == tiny_dir / "ltx2.safetensors"
    assert any(f"no pre-quantized copy at {tiny_dir / 'ltx2.int8.safetensors'}" in n for n in auto.notes)
    with pytest.raises(RequestError, match=r"^--prequantized='on' is not allowed: a pre-quantized copy of .*"
                       r"there is none; write it with `ltx2-edge quantize --checkpoint-path"):  # fmt: skip
        EngineSetup.resolve(tiny_dir / "ltx2.safetensors", tiny_dir / "gemma",
                            RunSettings(device="cpu", prequantized="on"))  # fmt: skip
    with pytest.raises(RequestError, match="^--prequantized='yes' is not allowed: one of auto, on, off$"):
        RunSettings(prequantized="yes")
    # A bf16 run reads the originals whatever lies beside them.
    bf16 = _setup(originals, quantization="bf16")
    assert bf16.checkpoint.path == originals / "ltx2.safetensors" and bf16.gemma.root == originals / "gemma"


def _refused(root: Path, match: str) -> None:
    with pytest.raises(CheckpointError, match=match) as info:
        _setup(root)
    assert "\n" not in str(info.value) and "--prequantized off" in str(info.value)


def test_a_copy_of_another_file_or_policy_is_refused(originals: Path, tmp_path: Path) -> None:
    shutil.copy2(originals / "ltx2.safetensors", tmp_path / "ltx2.safetensors")
    shutil.copytree(originals / "gemma", tmp_path / "gemma")
    shutil.copytree(originals / "gemma.int8", tmp_path / "gemma.int8")
    copy = tmp_path / "ltx2.int8.safetensors"

    # The original changed after the copy was made (same header, other weights: its last byte).
    shutil.copy2(originals / "ltx2.int8.safetensors", copy)
    with (tmp_path / "ltx2.safetensors").open("r+b") as f:
        f.seek(-1, 2)
        last = f.read(1)
        f.seek(-1, 2)
        f.write(bytes([last[0] ^ 0xFF]))
    _refused(tmp_path, r"ltx2\.int8\.safetensors is where the pre-quantized copy of .* is looked for, but it was "
             r"made from another file than .* \(its tensor data differs.*run `ltx2-edge quantize --checkpoint-path "
             r".* --to int8 --overwrite`")  # fmt: skip
    shutil.copy2(originals / "ltx2.safetensors", tmp_path / "ltx2.safetensors")
    assert _setup(tmp_path).checkpoint.path == copy  # the same bytes again: the copy is read

    _with_metadata(originals / "ltx2.int8.safetensors", copy, lambda m: m.pop(SOURCE_KEY))
    _refused(tmp_path, "records no source file")
    record = json.loads(read_header(originals / "ltx2.int8.safetensors").metadata[SOURCE_KEY])
    _with_metadata(
        originals / "ltx2.int8.safetensors",
        copy,
        lambda m: m.update({SOURCE_KEY: json.dumps({**record, "loras": ["style.safetensors x1"]})}),
    )
    _refused(tmp_path, r"has LoRAs baked in \(style\.safetensors x1\)")  # fmt: skip
    other = QuantPolicy.from_flags(PRECISION, ("attn1",)).to_json()  # as `quantize --keep-bf16 attn1` records it
    _with_metadata(originals / "ltx2.int8.safetensors", copy, lambda m: m.update({METADATA_KEY: other}))
    _refused(
        tmp_path,
        r"was quantized as \[int8, default keep-list \+ \['attn1'\]\] but this run asks for \[int8, "
        "default keep-list\\]: run `ltx2-edge quantize .*` with this run's --keep-bf16/--quantize-all flags",
    )
    # The flags it was made with: the checkpoint's copy fits, the Gemma copy (default flags) is refused in turn.
    with pytest.raises(CheckpointError, match=r"gemma\.int8/model-\S+ was quantized as \[int8, default keep-list\]"):
        _setup(tmp_path, keep_bf16=("attn1",))
    shutil.rmtree(tmp_path / "gemma.int8")
    assert _setup(tmp_path, keep_bf16=("attn1",)).checkpoint.path == copy
    copy.unlink()

    shutil.copytree(originals / "gemma.int8", tmp_path / "gemma.int8")
    (tmp_path / "gemma.int8" / "config.json").write_text("{}")
    _refused(tmp_path, r"gemma\.int8 is where the pre-quantized copy of .*gemma is looked for, but it has another "
             r"config\.json: remove it and run `ltx2-edge quantize --gemma-root")  # fmt: skip


def test_copies_make_the_latents_of_quantizing_at_load(originals: Path, tmp_path: Path) -> None:
    from ltx2_edge.pipeline import Generator

    request = GenerationRequest(prompt="rain over a harbour", **SMALL)
    results = {}
    for mode in ("auto", "off"):
        settings = RunSettings(device="cpu", prequantized=mode)
        gen = Generator(originals / "ltx2.safetensors", originals / "gemma", settings)
        results[mode] = gen.generate(request, tmp_path / f"{mode}.mp4")
    copy, fly = results["auto"], results["off"]
    assert torch.equal(copy.latents.video, fly.latents.video) and torch.equal(copy.latents.audio, fly.latents.audio)

    report = json.loads(copy.report_path.read_text())
    assert report["model"]["checkpoint"] == str(originals / "ltx2.int8.safetensors")
    assert report["model"]["gemma_root"] == str(originals / "gemma.int8")
    assert any("the pre-quantized int8 copy of" in note for note in report["notes"])
    planned = {s["name"]: s for s in report["plan"]["stages"]}
    rows = {s["stage"]: s["details"]["reads"] for s in report["stages"]}
    for stage, names in (("text_encode", ("text_encode", "embeddings")), ("denoise", ("denoise",)),
                         ("decode", ("decode",))):  # fmt: skip
        want = sum(planned[n]["file_read_bytes"] for n in names)
        got = rows[stage]
        # Every planned tensor is read, plus the headers (read more than once) and the tokenizer: not 2x more.
        assert got["predicted_bytes"] == want and want <= got["bytes"] < 2 * want + (4 << 20), (stage, got)
        assert 0 < got["seconds"] <= got["span_seconds"] and got["summary"].startswith("read ")
    total = report["reads"]
    assert total["bytes"] == sum(r["bytes"] for r in rows.values())
    assert total["predicted_bytes"] == report["plan"]["file_read_bytes"]
    # The copies hold the transformer blocks in 1 byte a weight: less to read than the BF16 original.
    off = json.loads(fly.report_path.read_text())
    assert off["model"]["checkpoint"] == str(originals / "ltx2.safetensors")
    off_denoise = {s["name"]: s for s in off["plan"]["stages"]}["denoise"]
    assert planned["denoise"]["file_read_bytes"] < off_denoise["file_read_bytes"]
    assert "file reads" in copy.report.table()


def test_calibrate_reads_the_file_runs_stream_from(originals: Path, tmp_path: Path) -> None:
    from ltx2_edge.calibrate.command import streamed_file

    cpu = torch.device("cpu")
    path, what = streamed_file(originals / "ltx2.safetensors", cpu)
    assert path == originals / "ltx2.int8.safetensors" and "the int8 copy runs on ltx2.safetensors stream" in what
    shutil.copy2(originals / "ltx2.safetensors", tmp_path / "ltx2.safetensors")
    assert streamed_file(tmp_path / "ltx2.safetensors", cpu) == (tmp_path / "ltx2.safetensors",
                                                                 str(tmp_path / "ltx2.safetensors"))  # fmt: skip
    # A copy runs would refuse: calibrate reads the checkpoint and says why.
    _with_metadata(originals / "ltx2.int8.safetensors", tmp_path / "ltx2.int8.safetensors", lambda m: m.pop(SOURCE_KEY))
    path, what = streamed_file(tmp_path / "ltx2.safetensors", cpu)
    assert path == tmp_path / "ltx2.safetensors" and "its int8 copy is refused" in what and "records no source" in what
