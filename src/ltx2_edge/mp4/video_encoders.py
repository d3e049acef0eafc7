"""Which H.264 encoder writes the video: libx264 by default, a hardware encoder only where one really works.

``--video-encoder``: ``libx264`` (the default: software, the same bytes on every machine for a given build, what
the tests compare); ``auto``: the first hardware encoder of ``HARDWARE_H264`` that this PyAV/FFmpeg build has
*and* that encodes a frame here (``h264_nvenc`` on NVIDIA discrete GPUs; ``h264_v4l2m2m`` on boards whose encoder
is a V4L2 memory-to-memory device), else libx264, with a note saying what was tried; or one encoder by name, which
must then work (``EncoderMissingError`` otherwise: an explicit choice is never replaced). PyPI's PyAV wheels list
``h264_nvenc`` even on machines without an NVIDIA driver, so a name in ``av.codecs_available`` proves nothing:
every candidate is probed with a one-frame encode into a temporary file, once per process.

Jetson Thor has NVENC hardware but FFmpeg's ``h264_nvenc`` does not reach it (its encoder is driven through
GStreamer / V4L2), so on a Thor ``auto`` finds ``h264_v4l2m2m`` where the kernel exposes it, else libx264. This
module never changes the encoder settings of ``mp4.encoder`` for libx264 and never writes outside a temp folder.
"""

from __future__ import annotations

import functools
import tempfile
from pathlib import Path

from ltx2_edge.errors import EncoderMissingError

SOFTWARE_H264 = "libx264"
HARDWARE_H264: tuple[str, ...] = ("h264_nvenc", "h264_v4l2m2m")
VIDEO_ENCODER_CHOICES: tuple[str, ...] = ("libx264", "auto", *HARDWARE_H264)
VIDEO_ENCODER_HELP = (
    "H.264 encoder: libx264 (default; software, reproducible), auto (a hardware encoder when this PyAV/FFmpeg has one "
    "that encodes a test frame here: h264_nvenc on NVIDIA GPUs, h264_v4l2m2m on V4L2 boards; else libx264), or one "
    "of them by name (an error if it does not work here). The report names the encoder that ran"
)
# Per-encoder options: libx264's are mp4.encoder.X264_OPTIONS. Hardware encoders take a quality target close to
# CRF 18 where they have one (NVENC's constant-quality VBR), else a bit rate (V4L2 M2M knows only rates).
HARDWARE_OPTIONS: dict[str, dict[str, str]] = {
    "h264_nvenc": {"preset": "p5", "tune": "hq", "rc": "vbr", "cq": "19", "b": "0"},
    "h264_v4l2m2m": {},
}
V4L2_BITS_PER_PIXEL = 0.15  # per pixel per frame: ~8 Mb/s at 1280x704x24, where V4L2 encoders need a rate


def probe(name: str, width: int = 256, height: int = 144) -> str | None:
    """Encode one black frame with ``name`` into a temporary MP4: None if it worked, else why not (one line)."""
    import av
    import numpy as np

    with tempfile.TemporaryDirectory(prefix="ltx2-edge-probe-") as folder:
        path = Path(folder) / "probe.mp4"
        container = None
        try:
            container = av.open(str(path), "w", format="mp4")
            stream = container.add_stream(name, rate=24)
            stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
            frame = av.VideoFrame.from_ndarray(np.zeros((height, width, 3), np.uint8), format="rgb24")
            packets = [*stream.encode(frame.reformat(format="yuv420p")), *stream.encode(None)]
            for packet in packets:
                container.mux(packet)
            container.close()
            container = None
            if not packets or path.stat().st_size == 0:
                return f"{name} produced no packet for a test frame"
            return None
        except Exception as exc:  # any failure to open or encode means "does not work here", with its reason
            return f"{name} cannot encode here ({type(exc).__name__}: {str(exc).splitlines()[0][:140]})"
        finally:
            if container is not None:
                try:
                    container.close()
                except Exception:  # closing a half-opened container after a failure: its error is moot
                    pass


@functools.cache
def _probed(name: str) -> str | None:
    return probe(name)


def resolve_video_encoder(choice: str) -> tuple[str, str]:
    """``(encoder that will run, note)`` for ``--video-encoder choice``; the note is "" for libx264 asked for.

    Raises ``EncoderMissingError`` when an encoder named explicitly cannot encode here.
    """
    if choice not in VIDEO_ENCODER_CHOICES:
        allowed = ", ".join(VIDEO_ENCODER_CHOICES)
        raise EncoderMissingError(f"--video-encoder={choice!r} is not allowed: one of {allowed}")
    if choice == SOFTWARE_H264:
        return SOFTWARE_H264, ""
    if choice != "auto":
        why = _probed(choice)
        if why is not None:
            raise EncoderMissingError(f"--video-encoder {choice}: {why}; use --video-encoder libx264 (or auto)")
        return choice, f"video encoder {choice} (asked for; a test frame encoded)"
    failures = []
    for name in HARDWARE_H264:
        why = _probed(name)
        if why is None:
            return name, f"video encoder {name}: --video-encoder auto found it working (a test frame encoded)"
        failures.append(why)
    return SOFTWARE_H264, "video encoder libx264: --video-encoder auto found no working hardware H.264 encoder (" + (
        "; ".join(failures) + ")"
    )


def encoder_options(name: str, width: int, height: int, fps: float) -> tuple[dict[str, str], int | None]:
    """``(codec options, bit rate or None)`` for a hardware encoder ``name`` at this size (libx264: see
    ``mp4.encoder``)."""
    options = dict(HARDWARE_OPTIONS.get(name, {}))
    rate = int(width * height * fps * V4L2_BITS_PER_PIXEL) if name == "h264_v4l2m2m" else None
    return options, rate
