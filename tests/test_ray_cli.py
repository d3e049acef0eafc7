"""``ltx2-edge serve --ray``'s flags, checked before anything starts: without Ray installed one line says how to
get it; --replicas/--autoscale need --ray and sane values; --device cuda:N is refused (Ray hands out GPUs);
``serve run``'s builder reads its args as serve's own flags; and plain ``serve`` never imports Ray."""

from __future__ import annotations

import ast
import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

import ltx2_edge
from ltx2_edge.cli import main


@pytest.fixture
def model_flags(tmp_path):
    (tmp_path / "gemma").mkdir()
    (tmp_path / "ltx2.safetensors").write_bytes(b"")
    return ["--checkpoint-path", str(tmp_path / "ltx2.safetensors"), "--gemma-root", str(tmp_path / "gemma")]


def _error_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("ltx2-edge: error: "), err
    return err


def test_ray_missing_says_how_to_install_it(monkeypatch, capsys, model_flags):
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name.split(".")[0] == "ray" else real(name, *a)
    )
    assert main(["serve", "--ray", "--replicas", "2", *model_flags]) == 2
    assert "pip install 'ltx2-edge[ray]'" in _error_line(capsys)


@pytest.mark.parametrize(
    "flags, named",
    [
        (["--replicas", "2"], "--replicas"),
        (["--autoscale", "1..3"], "--autoscale"),
        (["--ray", "--replicas", "0"], "--replicas"),
        (["--ray", "--autoscale", "3..1"], "--autoscale"),
        (["--ray", "--replicas", "2", "--autoscale", "1..2"], "--autoscale"),
        (["--ray", "--device", "cuda:1"], "--device"),
    ],
)
def test_fleet_flags_refused_in_one_line(capsys, model_flags, flags, named):
    assert main(["serve", *flags, *model_flags]) == 2
    assert _error_line(capsys).removeprefix("ltx2-edge: error: ").startswith(named)


def test_serve_run_builder_reads_serve_flags(monkeypatch, model_flags):
    from ltx2_edge.service.ray import app

    seen = {}
    monkeypatch.setattr(app, "build_application", lambda *a, **k: seen.update(args=a, kwargs=k) or "APP")
    flags = dict(zip([f.removeprefix("--") for f in model_flags[::2]], model_flags[1::2], strict=True))
    assert app.build({**flags, "budget": "2GiB", "autoscale": "1..3", "queue-limit": "4"}) == "APP"
    engine, service, scale = seen["args"]
    assert engine.settings.budget == 2 * 2**30 and service.queue_limit == 4 and scale.autoscale == (1, 3)
    assert seen["kwargs"] == {"token": None, "allowed_hosts": ("localhost", "127.0.0.1", "::1")}


def test_the_documented_serve_config_builds(monkeypatch, tmp_path):
    """docs/ray.md's YAML, its model paths pointed at files that exist, goes through the builder as Serve would."""
    import re

    import yaml

    from ltx2_edge.service.ray import app

    text = (Path(__file__).resolve().parents[1] / "docs" / "ray.md").read_text()
    config = yaml.safe_load(re.search(r"```yaml\n(.*?)```", text, re.S).group(1))
    (application,) = config["applications"]
    assert application["import_path"] == "ltx2_edge.service.ray.app:build"
    args = dict(application["args"])
    (tmp_path / "gemma").mkdir()
    (tmp_path / "ltx2.safetensors").write_bytes(b"")
    args.update({"checkpoint-path": str(tmp_path / "ltx2.safetensors"), "gemma-root": str(tmp_path / "gemma"),
                 "data-dir": str(tmp_path / "data")})  # fmt: skip
    seen = {}
    monkeypatch.setattr(app, "build_application", lambda *a, **k: seen.update(args=a, kwargs=k) or "APP")
    assert app.build(args) == "APP"
    engine, service, scale = seen["args"]
    assert engine.settings.budget == 32 * 2**30 and service.queue_limit == 32 and scale.autoscale == (1, 4)
    # host 0.0.0.0: the token given is required, and any Host header may reach it.
    assert seen["kwargs"] == {"token": args["token"], "allowed_hosts": None}


def test_plain_serve_never_imports_ray():
    # The CLI's serve command and the fleet's Ray-free modules, in a fresh interpreter: no ray loaded.
    code = ("import sys, ltx2_edge.cli.serve, ltx2_edge.service.ray, ltx2_edge.service.ray.routing, "
            "ltx2_edge.service.ray.scale; from ltx2_edge.cli.parser import build_parser; "
            "assert '--autoscale' in build_parser()._subparsers._group_actions[0].choices['serve'].format_help(); "
            "print('ray' in sys.modules)")  # fmt: skip
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip() == "False", out.stderr
    # Everywhere else, statically: only these modules of service/ray import Ray, anywhere in them.
    src = Path(ltx2_edge.__file__).parent
    importers = set()
    for path in src.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module or ""]
            if any(n == "ray" or n.startswith("ray.") for n in names):
                importers.add(path.relative_to(src).as_posix())
    assert importers == {f"service/ray/{m}.py" for m in ("app", "launch", "replica", "router")}
