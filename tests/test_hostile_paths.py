"""Output paths a hostile user types: inputs as outputs, long names, shared reports, stale partial files, units.

Pure file-system tests of ``atomic`` and ``video_output`` (no model): every refusal is one ``RequestError`` line
naming the flag, and nothing on disk changes.
"""

from __future__ import annotations

import errno
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ltx2_edge.atomic import (
    atomic_output,
    check_output_path,
    clean_stale,
    input_of,
    is_temp_path,
    name_max,
    output_unit,
    temp_path,
)
from ltx2_edge.errors import EXIT_OUTPUT, OutputError, RequestError
from ltx2_edge.video_output import check_video_output, report_path, video_output


def _tree(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


def _one_line(err: pytest.ExceptionInfo, field: str) -> str:
    message = str(err.value)
    assert err.value.field == field and "\n" not in message and message.startswith(f"{field}="), message
    return message


@pytest.mark.parametrize("how", ["same", "hardlink", "symlink", "dotted", "folder"])
def test_an_input_is_never_an_output_even_with_overwrite(how, tmp_path):
    model = tmp_path / "model.safetensors"
    model.write_bytes(b"19B weights")
    gemma = tmp_path / "gemma"
    gemma.mkdir()
    (gemma / "model-00001-of-00001.safetensors").write_bytes(b"gemma")
    inputs = (model, gemma, None)
    target = {
        "same": model,
        "hardlink": tmp_path / "link.mp4",
        "symlink": tmp_path / "sym.mp4",
        "dotted": tmp_path / "gemma" / ".." / "model.safetensors",
        "folder": gemma / "model-00001-of-00001.safetensors",
    }[how]
    if how == "hardlink":
        os.link(model, target)
    if how == "symlink":
        target.symlink_to(model)
    before = _tree(tmp_path) | _tree(gemma)
    with pytest.raises(RequestError) as err:
        check_output_path(target, overwrite=True, inputs=inputs)
    assert "not one of this run's inputs" in _one_line(err, "--output-path")
    with pytest.raises(RequestError), atomic_output(target, overwrite=True, inputs=inputs) as temp:
        temp.write_bytes(b"mp4")
    assert _tree(tmp_path) | _tree(gemma) == before
    assert input_of(tmp_path / "other.mp4", inputs) is None


def test_devices_and_pipes_are_not_replaced(tmp_path):
    fifo = tmp_path / "pipe.mp4"
    os.mkfifo(fifo)
    with pytest.raises(RequestError) as err:
        check_output_path(fifo, overwrite=True)
    assert "device, pipe or socket" in _one_line(err, "--output-path")
    with pytest.raises(RequestError):
        check_output_path(Path("/dev/null"), overwrite=True)


def test_temp_names_fit_the_filesystem_whatever_the_target(tmp_path):
    limit = name_max(tmp_path)
    for name in ("x" * (limit - 4) + ".mp4", "é" * ((limit - 4) // 2) + ".mp4", "a.mp4"):
        target = tmp_path / name
        temp = temp_path(target)
        assert len(os.fsencode(temp.name)) <= 110 and is_temp_path(temp) and temp.suffix == ".mp4"
        with atomic_output(target, overwrite=False) as t:
            t.write_bytes(b"ok")
        assert target.read_bytes() == b"ok"
        target.unlink()
    assert not is_temp_path(tmp_path / "clip.mp4")


def test_names_over_the_limit_are_refused_up_front(tmp_path):
    limit = name_max(tmp_path)
    with pytest.raises(RequestError) as err:
        check_output_path(tmp_path / ("y" * (limit + 1)), overwrite=False)
    assert f"at most {limit} bytes" in _one_line(err, "--output-path")
    # The MP4's name fits, its report's would not: refused before any work, with the longest that works.
    longest = limit - len(".report.json") + len(".mp4")
    with pytest.raises(RequestError) as err:
        check_video_output(tmp_path / ("z" * (longest - 3) + ".mp4"), overwrite=False)
    assert f"at most {longest} bytes" in _one_line(err, "--output-path")
    check_video_output(tmp_path / ("z" * (longest - 4) + ".mp4"), overwrite=False)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("name", ["clip", "clip.mov", "clip.mp4.txt", ".mp4"])
def test_video_names_must_end_in_mp4(name, tmp_path):
    with pytest.raises(RequestError) as err:
        check_video_output(tmp_path / name, overwrite=True)
    assert "ending in .mp4" in _one_line(err, "--output-path")


def test_a_report_beside_the_mp4_is_not_overwritten_without_overwrite(tmp_path):
    report = tmp_path / "clip.report.json"
    report.write_text("another run's report")
    with pytest.raises(RequestError) as err:
        check_video_output(tmp_path / "clip.mp4", overwrite=False)
    message = _one_line(err, "--output-path")
    assert "clip.report.json" in message and "--overwrite" in message
    with pytest.raises(RequestError), video_output(tmp_path / "clip.mp4", overwrite=False) as (video, rep):
        video.write_bytes(b"mp4")
        rep.write_text("{}")
    assert _tree(tmp_path) == {"clip.report.json": b"another run's report"}
    with video_output(tmp_path / "clip.mp4", overwrite=True) as (video, rep):
        video.write_bytes(b"mp4")
        rep.write_text("{}")
    assert _tree(tmp_path) == {"clip.mp4": b"mp4", "clip.report.json": b"{}"}
    assert report_path(tmp_path / "clip.mp4") == report


def test_unit_is_both_or_neither_when_the_second_write_fails(tmp_path):
    out = tmp_path / "clip.mp4"
    with pytest.raises(OutputError) as err, video_output(out, overwrite=False) as (video, rep):
        video.write_bytes(b"complete mp4")
        raise OSError(errno.ENOSPC, "No space left on device", str(rep))
    message = str(err.value)
    assert "no space left" in message and "clip.report.json" in message and ".partial" not in message
    assert err.value.exit_code == EXIT_OUTPUT and "\n" not in message
    assert list(tmp_path.iterdir()) == []


def test_unit_keeps_the_old_pair_when_a_rename_fails(tmp_path, monkeypatch):
    out, rep_path = tmp_path / "clip.mp4", tmp_path / "clip.report.json"
    out.write_bytes(b"old mp4")
    rep_path.write_bytes(b"old report")
    real = os.replace

    def failing(src, dst):
        if Path(dst) == out:  # the report is in place by now: it must be put back
            raise OSError(errno.EPERM, "Operation not permitted", str(dst))
        return real(src, dst)

    monkeypatch.setattr(os, "replace", failing)
    with pytest.raises(OutputError) as err, output_unit((rep_path, out), overwrite=True) as (rep, video):
        rep.write_bytes(b"new report")
        video.write_bytes(b"new mp4")
    monkeypatch.undo()
    assert "cannot write" in str(err.value) and str(out) in str(err.value)
    assert _tree(tmp_path) == {"clip.mp4": b"old mp4", "clip.report.json": b"old report"}


def test_unit_refuses_when_the_writer_made_nothing(tmp_path):
    with pytest.raises(OutputError), output_unit((tmp_path / "a.mp4", tmp_path / "a.report.json"), False) as temps:
        temps[0].write_bytes(b"only one")
    assert list(tmp_path.iterdir()) == []


def test_a_writer_inside_a_unit_writes_its_temporary_in_place(tmp_path):
    with video_output(tmp_path / "c.mp4", overwrite=False) as (video, rep):
        with atomic_output(video, overwrite=False) as inner:  # what mp4.mux.write_mp4 does with the path it gets
            assert inner == video
            inner.write_bytes(b"mp4")
        rep.write_text("{}")
    assert _tree(tmp_path) == {"c.mp4": b"mp4", "c.report.json": b"{}"}


def _dead_pid() -> int:
    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    return int(proc.stdout)


def test_stale_partials_of_dead_runs_are_cleaned_by_the_next_writer(tmp_path):
    target = tmp_path / "clip.mp4"
    dead = _dead_pid()
    stale = Path(str(temp_path(target)).replace(f".{os.getpid()}-", f".{dead}-"))
    stale.write_bytes(b"half an mp4")
    mine = temp_path(target)  # this (live) process: a run writing right now keeps its file
    mine.write_bytes(b"in progress")
    other = temp_path(tmp_path / "other.mp4")
    other_stale = Path(str(other).replace(f".{os.getpid()}-", f".{dead}-"))
    other_stale.write_bytes(b"another output's")
    with atomic_output(target, overwrite=False) as temp:
        temp.write_bytes(b"done")
    assert not stale.exists() and mine.exists() and other_stale.exists()
    assert target.read_bytes() == b"done"
    assert clean_stale(tmp_path / "other.mp4") == [other_stale] and mine.exists()


def test_a_backup_whose_target_vanished_is_put_back(tmp_path):
    target = tmp_path / "clip.report.json"
    backup = Path(str(temp_path(target, "backup")).replace(f".{os.getpid()}-", f".{_dead_pid()}-"))
    backup.write_bytes(b"the previous report")  # a run killed between moving it aside and renaming the new one
    clean_stale(target)
    assert _tree(tmp_path) == {"clip.report.json": b"the previous report"}


def test_an_immutable_target_is_refused_up_front(tmp_path):
    target = tmp_path / "clip.mp4"
    target.write_bytes(b"keep")
    if subprocess.run(["chattr", "+i", str(target)], capture_output=True).returncode != 0:
        pytest.skip("chattr +i is not supported here (needs root and a filesystem with attributes)")
    try:
        with pytest.raises(RequestError) as err:
            check_output_path(target, overwrite=True)
        assert "immutable" in _one_line(err, "--output-path")
    finally:
        subprocess.run(["chattr", "-i", str(target)], check=True)
    assert _tree(tmp_path) == {"clip.mp4": b"keep"}


def test_a_writer_failing_inside_a_unit_names_the_target_not_the_temporary(tmp_path):
    out = tmp_path / "clip.mp4"
    with pytest.raises(OutputError) as err, video_output(out, overwrite=False) as (video, _):
        with atomic_output(video, overwrite=False) as inner:  # as mp4.mux.write_mp4 writes the unit's temporary
            inner.write_bytes(b"half")
            raise OSError(errno.ENOSPC, "No space left on device", str(inner))
    assert str(out) in str(err.value) and ".partial" not in str(err.value) and list(tmp_path.iterdir()) == []
