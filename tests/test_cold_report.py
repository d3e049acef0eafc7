"""Cold starts against the disk: the plan's load bytes are file bytes (a BF16 file quantized at load reads twice what
a pre-quantized copy does), the read meter counts exactly what a stage read, and the report's line compares it with
the profile's cold and warm checkpoint read rates."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest

from ltx2_edge.checkpoint.header import DTYPE_BYTES, Header, TensorInfo
from ltx2_edge.plan.budget import Budget
from ltx2_edge.plan.file_reads import reads_lines, with_reads
from ltx2_edge.plan.plan_text import plan_to_json
from ltx2_edge.plan.plan_types import PlanRequest
from ltx2_edge.plan.planner import default_is_quantized, plan
from ltx2_edge.plan.profiles import H100
from ltx2_edge.read_meter import IO_FILE, ReadMeter, ReadSample
from ltx2_edge.report import reads_details

W1 = PlanRequest(512, 288, 97, 24.0, 20, precision="fp8")


def _prequantized(header: Header) -> Header:
    """``header`` as `quantize --to fp8` writes it: each 8-bit candidate in 1 byte a weight plus its F32 scales."""
    tensors, offset = {}, 0
    for name, info in header.tensors.items():
        parts = [(name, info.dtype, info.shape)]
        if len(info.shape) == 2 and default_is_quantized(name):
            parts = [(name, "F8_E4M3", info.shape), (name + "_scale", "F32", (info.shape[0],))]
        for n, dtype, shape in parts:
            end = offset + DTYPE_BYTES[dtype] * math.prod(shape)
            tensors[n] = TensorInfo(n, dtype, shape, offset, end)
            offset = end
    return Header(Path("ltx2.fp8.safetensors"), header.metadata, tensors)


def test_load_bytes_are_file_bytes_and_a_copy_halves_the_transformer(full_headers) -> None:
    header, gemma = full_headers
    fly = plan(header, gemma, W1, Budget(None, None, False), H100)
    copy = plan(_prequantized(header), gemma, W1, Budget(None, None, False), H100)
    bf16 = sum(t.nbytes for n, t in header.tensors.items()
               if n.startswith("model.diffusion_model.") and "embeddings_connector" not in n)  # fmt: skip
    den, den_copy = fly.stage("denoise"), copy.stage("denoise")
    assert den.file_read_bytes == bf16  # a BF16 original is read whole, then quantized on the device
    # On the device both hold the same bytes; read from the copy, about half (the blocks' 8-bit share).
    assert den.weights_resident_bytes == den_copy.weights_resident_bytes
    assert den_copy.file_read_bytes == den_copy.weights_resident_bytes < 0.6 * den.file_read_bytes
    assert den.cold_load_seconds == pytest.approx(bf16 / (H100.file_read_cold_gbps * 1e9))
    assert den.warm_load_seconds == pytest.approx(bf16 / (H100.file_read_warm_gbps * 1e9))
    assert fly.file_read_bytes == sum(s.file_read_bytes for s in fly.stages)

    named = with_reads(copy, "ltx2.fp8.safetensors (pre-quantized fp8)", "gemma (quantized to fp8 at load)")
    assert {s.name: s.reads for s in named.stages}["text_encode"] == "gemma (quantized to fp8 at load)"
    lines = reads_lines(named)
    assert lines[0].startswith("loads (each stage's weights read once; checkpoint read rates of profile h100: 10 GB/s")
    checkpoint_bytes = sum(s.file_read_bytes for s in named.stages[1:])
    assert lines[2].startswith(f"  embeddings, denoise, decode: {checkpoint_bytes / 1e9:.2f} GB")
    assert plan_to_json(named)["stages"][2]["reads"] == "ltx2.fp8.safetensors (pre-quantized fp8)"
    assert reads_lines(copy) == []  # a plan made without the files names none


@pytest.mark.skipif(not os.path.exists(IO_FILE), reason="no per-process I/O counters on this kernel")
def test_read_meter_counts_exactly_what_was_read(tmp_path: Path) -> None:
    data = tmp_path / "weights.bin"
    data.write_bytes(os.urandom(3 << 20))
    meter = ReadMeter(interval_s=0.002)
    fd = os.open(data, os.O_RDONLY)
    try:
        for offset in range(0, 3 << 20, 1 << 20):
            os.pread(fd, 1 << 20, offset)
    finally:
        os.close(fd)
    sample = meter.stop()
    assert sample is not None and sample.bytes == 3 << 20  # the meter's own reads of the counters not counted
    assert 0 <= sample.disk_bytes <= sample.bytes and 0 < sample.seconds <= sample.span_seconds
    idle = ReadMeter(interval_s=0.002).stop()
    assert idle is not None and idle.bytes == 0 and idle.seconds == 0 and idle.gbps is None


def test_report_line_says_whether_the_disk_bound_the_load() -> None:
    planned = {"profile": {"file_read_warm_gbps": 10.0, "file_read_cold_gbps": 0.8},
               "stages": [{"name": "denoise", "file_read_bytes": 20_000_000_000, "warm_load_seconds": 2.0,
                           "cold_load_seconds": 25.0},
                          {"name": "decode", "file_read_bytes": 1_000_000_000, "warm_load_seconds": 0.1,
                           "cold_load_seconds": 1.25}]}  # fmt: skip
    cold = reads_details(ReadSample(20_000_000_000, 20_000_000_000, 20.0, 25.0, 0.01), planned, "denoise")
    assert cold["gbps"] == 1.0 and cold["disk_bound_seconds"] == 25.0 and cold["vs_expected"] == 0.8
    assert cold["summary"] == ("read 20.00 GB in 20.00 s = 1.00 GB/s, 20.00 GB from the disk: disk-bound, 0.80x the "
                               "25.00 s the profile's rates give (0.8 GB/s cold, 10 warm); planned 20.00 GB: 2.00 s "
                               "warm / 25.0 s cold")  # fmt: skip
    warm = reads_details(ReadSample(20_000_000_000, 0, 4.0, 9.0, 0.01), planned, "denoise")
    assert warm["vs_expected"] == 2.0 and "page-cache reads, 2.00x the 2.00 s" in warm["summary"]
    run = reads_details(ReadSample(21_000_000_000, 0, 4.1, 9.0, 0.01), planned, None)
    assert run["predicted_bytes"] == 21_000_000_000 and run["predicted_cold_seconds"] == 26.25
    bare = reads_details(ReadSample(5_000_000, 0, 0.01, 1.0, 0.01), None, "decode")
    assert bare["summary"] == "read 5.0 MB in 0.01 s = 0.50 GB/s, 0.0 MB from the disk" and "vs_expected" not in bare
    json.dumps(cold)
