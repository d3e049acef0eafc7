"""--video-encoder from the flag to the writer: parsed, validated in RunSettings, resolved once per generator."""

from __future__ import annotations

import pytest

from ltx2_edge.cli.parser import build_parser
from ltx2_edge.engine.settings import RunSettings
from ltx2_edge.errors import RequestError
from ltx2_edge.mp4.video_encoders import VIDEO_ENCODER_CHOICES


def test_the_flag_defaults_to_libx264_and_offers_auto_and_the_hardware_encoders():
    args = build_parser().parse_args(["plan", "--gemma-root", "g"])
    assert args.video_encoder == "libx264"
    assert (
        build_parser().parse_args(["generate", "--gemma-root", "g", "--video-encoder", "auto"]).video_encoder == "auto"
    )
    assert RunSettings().video_encoder == "libx264"
    for choice in VIDEO_ENCODER_CHOICES:
        assert RunSettings(video_encoder=choice).video_encoder == choice
    with pytest.raises(RequestError) as err:
        RunSettings(video_encoder="x265")
    assert "video-encoder" in err.value.field
