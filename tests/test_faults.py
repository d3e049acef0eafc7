"""Faults a user's machine throws at a run: disk full, SIGTERM, SIGKILL then a rerun, an immutable target.

Each asserts that nothing is lost: one ``ltx2-edge: error:`` line (or a signal's exit status), no traceback, no
partial file left beside the output and an existing file unchanged. Signals need a real process: a child runs
``cli.main`` with its final rename held back (so the signal lands while the temporary exists); the rest runs in
this process. Disk full needs a small tmpfs (root); immutable needs ``chattr`` (root, ext4).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from ltx2_edge import cli
from ltx2_edge.atomic import is_temp_path
from ltx2_edge.errors import EXIT_OUTPUT, EXIT_TERMINATED

SMALL = ["--width", "64", "--height", "64", "--num-frames", "9", "--num-inference-steps", "1", "--quiet"]


def _args(tiny_dir: Path, out: Path, *extra: str) -> list[str]:
    model = ["--checkpoint-path", str(tiny_dir / "ltx2.safetensors"), "--gemma-root", str(tiny_dir / "gemma")]
    return ["generate", *model, "--prompt", "rain on a tin roof", "--output-path", str(out), *SMALL, *extra]


def _one_error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert "Traceback" not in err and len([x for x in lines if x.startswith("ltx2-edge: error:")]) == 1, err
    return next(x for x in lines if x.startswith("ltx2-edge: error:"))


@contextlib.contextmanager
def _tmpfs(where: Path, size: str):
    where.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {done.stderr.decode().strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", str(where)], check=True)


def test_disk_full_is_one_line_and_leaves_nothing(tiny_dir, tmp_path, capsys):
    with _tmpfs(tmp_path / "small", "16k") as small:
        code = cli.main(_args(tiny_dir, small / "clip.mp4"))
        err = capsys.readouterr().err
        left = sorted(p.name for p in small.iterdir())
    line = _one_error_line(err)
    assert code == EXIT_OUTPUT and "no space left" in line and str(small / "clip.mp4") in line, err
    assert ".partial" not in line and left == []


_SLOW_CHILD = """
import os, sys, time
from ltx2_edge import cli

real = os.replace

def slow(src, dst, *args, **kwargs):
    if ".partial" in os.fspath(src):
        time.sleep(120)  # the temporary MP4 is complete, not yet renamed: the parent signals this process here
    return real(src, dst, *args, **kwargs)

os.replace = slow
sys.exit(cli.main(sys.argv[1:]))
"""


def _start_slow_run(tiny_dir: Path, out: Path) -> subprocess.Popen:
    script = out.parent.parent / "slow_child.py"
    script.write_text(textwrap.dedent(_SLOW_CHILD))
    proc = subprocess.Popen([sys.executable, str(script), *_args(tiny_dir, out)], stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not any(is_temp_path(p) for p in out.parent.iterdir()):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"the child never started writing: {proc.communicate()[1]}")
        time.sleep(0.05)
    return proc


def test_sigterm_exits_143_and_leaves_nothing(tiny_dir, tmp_path):
    folder = tmp_path / "out"
    folder.mkdir()
    proc = _start_slow_run(tiny_dir, folder / "clip.mp4")
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == EXIT_TERMINATED, err
    assert "Traceback" not in err and "terminated" in err and len(err.strip().splitlines()) == 1, err
    assert list(folder.iterdir()) == []


_KILLED_CHILD = """
import os, signal, sys
from ltx2_edge.atomic import atomic_output

with atomic_output(sys.argv[1], overwrite=False) as temp:  # what the MP4 writer does, minus the model
    temp.write_bytes(b"half an mp4")
    os.kill(os.getpid(), signal.SIGKILL)  # no handler runs: the temporary stays behind
"""


def test_a_killed_runs_partial_file_is_cleaned_by_the_next_run(tiny_dir, tmp_path, capsys):
    folder = tmp_path / "out"
    folder.mkdir()
    out = folder / "clip.mp4"
    killed = subprocess.run([sys.executable, "-c", _KILLED_CHILD, str(out)], capture_output=True, timeout=60)
    assert killed.returncode == -signal.SIGKILL
    assert [p for p in folder.iterdir() if is_temp_path(p)], "the killed run left no temporary to clean"
    assert cli.main(_args(tiny_dir, out)) == 0, capsys.readouterr().err
    assert sorted(p.name for p in folder.iterdir()) == ["clip.mp4", "clip.report.json"]


def test_an_immutable_target_is_refused_and_kept(tiny_dir, tmp_path, capsys):
    out = tmp_path / "clip.mp4"
    out.write_bytes(b"the user's clip")
    if subprocess.run(["chattr", "+i", str(out)], capture_output=True).returncode != 0:
        pytest.skip("chattr +i is not supported here (needs root and a filesystem with attributes)")
    try:
        code = cli.main(_args(tiny_dir, out, "--overwrite"))
    finally:
        subprocess.run(["chattr", "-i", str(out)], check=True)
    line = _one_error_line(capsys.readouterr().err)
    assert code == 2 and "immutable" in line
    assert out.read_bytes() == b"the user's clip" and sorted(os.listdir(tmp_path)) == ["clip.mp4"]
