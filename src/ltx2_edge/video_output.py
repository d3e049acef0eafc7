"""The MP4 and its run report, written as one unit: both land at their paths, or neither does.

``check_video_output`` is what a run checks before it reads any weight; ``video_output`` is the unit the MP4 writer
and the report writer fill. Both are ``atomic``'s rules applied to the pair (``clip.mp4`` beside
``clip.report.json``), plus what only a pair needs: a name ending in ``.mp4`` (two outputs named otherwise could
share a report) and a report that is never replaced without ``overwrite``. This module never writes a target
directly (``atomic.output_unit`` does the renames).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable, Iterator
from pathlib import Path

from ltx2_edge.atomic import OutputUnit, check_output_path, name_max, output_unit
from ltx2_edge.errors import RequestError

_FIELD = "--output-path"
REPORT_SUFFIX = ".report.json"
VIDEO_SUFFIX = ".mp4"


def report_path(video: Path) -> Path:
    """Where the run report of the MP4 ``video`` goes: beside it, ``clip.mp4`` -> ``clip.report.json``."""
    return Path(video).with_suffix(REPORT_SUFFIX)


def check_video_output(path: Path, overwrite: bool, inputs: Iterable[Path | str | None] = ()) -> None:
    """``check_output_path`` for an MP4 and its report, which are written as one unit (``video_output``).

    Also refused: a name not ending in ``.mp4`` (two such outputs could share one report), a report that exists
    without ``overwrite`` (it would be replaced), and a name whose report name would be too long.
    """
    path = Path(path)
    if path.suffix.lower() != VIDEO_SUFFIX or not path.stem:
        raise RequestError(_FIELD, str(path), f"a file name ending in {VIDEO_SUFFIX}, e.g. clip.mp4 (its report is "
                           f"written beside it as clip{REPORT_SUFFIX})")  # fmt: skip
    limit = name_max(path.parent) if path.parent.is_dir() else 255
    longest = limit - len(REPORT_SUFFIX) + len(path.suffix)
    if len(os.fsencode(path.name)) > longest:
        raise RequestError(_FIELD, str(path), f"a file name of at most {longest} bytes (its report NAME"
                           f"{REPORT_SUFFIX} must fit the filesystem's {limit}); choose a shorter name")  # fmt: skip
    check_output_path(path, overwrite, inputs=inputs)
    report = report_path(path)
    try:
        check_output_path(report, overwrite, inputs=inputs)
    except RequestError as exc:
        raise RequestError(_FIELD, str(path), f"its report {report.name} beside it: {exc.allowed}") from None


def video_unit(path: Path, overwrite: bool, inputs: Iterable[Path | str | None] = ()) -> OutputUnit:
    """The ``OutputUnit`` of an MP4 and its report, checked (``check_video_output``): ``unit.temps`` is
    (MP4 temporary, report temporary); ``commit()`` lands both, ``discard()`` neither."""
    path = Path(path)
    inputs = tuple(inputs)
    check_video_output(path, overwrite, inputs)
    return OutputUnit((path, report_path(path)), overwrite, inputs=inputs)


@contextlib.contextmanager
def video_output(path: Path, overwrite: bool, inputs: Iterable[Path | str | None] = ()) -> Iterator[tuple[Path, Path]]:
    """``video_unit`` as a block: yields (MP4 temporary, report temporary); both land, or neither.

    Hand the MP4 temporary to the writer (``mp4.mux.write_mp4`` writes it in place) and write the report to the
    other; on any failure, nothing new is left and an existing pair (``overwrite``) stays as it was.
    """
    path = Path(path)
    inputs = tuple(inputs)
    check_video_output(path, overwrite, inputs)
    with output_unit((path, report_path(path)), overwrite, inputs=inputs) as temps:
        yield temps  # type: ignore[misc]
