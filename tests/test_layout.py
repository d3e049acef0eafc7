"""The package layout holds (docs/architecture.md): no import circle, a torch-free planner and CLI parser.

The import graph is read from the source with ``ast`` (top-level imports only: imports inside functions and under
``if TYPE_CHECKING`` are how a module defers a heavy dependency, and they never run at import time).
"""

from __future__ import annotations

import ast
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = SRC / "ltx2_edge"


def _modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


MODULES = _modules()


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _top_level_imports(name: str) -> set[str]:
    """Every module ``name`` imports when it is imported (absolute dotted names, ours and others')."""
    path = MODULES[name]
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()

    def visit(body: list[ast.stmt]) -> None:
        for node in body:
            if isinstance(node, ast.Import):
                found.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                    module = ".".join(base + ([node.module] if node.module else []))
                else:
                    module = node.module or ""
                found.add(module)
                found.update(f"{module}.{a.name}" for a in node.names if f"{module}.{a.name}" in MODULES)
            elif isinstance(node, ast.If):
                visit(node.orelse if _is_type_checking(node.test) else node.body + node.orelse)
            elif isinstance(node, ast.Try):
                visit(node.body + node.orelse + node.finalbody + [s for h in node.handlers for s in h.body])

    visit(ast.parse(path.read_text()).body)
    return found


def _ours(imported: str) -> str | None:
    """The ltx2_edge module an import names (``ltx2_edge.plan.budget.GiB`` -> ``ltx2_edge.plan.budget``)."""
    parts = imported.split(".")
    for k in range(len(parts), 0, -1):
        head = ".".join(parts[:k])
        if head in MODULES:
            return head
    return None


def import_graph() -> dict[str, set[str]]:
    """Module -> the ltx2_edge modules it imports at import time (a package's ``__init__`` counts as imported)."""
    graph: dict[str, set[str]] = {}
    for name in MODULES:
        edges = set()
        for imported in _top_level_imports(name):
            target = _ours(imported)
            if target is None:
                continue
            parts = target.split(".")
            edges.update(".".join(parts[:k]) for k in range(1, len(parts) + 1))  # importing a.b.c runs a, a.b
        graph[name] = {t for t in edges if t != name and not name.startswith(t + ".")}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle as ``[a, b, ..., a]``, or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return path[path.index(nxt) :] + [nxt]
            if nxt not in state and (cycle := visit(nxt)) is not None:
                return cycle
        state[node] = 2
        path.pop()
        return None

    for start in sorted(graph):
        if start not in state and (cycle := visit(start)) is not None:
            return cycle
    return None


def test_no_import_circle_among_ltx2_edge_modules():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import circle: " + " -> ".join(cycle or [])


def test_the_cycle_finder_finds_a_circle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def _run_fresh(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False)


def test_the_planner_package_imports_no_torch():
    import ltx2_edge.plan

    names = ["ltx2_edge.plan"] + [f"ltx2_edge.plan.{m.name}" for m in pkgutil.iter_modules(ltx2_edge.plan.__path__)]
    assert len(names) >= 10  # planner, plan_types, stage_fit, tile_plan, activations, flops, profiles, budget, ...
    code = (
        "import importlib, sys\n"
        f"for name in {names!r}:\n"
        "    importlib.import_module(name)\n"
        "    assert 'torch' not in sys.modules, f'importing {name} imported torch'\n"
        "    assert 'ltx_core' not in sys.modules, f'importing {name} imported ltx_core'\n"
        "print('ok')\n"
    )
    done = _run_fresh(code)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr


def test_building_the_cli_parser_imports_no_torch():
    code = (
        "import sys\n"
        "from ltx2_edge.cli import build_parser\n"
        "build_parser()\n"
        "assert 'torch' not in sys.modules, sorted(m for m in sys.modules if m.startswith('ltx2_edge'))\n"
        "print('ok')\n"
    )
    done = _run_fresh(code)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr


@pytest.mark.parametrize("argv", [["--help"], ["generate", "--help"]])
def test_help_imports_no_torch(argv):
    code = (
        "import sys\n"
        "from ltx2_edge.cli import main\n"
        "try:\n"
        f"    main({argv!r})\n"
        "except SystemExit as exc:\n"
        "    assert exc.code == 0, exc.code\n"
        "assert 'torch' not in sys.modules\n"
        "print('ok', file=sys.stderr)\n"
    )
    done = _run_fresh(code)
    assert done.returncode == 0 and done.stderr.strip() == "ok", done.stderr
    assert "usage: ltx2-edge" in done.stdout


