"""Shared fixtures: one tiny generated checkpoint per test session (seconds to make); one intra-op thread."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import ltx2_edge  # noqa: F401  (torchaudio placeholder before ltx_core)
from ltx2_edge.checkpoint.configs import ltx2_config

# One intra-op thread for the whole session. Our tensors are tiny, so a second thread buys nothing, and on a
# shared 2-core machine (CI, or beside other jobs) OpenMP workers wait on each other. Whole suite, 2 cores with
# a load average of 3.5-7 from other jobs: 1 thread 46 and 69 s, 2 threads 242 and 197 s (runs interleaved).
torch.set_num_threads(1)


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
