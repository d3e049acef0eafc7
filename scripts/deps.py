"""Print ltx2-edge's dependencies from pyproject.toml, minus those setup.sh installs itself.

torch is installed first (the CPU wheel on CPU machines) and ltx-core with --no-deps (its metadata requires
torchaudio, which pins a CUDA torch; see src/ltx2_edge/_compat.py). Keeping one list in pyproject.toml means the
bounds we declare are the bounds we install and test. ``--req NAME`` prints the one requirement named NAME among the
dependencies and the extras (setup.sh installs the test extra's uv first, with its bounds, to install the rest).
"""

from __future__ import annotations

import sys
import tomllib
from pathlib import Path

SELF_INSTALLED = {"torch", "ltx-core", "ltx-pipelines"}


def _name(req: str) -> str:
    for sep in "<>=!~ ;[":
        req = req.split(sep, 1)[0]
    return req.strip().lower()


def main() -> None:
    project = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())["project"]
    if "--req" in sys.argv:
        name = sys.argv[sys.argv.index("--req") + 1].lower()
        extras = [r for group in project["optional-dependencies"].values() for r in group]
        found = [r for r in (*project["dependencies"], *extras) if _name(r) == name]
        if not found:
            sys.exit(f"pyproject.toml declares no {name}")
        print(found[0])
        return
    reqs = list(project["dependencies"])
    if "--test" in sys.argv:
        reqs += project["optional-dependencies"]["test"]
    print("\n".join(r for r in reqs if _name(r) not in SELF_INSTALLED))


if __name__ == "__main__":
    main()
