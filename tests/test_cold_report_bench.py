"""bench/cold_start.py on the CPU with the tiny model (in this process): writes the copies, measures every load cold
(where the page cache can be dropped) and warm, and holds whole runs to the issue's cold bound."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from conftest import load_bench
from ltx2_edge.checkpoint.header import read_header
from ltx2_edge.checkpoint.names import CONNECTORS, GEMMA_PREFIX, TRANSFORMER_PREFIX


def _weight_bytes(component: str, path: Path) -> int:
    if component == "gemma":
        return sum(t.nbytes for f in path.glob("model*.safetensors") for n, t in read_header(f).tensors.items()
                   if n.startswith(GEMMA_PREFIX))  # fmt: skip
    return sum(t.nbytes for n, t in read_header(path).tensors.items()
               if n.startswith(TRANSFORMER_PREFIX) and not n.startswith(CONNECTORS))  # fmt: skip


def test_cold_start_bench_on_cpu(tiny_dir: Path, tmp_path: Path, capsys) -> None:
    bench = load_bench("cold_start")
    shutil.copy2(tiny_dir / "ltx2.safetensors", tmp_path / "ltx2.safetensors")
    shutil.copytree(tiny_dir / "gemma", tmp_path / "gemma")
    out = tmp_path / "cold.json"
    small = "--width 64 --height 64 --num-frames 9 --num-inference-steps 1"
    argv = ["--checkpoint-path", str(tmp_path / "ltx2.safetensors"), "--gemma-root", str(tmp_path / "gemma"),
            "--device", "cpu", "--dtype", "float32", "--make-copies", "--fresh-process", "off", "--generate",
            "--generate-variants", "prequantized", "--generate-args", small, "--readahead-seconds", "0.05",
            "--out", str(out)]  # fmt: skip
    result = bench.main(argv)
    assert json.loads(out.read_text()) == result
    assert result["precision"] == "int8" and set(result["copies_made_seconds"]) == {"transformer", "gemma"}
    assert (tmp_path / "ltx2.int8.safetensors").is_file() and (tmp_path / "gemma.int8").is_dir()
    loads = {(r["component"], r["variant"], r["temperature"]): r for r in result["loads"]}
    assert len(loads) == 10  # cold, warm (and the transformer cold after a warm-up) for each file
    for variant in ("original", "prequantized"):
        warmed = loads[("transformer", variant, "cold+readahead")]
        assert not warmed["measured"] or warmed["readahead"]["bytes_asked"] > 0
    for (component, _variant, temperature), row in loads.items():
        if not row["measured"]:  # the page cache of this disk cannot be dropped: the row says why
            assert temperature == "cold" and row["cache"]
            continue
        # At least the load's own tensors were read (headers and tokenizer files come on top).
        assert row["bytes"] >= _weight_bytes(component, Path(row["file"])) and row["seconds"] > 0, row
        assert row["gbps"] == round(row["bytes"] / row["seconds"] / 1e9, 3)
    runs = {(r["variant"], r["temperature"]): r for r in result["generate"]}
    assert {variant for variant, _ in runs} == {"prequantized"}
    assert runs[("prequantized", "warm")]["checkpoint"] == str(tmp_path / "ltx2.int8.safetensors")
    assert runs[("prequantized", "warm")]["gemma_root"] == str(tmp_path / "gemma.int8")
    for bound in result["bounds"]:
        cold = runs[(bound["variant"], "cold")]
        want = cold["disk_bytes"] / (result["disk"]["rate_used_gbps"] * 1e9) + bound["warm_seconds"]
        assert bound["bound_seconds"] == round(want, 3) and bound["met"] == (bound["cold_seconds"] <= 1.15 * want)
    printed = capsys.readouterr().out
    assert "| transformer | ltx2.int8.safetensors | warm |" in printed