# The import rules of docs/architecture.md: package -> the ltx2_edge packages/modules it may import at top level.
# A name is allowed when it equals an entry or lies under it (``checkpoint`` allows ``checkpoint.header``).
ALLOWED = {
    "plan": ("plan", "errors", "checkpoint.header", "checkpoint.names", "checkpoint.configs", "quant.policy"),
    "streaming": ("streaming", "checkpoint", "errors"),
    "checkpoint": ("checkpoint", "errors", "inputs"),
    "synth": ("synth", "checkpoint", "models", "errors", "atomic"),
    "mp4": ("mp4", "errors", "atomic"),
    "cli": (
        "cli",
        "errors",
        "inputs",
        "checkpoint.names",
        "synth.parts",
        "memory.allocator",
        "atomic",
        "mp4.video_encoders",
    ),
}
# Layer-0 modules: nothing third-party that is heavy (torch, ltx-core, numpy, av, transformers, safetensors).
TORCH_FREE = (
    "errors",
    "atomic",
    "inputs",
    "progress",
    "checkpoint.names",
    "checkpoint.header",
    "checkpoint.configs",
    "quant.policy",
    "synth.parts",
    "memory.allocator",
)
HEAVY = ("torch", "ltx_core", "numpy", "av", "transformers", "safetensors", "triton", "PIL")
# The engine and the front ends: nothing below them imports these.
TOP = ("engine", "pipeline", "run_types", "stage_runs", "measured_stages", "decode_runs", "cli", "service", "phased")
BELOW_TOP = ("plan", "streaming", "checkpoint", "synth", "mp4", "quant", "models", "stages", "accel", "memory")


def _rel(module: str) -> str:
    return module.removeprefix("ltx2_edge.").removeprefix("ltx2_edge")


def _under(name: str, entries: tuple[str, ...]) -> bool:
    return any(name == e or name.startswith(e + ".") for e in entries)


def _ours_imported(module: str) -> set[str]:
    return {_rel(t) for i in _top_level_imports(module) if (t := _ours(i)) is not None and t != "ltx2_edge"}


def _in_package(package: str) -> list[str]:
    return sorted(m for m in MODULES if _under(_rel(m), (package,)))


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_package_imports_only_what_the_architecture_allows(package):
    assert _in_package(package), f"no modules under ltx2_edge.{package}"
    bad = {m: sorted(d for d in _ours_imported(m) if not _under(d, ALLOWED[package])) for m in _in_package(package)}
    bad = {m: d for m, d in bad.items() if d}
    assert not bad, f"ltx2_edge.{package} may import only {ALLOWED[package]}; found {bad}"


def test_the_planner_imports_no_third_party_package():
    third = {
        m: sorted(
            i for i in _top_level_imports(m) if i.split(".")[0] not in sys.stdlib_module_names and _ours(i) is None
        )
        for m in _in_package("plan")
    }
    third = {m: i for m, i in third.items() if i}
    assert not third, f"plan/ must run without third-party packages: {third}"


def test_layer_zero_modules_import_nothing_heavy():
    heavy = {m: sorted(i for i in _top_level_imports(f"ltx2_edge.{m}") if _under(i, HEAVY)) for m in TORCH_FREE}
    heavy = {m: i for m, i in heavy.items() if i}
    assert not heavy, f"layer-0 modules must stay torch-free: {heavy}"
    graph = import_graph()
    for m in TORCH_FREE:  # and nothing they import does either
        seen, todo = set(), [f"ltx2_edge.{m}"]
        while todo:
            cur = todo.pop()
            if cur in seen:
                continue
            seen.add(cur)
            found = sorted(i for i in _top_level_imports(cur) if _under(i, HEAVY))
            assert not found, f"ltx2_edge.{m} imports {cur}, which imports {found}"
            todo.extend(graph[cur])


def test_nothing_below_the_engine_imports_the_engine_or_a_front_end():
    bad = {
        m: sorted(d for d in _ours_imported(m) if _under(d, TOP)) for package in BELOW_TOP for m in _in_package(package)
    }
    bad = {m: d for m, d in bad.items() if d}
    assert not bad, f"layers 0-2 must not import the engine or the CLI/service: {bad}"


def test_quant_imports_models_only_in_the_quantize_command():
    bad = {
        m: sorted(d for d in _ours_imported(m) if _under(d, ("models",)))
        for m in _in_package("quant")
        if m != "ltx2_edge.quant.convert"
    }
    bad = {m: d for m, d in bad.items() if d}
    assert not bad, f"quant/ (outside convert.py) must not import models/: {bad}"


def test_the_rules_catch_a_violation():
    # The checks above see through relative and "from package import module" imports.
    assert _under("checkpoint.header", ALLOWED["plan"]) and not _under("checkpoint.layout", ALLOWED["plan"])
    assert not _under("streaming.sources", ALLOWED["checkpoint"])
    assert "plan.budget" in _ours_imported("ltx2_edge.plan.stage_fit")
