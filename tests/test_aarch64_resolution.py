"""The declared dependency set resolves for Jetson Thor: manylinux aarch64 (glibc 2.39), CPython 3.12, from PyPI.

What is resolved is what ``scripts/setup.sh`` installs: its torch pin and ``scripts/deps.py --test`` (pyproject's
dependencies and the test extra, minus what setup.sh installs itself) with their dependencies, and ltx-core /
ltx-pipelines without theirs (setup.sh's ``--no-deps``). ``pip install --dry-run --report`` resolves from the
registry without installing anything (this registry serves no separate metadata files, so pip reads each chosen
wheel; nothing is written outside a temporary folder). A pin no aarch64 wheel satisfies fails here, not on a
user's Jetson. The registry must be reachable: when it is not, the tests fail and say so (never skipped).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
# JetPack 7 is Ubuntu 24.04 (glibc 2.39). pip does not widen --platform by itself, so every manylinux tag a glibc
# 2.39 machine accepts is listed.
PLATFORMS = [f"manylinux_2_{minor}_aarch64" for minor in range(39, 16, -1)] + ["manylinux2014_aarch64"]
PYTHON = "3.12"


def _setup_sh_pins() -> tuple[str, list[str]]:
    """setup.sh's torch pin and its --no-deps installs, read from the script (so this test follows it)."""
    text = (ROOT / "scripts" / "setup.sh").read_text()
    torch_pins = set(re.findall(r'pip install "(torch==[^"]+)"', text))
    assert len(torch_pins) == 1, f"setup.sh pins torch once, found {sorted(torch_pins)}"
    no_deps = re.findall(r'"(ltx-(?:core|pipelines)==[^"]+)"', text)
    assert {canonicalize_name(Requirement(r).name) for r in no_deps} == {"ltx-core", "ltx-pipelines"}, no_deps
    return torch_pins.pop(), no_deps


def _deps_list() -> list[str]:
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "deps.py"), "--test"], capture_output=True,
                          text=True, check=True)  # fmt: skip
    return [line.strip() for line in done.stdout.splitlines() if line.strip()]


def _resolve(requirements: list[str], tmp: Path, no_deps: bool = False) -> list[dict]:
    """pip's dry-run report for ``requirements`` on Thor's platform: the ``install`` entries. Fails with pip's own
    last lines when it cannot resolve (an unsatisfiable pin, or an unreachable registry)."""
    report = tmp / "report.json"
    platforms = [arg for tag in PLATFORMS for arg in ("--platform", tag)]
    cmd = [sys.executable, "-m", "pip", "--disable-pip-version-check", "install", "--dry-run", "--quiet",
           "--ignore-installed", "--only-binary=:all:", *platforms, "--python-version", PYTHON, "--implementation",
           "cp", "--target", str(tmp / "target"), "--report", str(report), *(["--no-deps"] if no_deps else []),
           *requirements]  # fmt: skip
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)
    except subprocess.TimeoutExpired:
        pytest.fail("pip did not resolve within 300 s: is the registry reachable from this machine?")
    if done.returncode != 0:
        said = [line for line in done.stderr.splitlines() if not line.startswith("WARNING: Location")][-12:]
        raise AssertionError(f"pip cannot resolve for {PLATFORMS[0]} / CPython {PYTHON} (exit {done.returncode}):\n"
                             + "\n".join(said))  # fmt: skip
    return json.loads(report.read_text())["install"]


def _wheel(entry: dict) -> str:
    return entry["download_info"]["url"].rsplit("/", 1)[-1]


def test_the_declared_dependencies_resolve_for_jetson_thor(tmp_path):
    torch_pin, _ = _setup_sh_pins()
    declared = [torch_pin, *_deps_list()]
    installs = _resolve(declared, tmp_path)
    chosen = {canonicalize_name(e["metadata"]["name"]): e for e in installs}
    for raw in declared:
        req = Requirement(raw)
        entry = chosen.get(canonicalize_name(req.name))
        assert entry is not None, f"{raw} is declared but pip's resolution has no {req.name}"
        assert req.specifier.contains(entry["metadata"]["version"], prereleases=True), (raw, entry["metadata"])
    for entry in installs:  # every wheel runs there: aarch64 builds or pure Python, none for another machine
        name = _wheel(entry)
        assert name.endswith(".whl") and ("aarch64" in name or name.endswith("-any.whl")), name
    torch = chosen["torch"]
    assert _wheel(torch).startswith(f"torch-{Requirement(torch_pin).specifier}".replace("==", "")), _wheel(torch)
    assert "cp312-cp312-manylinux" in _wheel(torch) and _wheel(torch).endswith("_aarch64.whl")
    # PyPI's aarch64 torch is a CUDA 13 build (the one with sm_110 kernels; scripts/torch_arch.py checks them).
    needs = " ".join(torch["metadata"].get("requires_dist", []))
    assert re.search(r"cuda-toolkit\[[^\]]*\]==13\.|nvidia-[a-z-]+-cu13", needs), needs


def test_ltx_core_and_ltx_pipelines_exist_for_jetson_thor_as_setup_installs_them(tmp_path):
    _, no_deps = _setup_sh_pins()
    installs = _resolve(no_deps, tmp_path, no_deps=True)
    assert sorted(canonicalize_name(e["metadata"]["name"]) for e in installs) == ["ltx-core", "ltx-pipelines"]


def test_an_unsatisfiable_pin_fails_the_resolution(tmp_path):
    with pytest.raises(AssertionError) as err:
        _resolve(["tqdm==0.0.1", "psutil>=5.9,<8"], tmp_path)
    message = str(err.value)
    assert message.startswith("pip cannot resolve for manylinux_2_39_aarch64 / CPython 3.12")
    assert "tqdm==0.0.1" in message
