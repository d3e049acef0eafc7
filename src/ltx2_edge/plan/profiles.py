"""Device profiles: the rates the planner divides FLOPs and bytes by, each saying where its numbers come from.

A profile is data, never a measurement: nothing here touches a GPU. ``source`` is one line for the plan;
``provenance`` (``plan/provenance.py``) says, rate by rate, what was measured, derived, published or assumed,
and on which device. The profiles built in here are the H100 (measured by ltx2-edge's benchmarks), Jetson Thor
(published figures) and a nominal CPU; profiles measured by ``ltx2-edge calibrate`` are JSON files, shipped in
``plan/device_profiles/`` or written to the user's cache (``calibrate.profile_file``), and ``calibrate.choice``
picks the one a run uses.
"""

from __future__ import annotations

from dataclasses import dataclass

from ltx2_edge.errors import RequestError
from ltx2_edge.plan.provenance import RATE_FIELDS, Provenance, RateSource
from ltx2_edge.plan.timings import Timings

GiB = 1024**3


@dataclass(frozen=True)
class DeviceProfile:
    """Rates of one device. TFLOP/s and GB/s are 1e12 and 1e9.

    ``attention_tflops`` is SDPA at LTX-2's head sizes; ``conv_tflops`` the video VAE's conv3d rate.
    ``h2d_*``: host->device copies (on unified memory: DRAM-to-DRAM). ``file_read_*``: reading the
    checkpoint, cold (from the disk) and warm (from the page cache). ``sdpa_materializes_scores``: the
    attention kernel keeps the S x S score matrix (math SDPA, the CPU fallback). ``runtime_overhead_bytes``:
    the CUDA context and library workspaces outside the allocator: device memory counted inside the budget
    (the device budget of a discrete GPU, the one pool of a Jetson); a discrete GPU's host budget counts the
    same again for the runtime's host side. ``provenance``: where each rate comes from and how a run chose this
    profile (``plan/provenance.py``). ``timings``: what the rates leave out of a run's time (per-block non-GEMM work,
    loads, the MP4 encoder, start-up; ``plan/timings.py``), as ``ltx2-edge calibrate`` measured it; empty sections
    were not measured and the planner says so.
    """

    name: str
    bf16_tflops: float
    fp8_rowwise_tflops: float
    int8_tops: float
    attention_tflops: float
    conv_tflops: float
    h2d_pinned_gbps: float
    h2d_pageable_gbps: float
    file_read_cold_gbps: float
    file_read_warm_gbps: float
    memory_bandwidth_gbps: float
    unified: bool
    sdpa_materializes_scores: bool
    runtime_overhead_bytes: int
    source: str
    provenance: Provenance = Provenance()
    timings: Timings = Timings()

    def linear_tflops(self, precision: str) -> float:
        """The rate of a Linear layer whose weights are in ``precision`` (bf16, fp8 or int8)."""
        return {"bf16": self.bf16_tflops, "fp8": self.fp8_rowwise_tflops, "int8": self.int8_tops}[precision]


# Measured on the lent H100 80GB (docs/benchmarks.md, "8-bit quantization: kernels" for the GEMMs): GEMM rates are
# the middle of the measured ranges (bf16 730-785, FP8 rowwise 1025-1150, torch._int_mm 760-850), copies 55 GB/s
# pinned and 8-18 pageable, cold disk 0.8 GB/s. Derived: attention 600 TFLOP/s from the compute floor of W1's 40
# forwards (2.9 s bf16 / 2.3 s FP8; docs/benchmarks.md, "W1 under memory budgets"), conv 200 TFLOP/s from W1's
# measured 0.1 s video decode of 18.2 TFLOP (docs/benchmarks.md, "decode within the budget"). Published: HBM3
# 3350 GB/s. Warm (page-cache) reads 9.7-10.5 GB/s with 4 reader threads into pinned staging (bench/load_speed.py,
# 2026-11-24; one thread 3.4). Runtime (CUDA context + library workspaces outside the allocator) 0.75 GiB: NVML's
# peak less the allocator's reserved peak of the same stage, 2026-11-24.
H100 = DeviceProfile(
    name="h100",
    bf16_tflops=757.0,
    fp8_rowwise_tflops=1087.0,
    int8_tops=805.0,
    attention_tflops=600.0,
    conv_tflops=200.0,
    h2d_pinned_gbps=55.0,
    h2d_pageable_gbps=13.0,
    file_read_cold_gbps=0.8,
    file_read_warm_gbps=10.0,
    memory_bandwidth_gbps=3350.0,
    unified=False,
    sdpa_materializes_scores=False,
    runtime_overhead_bytes=3 * GiB // 4,
    source="measured by ltx2-edge on the lent H100 80GB (attention/conv derived)",
    provenance=Provenance(
        device="NVIDIA H100 80GB HBM3",
        capability="9.0",
        date="2026-11-24",
        torch="2.11.0+cu130",
        driver="580.159.04",
        rates=(
            ("bf16_tflops", RateSource("measured", "torch.mm at W1 shapes: middle of 730-785 TFLOP/s")),
            ("fp8_rowwise_tflops", RateSource("measured", "torch._scaled_mm rowwise, W1 shapes: 1025-1150")),
            ("int8_tops", RateSource("measured", "torch._int_mm at W1 shapes: middle of 760-850 TOP/s")),
            ("attention_tflops", RateSource("derived", "from the compute floor of W1's 40 forwards (2.9 s bf16)")),
            ("conv_tflops", RateSource("derived", "from W1's measured 0.1 s video decode of 18.2 TFLOP")),
            ("h2d_pinned_gbps", RateSource("measured", "host->device copies from pinned memory, 55 GB/s")),
            ("h2d_pageable_gbps", RateSource("measured", "host->device copies from pageable memory, 8-18 GB/s")),
            ("file_read_cold_gbps", RateSource("measured", "the lent box's virtual disk, ~0.8 GB/s cold")),
            ("file_read_warm_gbps", RateSource("measured", "page cache, 4 threads into pinned staging: 9.7-10.5")),
            ("memory_bandwidth_gbps", RateSource("published", "HBM3, 3350 GB/s")),
            ("runtime_overhead_bytes", RateSource("measured", "NVML's peak less the allocator's reserved peak")),
        ),
    ),
)

