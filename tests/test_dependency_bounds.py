"""Declared dependency bounds against what is installed: a bound the tested version violates fails CI.

pyproject.toml's ``[project] dependencies`` and the ``test`` extra are the one list setup.sh installs from
(scripts/deps.py). ltx-core and ltx-pipelines are installed with ``--no-deps`` (ltx-core's metadata wants
torchaudio, see ltx2_edge/_compat.py), so pip never checked their requirements: this file does.
"""

from __future__ import annotations

import subprocess
import sys
import tomllib
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name

from ltx2_edge._compat import TORCHAUDIO_STATUS

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"
_PROJECT = tomllib.loads(PYPROJECT.read_text())["project"]
DECLARED = [Requirement(r) for r in (*_PROJECT["dependencies"], *_PROJECT["optional-dependencies"]["test"])]
NO_DEPS_INSTALLS = ("ltx-core", "ltx-pipelines")  # setup.sh installs these with --no-deps


def _bounds(specifier: SpecifierSet) -> tuple[bool, bool]:
    """(has a lower bound, has an upper bound); an exact pin or ``~=`` is both, ``!=`` is neither."""
    ops = {spec.operator for spec in specifier}
    exact = bool(ops & {"==", "==="})
    return exact or bool(ops & {">=", ">", "~="}), exact or bool(ops & {"<", "<=", "~="})


def test_pyproject_declares_the_expected_lists():
    names = {canonicalize_name(r.name) for r in DECLARED}
    assert {"torch", "ltx-core", "transformers", "av", "pytest", "packaging"} <= names
    assert len(names) == len(DECLARED), "a dependency is declared twice"


@pytest.mark.parametrize(
    "spec, lower, upper",
    [
        (">=1,<2", True, True),
        (">=1", True, False),
        ("<2", False, True),
        ("==1.0.0", True, True),
        ("~=1.2", True, True),
        ("!=1.5", False, False),
        ("", False, False),
    ],
)
def test_bound_classifier(spec, lower, upper):
    # The check below is only as good as this classifier: it must flag one-sided and unbounded specifiers.
    assert _bounds(SpecifierSet(spec)) == (lower, upper)


@pytest.mark.parametrize("req", DECLARED, ids=str)
def test_every_dependency_has_lower_and_upper_bound(req):
    assert _bounds(req.specifier) == (True, True), f"{req} needs a lower and an upper bound (or an exact pin)"


@pytest.mark.parametrize("req", DECLARED, ids=str)
def test_installed_version_satisfies_declared_bounds(req):
    installed = metadata.version(req.name)  # PackageNotFoundError: setup.sh did not install a declared dependency
    # prereleases=True: the question is only whether the version lies inside the bounds.
    assert req.specifier.contains(installed, prereleases=True), (
        f"{req.name} {installed} is installed and tested, but pyproject.toml declares {req}"
    )


@pytest.mark.parametrize("dist", NO_DEPS_INSTALLS)
def test_no_deps_installs_have_their_requirements_declared_and_met(dist):
    declared = {canonicalize_name(r.name) for r in DECLARED}
    checked = 0
    for raw in metadata.requires(dist) or []:
        req = Requirement(raw)
        if req.marker is not None and not req.marker.evaluate({"extra": ""}):
            continue  # an optional extra (fp8-trtllm, xformers) we do not install
        if canonicalize_name(req.name) == "torchaudio":
            continue  # deliberately not installed: see test_torchaudio_is_absent_or_loads
        assert canonicalize_name(req.name) in declared, f"{dist} requires {req}; declare it in pyproject.toml"
        installed = metadata.version(req.name)
        assert req.specifier.contains(installed, prereleases=True), f"{dist} requires {req}, {installed} installed"
        checked += 1
    assert checked >= 3, f"{dist} lists only {checked} requirements; its metadata did not read back"


def test_torchaudio_is_absent_or_loads():
    try:
        version = metadata.version("torchaudio")
    except metadata.PackageNotFoundError:
        assert TORCHAUDIO_STATUS == "placeholder"
        import torchaudio

        with pytest.raises(ImportError, match="torchaudio is not installed"):
            torchaudio.load  # noqa: B018  (the placeholder raises on any attribute)
        return
    assert TORCHAUDIO_STATUS == "installed"
    # A fresh interpreter, so the import is torchaudio's own and not anything this session patched in.
    proc = subprocess.run(
        [sys.executable, "-c", "import torchaudio; print(torchaudio.__version__)"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, f"torchaudio {version} is installed but does not load: {proc.stderr[-2000:]}"
    assert proc.stdout.strip() == version
