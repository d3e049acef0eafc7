"""A run reading the pre-quantized copies makes the latents the originals make quantized at load, bit for bit
(tests/test_quantized_pipeline.py holds the layers' bytes equal), and its report says which files it read and how
many bytes each stage read from them."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from ltx2_edge import cli
from ltx2_edge.engine.settings import RunSettings
from ltx2_edge.request import GenerationRequest

SMALL = {"width": 64, "height": 64, "num_frames": 9, "num_inference_steps": 2}


@pytest.fixture(scope="module")
def originals(tiny_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("prequantized-run")
    shutil.copy2(tiny_dir / "ltx2.safetensors", root / "ltx2.safetensors")
    shutil.copytree(tiny_dir / "gemma", root / "gemma")
    assert cli.main(["quantize", "--checkpoint-path", str(root / "ltx2.safetensors"), "--to", "int8"]) == 0
    assert cli.main(["quantize", "--gemma-root", str(root / "gemma"), "--to", "int8"]) == 0
    return root


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
