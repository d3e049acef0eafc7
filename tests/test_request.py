"""Request validation: every bad field is refused with a one-line message naming the field and what is allowed."""

from __future__ import annotations

import math

import pytest

from ltx2_edge.errors import RequestError
from ltx2_edge.request import GenerationRequest


def test_defaults_are_w1():
    r = GenerationRequest(prompt="a cat")
    assert (r.width, r.height, r.num_frames, r.frame_rate, r.num_inference_steps) == (512, 288, 97, 24.0, 20)
    assert r.guidance == "cfg" and r.audio_channels == 2 and r.seed == 10
    assert math.isclose(r.duration_s, 97 / 24)


@pytest.mark.parametrize(
    ("field", "value", "allowed"),
    [
        ("width", 500, "multiple of 32"),
        ("width", 0, "multiple of 32"),
        ("height", -32, "multiple of 32"),
        ("height", 288.0, "integer"),
        ("num_frames", 96, "8k+1"),
        ("num_frames", 0, "8k+1"),
        ("frame_rate", 0, "positive"),
        ("frame_rate", -24.0, "positive"),
        ("frame_rate", float("nan"), "positive"),
        ("num_inference_steps", 0, "at least 1"),
        ("seed", -1, "from 0"),
        ("guidance", "stg", "cfg or full"),
        ("audio_channels", 3, "1 (mono) or 2 (stereo)"),
        ("prompt", "   ", "non-empty"),
        ("prompt", "", "non-empty"),
    ],
)
def test_bad_field_is_named(field, value, allowed):
    kwargs = {"prompt": "a cat", field: value}
    with pytest.raises(RequestError) as info:
        GenerationRequest(**kwargs)
    msg = str(info.value)
    flag = "--" + field.replace("_", "-")  # every field is spelled as its CLI flag
    assert info.value.field == flag and info.value.param == field
    assert msg.startswith(f"{flag}=") and allowed in msg and "\n" not in msg


def test_frames_error_suggests_neighbours():
    with pytest.raises(RequestError, match="nearest: 97 or 105"):
        GenerationRequest(prompt="x", num_frames=100)


def test_request_is_frozen():
    r = GenerationRequest(prompt="a cat")
    with pytest.raises(AttributeError):
        r.width = 64  # type: ignore[misc]
