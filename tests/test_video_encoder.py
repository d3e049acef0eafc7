"""The H.264 encoder choice: libx264 by default, a hardware encoder only when a one-frame encode works here.

PyPI's PyAV lists ``h264_nvenc`` and ``h264_v4l2m2m`` on every machine, so the tests check that listing is never
taken for working: on this CPU machine both probes fail with a reason, ``auto`` falls back to libx264 saying why,
and an encoder named explicitly that cannot run is an error (never silently replaced). Which encoder ran is in the
writer's stats, which the decode stage copies into the report.
"""

from __future__ import annotations

from dataclasses import asdict

import av
import numpy as np
import pytest
import torch

from ltx2_edge.errors import EncoderMissingError
from ltx2_edge.mp4 import video_encoders
from ltx2_edge.mp4.mux import write_mp4
from ltx2_edge.mp4.probe import probe_mp4
from ltx2_edge.mp4.video_encoders import HARDWARE_H264, encoder_options, probe, resolve_video_encoder


def _frames(n: int = 9, h: int = 64, w: int = 96) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (n, h, w, 3), dtype=np.uint8)


def test_libx264_encodes_a_test_frame_and_an_absent_gpu_encoder_says_why():
    assert probe("libx264") is None
    assert "h264_nvenc" in av.codecs_available  # listed by the wheel whether or not it can run
    why = probe("h264_nvenc")
    if not torch.cuda.is_available():  # no NVIDIA driver: the listed encoder must not pass for working
        assert why is not None and why.startswith("h264_nvenc cannot encode here (") and "\n" not in why
    assert probe("no_such_encoder") is not None


@pytest.mark.parametrize(
    ("working", "expected"),
    [
        ((), "libx264"),
        (("h264_nvenc",), "h264_nvenc"),
        (("h264_v4l2m2m",), "h264_v4l2m2m"),
        (("h264_nvenc", "h264_v4l2m2m"), "h264_nvenc"),
    ],  # fmt: skip
)
def test_auto_takes_the_first_hardware_encoder_that_works_else_libx264(monkeypatch, working, expected):
    monkeypatch.setattr(video_encoders, "_probed", lambda name: None if name in working else f"{name} fails here")
    name, note = resolve_video_encoder("auto")
    assert name == expected
    if expected == "libx264":
        assert note.startswith("video encoder libx264: --video-encoder auto found no working hardware")
        assert all(f"{h} fails here" in note for h in HARDWARE_H264)
    else:
        assert note == f"video encoder {expected}: --video-encoder auto found it working (a test frame encoded)"


def test_libx264_is_the_default_and_an_explicit_encoder_must_work(monkeypatch):
    assert resolve_video_encoder("libx264") == ("libx264", "")
    monkeypatch.setattr(video_encoders, "_probed", lambda name: f"{name} cannot encode here (PermissionError)")
    with pytest.raises(EncoderMissingError) as err:
        resolve_video_encoder("h264_nvenc")
    message = str(err.value)
    assert message.startswith("--video-encoder h264_nvenc: h264_nvenc cannot encode here") and "libx264" in message
    with pytest.raises(EncoderMissingError, match="--video-encoder='x265' is not allowed: one of libx264, auto"):
        resolve_video_encoder("x265")
    monkeypatch.setattr(video_encoders, "_probed", lambda name: None)
    assert resolve_video_encoder("h264_v4l2m2m")[0] == "h264_v4l2m2m"


def test_the_writer_names_the_encoder_that_ran(tmp_path):
    out = tmp_path / "a.mp4"
    stats = write_mp4(out, [_frames()], None, None, 24.0, 2, {}, overwrite=False)
    assert stats.video_encoder == "libx264" and asdict(stats)["video_encoder"] == "libx264"
    assert probe_mp4(out).video_codec == "h264" and probe_mp4(out).frames == 9


def test_an_encoder_that_cannot_run_leaves_no_file(tmp_path):
    why = probe("h264_nvenc")
    out = tmp_path / "b.mp4"
    if why is None:  # a machine with a working NVENC: it writes, and says so
        assert write_mp4(out, [_frames()], None, None, 24.0, 2, {}, False, video_encoder="h264_nvenc").video_encoder
        return
    with pytest.raises(Exception):  # noqa: B017 (whatever FFmpeg raises, it propagates unchanged)
        write_mp4(out, [_frames()], None, None, 24.0, 2, {}, overwrite=False, video_encoder="h264_nvenc")
    assert list(tmp_path.iterdir()) == []  # neither the MP4 nor its temporary


def test_hardware_encoder_settings():
    options, rate = encoder_options("h264_v4l2m2m", 1280, 704, 24.0)
    assert options == {} and rate == int(1280 * 704 * 24 * video_encoders.V4L2_BITS_PER_PIXEL)
    options, rate = encoder_options("h264_nvenc", 512, 288, 24.0)
    assert rate is None and options["rc"] == "vbr" and options["cq"] == "19"
