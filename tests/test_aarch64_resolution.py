"""The declared dependency set resolves for Jetson Thor: manylinux aarch64 (glibc 2.39), CPython 3.12, from PyPI.

What is resolved is what ``scripts/setup.sh`` installs: its torch pin and ``scripts/deps.py --test`` (pyproject's
dependencies and the test extra, minus what setup.sh installs itself) with their dependencies, and ltx-core /
ltx-pipelines without theirs (setup.sh's ``--no-deps``). ``uv pip compile`` (the test extra's uv) resolves from the
registry on metadata alone: this registry serves no separate metadata files, and where pip's dry run downloads
every chosen wheel (torch and its CUDA libraries: gigabytes, minutes), uv reads each wheel's METADATA with HTTP range
requests. Its cache is the test's temporary folder, so every run asks the live index. A pin no aarch64 wheel
satisfies fails here, not on a user's Jetson. The registry must be reachable: when it is not, the tests fail and say
so (never skipped).
"""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
# JetPack 7 is Ubuntu 24.04 (glibc 2.39): uv's target accepts every manylinux tag up to 2.39, manylinux2014 included.
PLATFORM = "aarch64-manylinux_2_39"
PYTHON = "3.12"


def _setup_sh_pins() -> tuple[str, list[str]]:
    """setup.sh's torch pin and its --no-deps installs, read from the script (so this test follows it)."""
    text = (ROOT / "scripts" / "setup.sh").read_text()
    torch_pins = set(re.findall(r'pip install [^"\n]*"(torch==[^"]+)"', text))
    assert len(torch_pins) == 1, f"setup.sh pins torch once, found {sorted(torch_pins)}"
    no_deps = re.findall(r'"(ltx-(?:core|pipelines)==[^"]+)"', text)
    assert {canonicalize_name(Requirement(r).name) for r in no_deps} == {"ltx-core", "ltx-pipelines"}, no_deps
    return torch_pins.pop(), no_deps


def _deps_list() -> list[str]:
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "deps.py"), "--test"], capture_output=True,
                          text=True, check=True)  # fmt: skip
    return [line.strip() for line in done.stdout.splitlines() if line.strip()]


def _resolve(requirements: list[str], tmp: Path, no_deps: bool = False) -> dict[str, dict]:
    """uv's resolution of ``requirements`` on Thor's platform, as its pylock.toml's packages by canonical name. Fails
    with uv's own last lines when it cannot resolve (an unsatisfiable pin, or an unreachable registry)."""
    from uv import find_uv_bin  # no uv: ImportError, a failure (the test extra installs it)

    (tmp / "requirements.in").write_text("\n".join(requirements) + "\n")
    lock = tmp / "pylock.toml"
    # The target is set by --python-platform/--python-version; this interpreter only stands in for one (uv would
    # otherwise look for, and try to download, a CPython 3.12).
    cmd = [find_uv_bin(), "pip", "compile", "--quiet", "--no-config", "--cache-dir", str(tmp / "uv-cache"),
           "--python", sys.executable, "--no-python-downloads", "--python-platform", PLATFORM, "--python-version",
           PYTHON, "--only-binary", ":all:",
           *(["--no-deps"] if no_deps else []), "--format", "pylock.toml", "-o", str(lock),
           str(tmp / "requirements.in")]  # fmt: skip
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)
    except subprocess.TimeoutExpired:
        pytest.fail("uv did not resolve within 300 s: is the registry reachable from this machine?")
    if done.returncode != 0:
        said = [line for line in done.stderr.splitlines() if line.strip()][-12:]
        raise AssertionError(f"uv cannot resolve for {PLATFORM} / CPython {PYTHON} (exit {done.returncode}):\n"
                             + "\n".join(said))  # fmt: skip
    packages = tomllib.loads(lock.read_text())["packages"]
    return {canonicalize_name(p["name"]): p for p in packages}


def _wheels(package: dict) -> list[str]:
    """The file names of the wheels the lock lists for ``package``: those of its version the platform can install."""
    names = [w["url"].rsplit("/", 1)[-1] for w in package.get("wheels", [])]
    assert names, f"{package['name']} {package['version']}: no wheel"
    return names


def test_the_declared_dependencies_resolve_for_jetson_thor(tmp_path):
    torch_pin, _ = _setup_sh_pins()
    declared = [torch_pin, *_deps_list()]
    chosen = _resolve(declared, tmp_path)
    for raw in declared:
        req = Requirement(raw)
        package = chosen.get(canonicalize_name(req.name))
        assert package is not None, f"{raw} is declared but uv's resolution has no {req.name}"
        assert req.specifier.contains(package["version"], prereleases=True), (raw, package["version"])
    for package in chosen.values():  # every wheel runs there: aarch64 builds or pure Python, none for another machine
        for name in _wheels(package):
            assert name.endswith(".whl") and ("aarch64" in name or name.endswith("-any.whl")), name
    torch = _wheels(chosen["torch"])
    assert all(n.startswith(f"torch-{Requirement(torch_pin).specifier}".replace("==", "")) for n in torch), torch
    assert any("cp312-cp312-manylinux" in n and n.endswith("_aarch64.whl") for n in torch), torch
    # PyPI's aarch64 torch is a CUDA 13 build (the one with sm_110 kernels; scripts/torch_arch.py checks them): its
    # requirements bring CUDA 13's libraries, which nothing else declared here asks for.
    cuda = {name: p["version"] for name, p in chosen.items() if name == "cuda-toolkit" or name.startswith("nvidia-")}
    assert cuda.get("cuda-toolkit", "").startswith("13.") or any(n.endswith("-cu13") for n in cuda), cuda


def test_ltx_core_and_ltx_pipelines_exist_for_jetson_thor_as_setup_installs_them(tmp_path):
    _, no_deps = _setup_sh_pins()
    chosen = _resolve(no_deps, tmp_path, no_deps=True)
    assert sorted(chosen) == ["ltx-core", "ltx-pipelines"]
    assert all(n.endswith(".whl") for p in chosen.values() for n in _wheels(p))


def test_an_unsatisfiable_pin_fails_the_resolution(tmp_path):
    with pytest.raises(AssertionError) as err:
        _resolve(["tqdm==0.0.1", "psutil>=5.9,<8"], tmp_path)
    message = str(err.value)
    assert message.startswith("uv cannot resolve for aarch64-manylinux_2_39 / CPython 3.12")
    assert "tqdm==0.0.1" in message