# Jetson AGX Thor T5000, NVIDIA's published figures (nothing in docs/ is measured on a Thor yet): 273 GB/s LPDDR5X,
# dense 258 TFLOP/s
# BF16 and 517 FP8/INT8. Attention and conv keep the H100's ratio to its bf16 GEMM rate. Assumed, not
# measured: copies within DRAM at 100 GB/s, NVMe reads 3 GB/s cold (a PCIe Gen4 x4 drive) and 20 GB/s warm,
# CUDA context and runtime heap 1.5 GiB.
THOR_T5000 = DeviceProfile(
    name="thor-t5000",
    bf16_tflops=258.0,
    fp8_rowwise_tflops=517.0,
    int8_tops=517.0,
    attention_tflops=258.0 * 600.0 / 757.0,
    conv_tflops=258.0 * 200.0 / 757.0,
    h2d_pinned_gbps=100.0,
    h2d_pageable_gbps=50.0,
    file_read_cold_gbps=3.0,
    file_read_warm_gbps=20.0,
    memory_bandwidth_gbps=273.0,
    unified=True,
    sdpa_materializes_scores=False,
    runtime_overhead_bytes=3 * GiB // 2,
    source="published figures, not measured (NVMe and copy rates assumed)",
    provenance=Provenance(
        device="NVIDIA Jetson AGX Thor T5000",
        capability="11.0",
        rates=(
            ("bf16_tflops", RateSource("published", "dense BF16 tensor throughput, 258 TFLOP/s")),
            ("fp8_rowwise_tflops", RateSource("published", "dense FP8 tensor throughput, 517 TFLOP/s")),
            ("int8_tops", RateSource("published", "dense INT8 tensor throughput, 517 TOP/s")),
            ("attention_tflops", RateSource("assumed", "the H100's attention/bf16 ratio times Thor's bf16 rate")),
            ("conv_tflops", RateSource("assumed", "the H100's conv/bf16 ratio times Thor's bf16 rate")),
            ("h2d_pinned_gbps", RateSource("assumed", "copies within LPDDR5X, 100 GB/s")),
            ("h2d_pageable_gbps", RateSource("assumed", "copies within LPDDR5X from pageable memory, 50 GB/s")),
            ("file_read_cold_gbps", RateSource("assumed", "a PCIe Gen4 x4 NVMe drive, 3 GB/s")),
            ("file_read_warm_gbps", RateSource("assumed", "page-cache reads, 20 GB/s")),
            ("memory_bandwidth_gbps", RateSource("published", "LPDDR5X, 273 GB/s")),
            ("runtime_overhead_bytes", RateSource("assumed", "CUDA context and runtime heap, 1.5 GiB")),
        ),
    ),
)

# A nominal CPU, for tests and CPU runs of the tiny model: math SDPA, one memory pool.
CPU = DeviceProfile(
    name="cpu",
    bf16_tflops=1.0,
    fp8_rowwise_tflops=1.0,
    int8_tops=1.0,
    attention_tflops=0.5,
    conv_tflops=0.5,
    h2d_pinned_gbps=10.0,
    h2d_pageable_gbps=10.0,
    file_read_cold_gbps=1.0,
    file_read_warm_gbps=5.0,
    memory_bandwidth_gbps=50.0,
    unified=True,
    sdpa_materializes_scores=True,
    runtime_overhead_bytes=GiB // 4,
    source="nominal CPU figures, not measured",
    provenance=Provenance(rates=tuple((f, RateSource("nominal")) for f in RATE_FIELDS)),
)

PROFILES: dict[str, DeviceProfile] = {p.name: p for p in (H100, THOR_T5000, CPU)}


def profile_for(name: str) -> DeviceProfile:
    """The profile called ``name``: built in (``h100``, ``thor-t5000``, ``cpu``) or shipped as JSON in
    ``plan/device_profiles/`` (a shipped file of the same name wins over the built-in one)."""
    from ltx2_edge.calibrate.profile_file import shipped_profiles  # JSON files, read when asked for

    known = {**PROFILES, **{p.name: p for p in shipped_profiles()}}
    try:
        return known[name]
    except KeyError:
        raise RequestError("profile", name, "one of " + ", ".join(known)) from None
