"""Shared fixtures: one tiny generated checkpoint per test session (seconds to make); one intra-op thread; the heap
frozen at each module's start."""

from __future__ import annotations

import gc
import os
from collections.abc import Iterator
from pathlib import Path

# Inductor on the CPU (tests/test_accel.py, tests/test_fused_ff.py), set before torch is imported (Inductor reads
# both then). One compile thread: its default pool of compile workers (a torch import each, ~18 CPU-seconds for
# test_accel's compile) buys nothing on 2 cores that the pytest-xdist workers already keep busy. Scalar C++ kernels:
# the SIMD ones take a third longer to build (~17 s of that compile) and exercise Inductor's templates, not our
# wiring, which these tests check (one graph, no breaks, latents as eager's, the model restored); on CUDA, where
# compiling runs for real, the kernels are Triton's either way.
os.environ.setdefault("TORCHINDUCTOR_COMPILE_THREADS", "1")
os.environ.setdefault("TORCHINDUCTOR_VEC_ISA_OK", "0")

import pytest  # noqa: E402
import torch  # noqa: E402

import ltx2_edge  # noqa: F401  (torchaudio placeholder before ltx_core)
from ltx2_edge.checkpoint.configs import ltx2_config

# One intra-op thread for the whole session. Our tensors are tiny, so a second thread buys nothing, and on a
# shared 2-core machine (CI, or beside other jobs) OpenMP workers wait on each other. Whole suite, 2 cores with
# a load average of 3.5-7 from other jobs: 1 thread 46 and 69 s, 2 threads 242 and 197 s (runs interleaved).
torch.set_num_threads(1)


# The files that take longest (tens of seconds on CI's 2 cores), in that order, ahead of the rest: scripts/test.sh runs
# the files on two pytest-xdist workers in collection order (--no-loadscope-reorder), and a long file that started
# last would keep one worker busy while the other has nothing left. The order decides when a file starts, nothing else.
_LONGEST_FIRST = ("test_ray_fleet.py", "test_accel.py", "test_service_restart.py", "test_cfg_parallel.py",
                  "test_two_stage.py", "test_fused_ff.py", "test_checkpoint_generator.py", "test_hostile_cli.py",
                  "test_faults.py", "test_generate_e2e.py")  # fmt: skip


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The files of ``_LONGEST_FIRST`` first; every other file, and the tests within a file, keep their order."""
    rank = {name: i for i, name in enumerate(_LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))


@pytest.fixture(scope="module", autouse=True)
def _frozen_heap() -> Iterator[None]:
    # Every stage's end calls gc.collect() (ModelCache.collect), and a full collection walks every object the
    # process tracks: torch, transformers and the session's imports, ~400k objects, 0.2 s a call and 8 calls in one
    # tiny run (~40 % of it). Freezing what exists when a module starts (imports, session fixtures) takes those out
    # of the walk; whatever a test makes is collected as before, so the staged-release weakref checks still hold.
    gc.collect()
    gc.freeze()
    yield


@pytest.fixture(scope="session")
def tiny_config() -> dict:
    return ltx2_config("tiny")


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from ltx2_edge.synth.generator import make_checkpoint

    out = tmp_path_factory.mktemp("tiny-ckpt")
    make_checkpoint("tiny", out, seed=0)
    return out


@pytest.fixture(scope="session")
def tiny_transformer_fp32(tiny_dir: Path):
    from ltx2_edge.models.loaders import load_transformer

    return load_transformer(tiny_dir / "ltx2.safetensors", device=torch.device("cpu"), dtype=torch.float32)


@pytest.fixture(scope="session")
def full_headers():
    """Full-size headers (no weights) from the checkpoint layout, all BF16: ``(ltx Header, Gemma TensorInfos)``."""
    import json
    import math

    from ltx2_edge.checkpoint.configs import gemma_config
    from ltx2_edge.checkpoint.header import DTYPE_BYTES, Header, TensorInfo
    from ltx2_edge.checkpoint.layout import expected_tensors, gemma_expected_tensors

    def infos(named) -> dict:
        out, offset = {}, 0
        for name, shape in named:
            end = offset + math.prod(shape) * DTYPE_BYTES["BF16"]
            out[name] = TensorInfo(name, "BF16", shape, offset, end)
            offset = end
        return out

    cfg = ltx2_config("full")
    ltx = infos([(name, shape) for name, (shape, _) in expected_tensors(cfg).items()])
    gemma = infos(list(gemma_expected_tensors(gemma_config("full")).items()))
    return Header(Path("ltx-2-19b.safetensors"), {"config": json.dumps(cfg)}, ltx), gemma


def track_loaded_modules(monkeypatch: pytest.MonkeyPatch, names: tuple[str, ...]) -> list:
    """Wrap ``ltx2_edge.models.loaders.<name>`` for each name: every module they return is recorded as a weakref,
    so a test can check that a stage's weights are really gone after it (staged residency)."""
    import weakref

    from ltx2_edge.models import loaders

    refs: list[weakref.ref] = []
    for name in names:
        real = getattr(loaders, name)

        def tracking(*a, _real=real, **k):
            module = _real(*a, **k)
            refs.append(weakref.ref(module))
            return module

        monkeypatch.setattr(loaders, name, tracking)
    return refs


def load_bench(name: str):
    """The script ``bench/<name>.py`` imported as a module (bench/ is not a package: scripts run by path)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, Path(__file__).resolve().parents[1] / "bench" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
