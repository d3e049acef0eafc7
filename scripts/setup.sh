#!/usr/bin/env bash
# Sets up .venv for ltx2-edge on a fresh machine (Python >= 3.11). `--test` adds the test tools and the
# official ltx-pipelines (the test oracle). Safe to re-run: it reuses .venv and installs only what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-$(command -v python3.11 || command -v python3)}
"$PY" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "ltx2-edge needs Python >= 3.11")'
[ -x .venv/bin/python ] || "$PY" -m venv .venv
pip() { .venv/bin/python -m pip --disable-pip-version-check -q "$@"; }
# The CPU build of torch 2.13 on machines without a GPU (the local wheel makes this fast); a machine that already
# has a CUDA torch in .venv keeps it.
# Jetson Thor (aarch64 with an integrated GPU: JetPack 7.x, CUDA 13, Python 3.12): the same pin resolves to PyPI's
# aarch64 wheel, a CUDA 13 build with sm_110 kernels (cu128/cu129 builds have none: "no kernel image"); a torch
# already in .venv (a JetPack container's, through --system-site-packages) is kept. scripts/torch_arch.py then
# checks that torch carries sm_110 and that Triton can compile for the GPU, and says what to do when not.
jetson=""
if [ "$(uname -m)" = aarch64 ] && "$PY" scripts/torch_arch.py --is-jetson; then
  jetson=1
  .venv/bin/python -c 'import torch' 2>/dev/null || pip install "torch==2.13.0"
  .venv/bin/python scripts/torch_arch.py --require sm_110 --triton
else
  if ! .venv/bin/python -c 'import torch' 2>/dev/null; then
    # Its bytecode compiled on every core instead of pip's one file at a time (a few of torch's files are not
    # Python 3 and fail to compile, as they do under pip: not an error).
    pip install --no-compile "torch==2.13.0"
    site=$(.venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
    .venv/bin/python -m compileall -q -j 0 "$site/torch" >/dev/null || true
  fi
fi
extra=""
no_deps=("ltx-core==1.0.0")
if [ "${1:-}" = "--test" ]; then
  extra="--test"
  no_deps+=("ltx-pipelines==1.0.0")
fi
.venv/bin/python scripts/deps.py $extra > .venv/requirements.txt
if [ -n "$extra" ]; then
  # The tests run the Ray Serve fleet too (tests/test_ray_*.py): the ray extra resolves with the rest, against the
  # torch already installed (ray[serve] requires no torch, so the CPU pin above stays what runs).
  .venv/bin/python -c 'import tomllib; print("\n".join(tomllib.load(open("pyproject.toml", "rb"))["project"]["optional-dependencies"]["ray"]))' >> .venv/requirements.txt
fi
# The rest goes in with uv (the test extra's, installed by pip first): the same resolution as pip's, downloaded in
# parallel, in seconds instead of minutes. uv keeps the torch installed above (the requirements name none; what needs
# torch is satisfied by it), and it does not read pip's configuration. On a Jetson pip installs it all: uv ignores
# a venv's system site packages, where a JetPack container's torch lives.
if [ -n "$jetson" ]; then
  install() { pip install "$@"; }
else
  pip install "$(.venv/bin/python scripts/deps.py --req uv)"
  # --compile-bytecode, as pip does: where PYTHONDONTWRITEBYTECODE is set (CI machines) nothing else writes it, and
  # every process (each test worker, server, rank) would compile its imports from source again.
  install() {
    .venv/bin/uv pip install --quiet --python .venv/bin/python --no-python-downloads --link-mode copy \
      --compile-bytecode "$@"
  }
fi
install -r .venv/requirements.txt
# ltx-core (and ltx-pipelines) without their declared dependencies: those are in our pyproject, all but torchaudio
# (see _compat.py). Installed after the rest because pip checks conflicts on every install that resolves
# dependencies and would print a false ERROR about torchaudio; tests/test_dependency_bounds.py checks these
# packages' requirements instead.
install --no-deps "${no_deps[@]}"
install --no-deps -e .
