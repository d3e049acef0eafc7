"""Mux stage: what a reader gets back from our MP4s, and that failures leave no file behind."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
import torch

import ltx2_edge
from ltx2_edge.atomic import Terminated, atomic_output, check_output_path, install_signal_cleanup
from ltx2_edge.errors import EncoderMissingError, RequestError
from ltx2_edge.mp4 import mux
from ltx2_edge.mp4 import probe as mp4_probe
from ltx2_edge.mp4.mux import LateAudio, Mp4Writer, StreamingMp4Writer, require_encoders, write_mp4
from ltx2_edge.mp4.probe import fps_fraction, mp4_metadata, probe_mp4

H, W, SR = 64, 96, 24000


def _frames(n: int, seed: int = 0) -> np.ndarray:
    """Moving gradients plus a little noise, so the encoder has real work to do."""
    yy, xx = np.mgrid[0:H, 0:W]
    noise = np.random.default_rng(seed).integers(0, 8, (n, H, W, 3))
    base = np.stack([np.stack([xx * 2 + 3 * i, yy * 3 + i, (xx + yy + 5 * i) % 128], -1) for i in range(n)])
    return ((base + noise) % 256).astype(np.uint8)


def _sine(n: int, hz: float = 440.0, amp: float = 0.5) -> np.ndarray:
    return (amp * np.sin(2 * np.pi * hz * np.arange(n) / SR)).astype(np.float32)


def _decode(path: Path) -> tuple[np.ndarray, np.ndarray | None]:
    with av.open(str(path)) as c:
        video = np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)])
    with av.open(str(path)) as c:
        if not c.streams.audio:
            return video, None
        audio = np.concatenate([f.to_ndarray() for f in c.decode(audio=0)], axis=1)
    return video, audio


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float(10 * np.log10(255.0**2 / mse))


def _snr_db(reference: np.ndarray, estimate: np.ndarray) -> float:
    return float(10 * np.log10(np.sum(reference**2) / np.sum((estimate - reference) ** 2)))


@pytest.mark.parametrize(
    ("fps", "expected"),
    [(24, Fraction(24)), (24.0, Fraction(24)), (23.976, Fraction(24000, 1001)), (29.97, Fraction(30000, 1001)),
     (25, Fraction(25)), (12.5, Fraction(25, 2)), (Fraction(24000, 1001), Fraction(24000, 1001))],
)  # fmt: skip
def test_fps_is_an_exact_fraction(fps, expected):
    assert fps_fraction(fps) == expected


@pytest.mark.parametrize("fps", [0, -24.0])
def test_fps_must_be_positive(fps):
    with pytest.raises(RequestError) as err:
        fps_fraction(fps)
    assert err.value.field == "--fps"


@pytest.mark.parametrize("fps", [24, 23.976])
@pytest.mark.parametrize("channels", [1, 2])
def test_read_back_codecs_sizes_rates_and_durations(tmp_path, fps, channels):
    frames = _frames(17)
    waveform = np.stack([_sine(30000), _sine(30000, 660.0)])  # longer than the video: must be trimmed
    out = tmp_path / "out.mp4"
    stats = write_mp4(out, [frames[:5], frames[5:]], waveform, SR, fps, channels, {"title": "t"}, overwrite=False)

    probe = probe_mp4(out)
    rate = fps_fraction(fps)
    assert (probe.video_codec, probe.pix_fmt, probe.width, probe.height) == ("h264", "yuv420p", W, H)
    assert (probe.frames, probe.fps) == (17, rate)
    assert (probe.audio_codec, probe.sample_rate, probe.channels) == ("aac", SR, channels)
    assert probe.video_duration_s == pytest.approx(float(17 / rate), abs=1e-6)
    assert abs(probe.audio_duration_s - probe.video_duration_s) <= float(1 / rate)

    target = round(17 * SR / rate)
    assert (stats.frames, stats.audio_samples, stats.audio_samples_trimmed) == (17, target, 30000 - target)
    assert stats.path == out and stats.file_bytes == out.stat().st_size
    assert b"crf=18.0" in out.read_bytes()  # x264 writes its settings into the stream

    video, audio = _decode(out)
    assert video.shape == (17, H, W, 3)
    assert _psnr(video, frames) > 31.0  # 33.1 measured; decoding with the wrong (BT.601) matrix: 28.5
    # The decoder drops AAC priming but keeps the last frame's padding: at most one AAC frame (1024) extra.
    assert audio.shape[0] == channels and 0 <= audio.shape[1] - target < 1024


def test_short_audio_is_zero_padded_to_the_video(tmp_path):
    out = tmp_path / "pad.mp4"
    stats = write_mp4(out, [_frames(12)], _sine(5000)[None], SR, 24, 1, {}, overwrite=False)
    assert (stats.audio_samples, stats.audio_samples_padded, stats.audio_samples_trimmed) == (12000, 7000, 0)
    _, audio = _decode(out)
    assert np.abs(audio[0, 6000:12000]).max() < 1e-3  # silence after the waveform ends (AAC ringing decays)
    assert np.abs(audio[0, 1000:4000]).max() > 0.4


def test_mono_downmix_is_the_channel_average(tmp_path):
    n = 25 * SR // 24
    left = _sine(n, amp=0.6)
    out = tmp_path / "mono.mp4"
    write_mp4(out, [_frames(25)], np.stack([left, np.zeros_like(left)]), SR, 24, 1, {}, overwrite=False)
    _, audio = _decode(out)
    assert audio.shape[0] == 1
    inner = slice(2048, n - 2048)  # away from the encoder's start-up and tail frames
    assert _snr_db(0.5 * left[inner], audio[0, inner]) > 25.0
    assert np.sqrt(np.mean(audio[0, inner] ** 2)) == pytest.approx(0.3 / np.sqrt(2), rel=0.03)


def test_mono_source_is_duplicated_for_stereo(tmp_path):
    n = 9 * SR // 24
    out = tmp_path / "stereo.mp4"
    write_mp4(out, [_frames(9)], torch.from_numpy(_sine(n)).to(torch.bfloat16)[None], SR, 24, 2, {}, overwrite=False)
    _, audio = _decode(out)
    assert audio.shape[0] == 2
    inner = slice(1024, n - 1024)
    assert np.abs(audio[0] - audio[1]).max() < 2e-3  # same signal in both channels, up to AAC rounding
    assert _snr_db(_sine(n)[inner], audio[0, inner]) > 25.0


def _write_both(tmp_path: Path) -> tuple[Path, Path]:
    """The same input through Mp4Writer (one call) and StreamingMp4Writer (uneven torch chunks, queue of 1)."""
    frames, waveform = _frames(21, seed=3), np.stack([_sine(21000), _sine(21000, 330.0)])
    settings = dict(width=W, height=H, fps=24, audio_sample_rate=SR, audio_channels=2, metadata={"title": "same"})
    one = Mp4Writer(tmp_path / "one.mp4", **settings)
    one.write_audio(waveform)
    one.write_frames(frames)
    one.close()
    streaming = StreamingMp4Writer(tmp_path / "stream.mp4", queue_chunks=1, **settings)
    for start in range(0, 21, 4):
        streaming.write_frames(torch.from_numpy(frames[start : start + 4]))
        if start == 0:
            streaming.write_audio(torch.from_numpy(waveform))
    stats = streaming.close()
    assert stats.frames == 21 and not streaming._thread.is_alive()
    return tmp_path / "one.mp4", tmp_path / "stream.mp4"


def test_streaming_writer_is_byte_identical_with_a_deterministic_encoder(tmp_path, monkeypatch):
    # With lookahead/mbtree off x264 is bit-reproducible (60/60 runs measured), so any difference would be ours:
    # frame order, timestamps, audio split or metadata.
    from ltx2_edge.mp4 import encoder as mp4_encoder

    monkeypatch.setattr(
        mp4_encoder, "X264_OPTIONS", {**mp4_encoder.X264_OPTIONS, "x264-params": "rc-lookahead=0:mbtree=0"}
    )
    one, streamed = _write_both(tmp_path)
    assert one.read_bytes() == streamed.read_bytes()


def test_streaming_writer_matches_one_shot_with_default_settings(tmp_path):
    # Default x264 settings are not bit-reproducible run to run (see mp4_encoder.X264_OPTIONS): 42.5 dB is the worst
    # decoded PSNR between two encodes measured over 30 runs; identical when they agree. AAC is deterministic.
    one, streamed = _write_both(tmp_path)
    (video_one, audio_one), (video_stream, audio_stream) = _decode(one), _decode(streamed)
    assert video_one.shape == video_stream.shape == (21, H, W, 3)
    assert np.array_equal(video_one, video_stream) or _psnr(video_one, video_stream) > 38.0
    assert np.array_equal(audio_one, audio_stream)


def test_writer_thread_error_reaches_caller_and_deletes_file(tmp_path):
    writer = StreamingMp4Writer(
        tmp_path / "x.mp4", width=W, height=H, fps=24, audio_sample_rate=SR, audio_channels=2, metadata={}
    )
    writer.write_frames(_frames(3))
    writer.write_frames(np.zeros((2, H, W + 2, 3), np.uint8))  # wrong width: fails on the writer thread
    with pytest.raises(ValueError, match=r"expected \[F>=1, 64, 96, 3\]"):
        writer.close()
    assert not writer._thread.is_alive()
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ValueError, match="already closed"):
        writer.write_frames(_frames(1))


def test_write_mp4_failure_mid_stream_leaves_nothing(tmp_path):
    def chunks():
        yield _frames(4)
        yield _frames(4).astype(np.float32)  # wrong dtype

    with pytest.raises(ValueError, match="expected uint8"):
        write_mp4(tmp_path / "v.mp4", chunks(), _sine(9000)[None], SR, 24, 1, {}, overwrite=False)
    assert list(tmp_path.iterdir()) == []


def test_interrupt_while_streaming_leaves_nothing(tmp_path):
    def chunks():
        yield _frames(4)
        yield _frames(4)
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_mp4(tmp_path / "v.mp4", chunks(), _sine(9000)[None], SR, 24, 1, {}, overwrite=False)
    assert list(tmp_path.iterdir()) == []


def _deterministic_x264(monkeypatch) -> None:
    from ltx2_edge.mp4 import encoder as mp4_encoder

    monkeypatch.setattr(
        mp4_encoder, "X264_OPTIONS", {**mp4_encoder.X264_OPTIONS, "x264-params": "rc-lookahead=0:mbtree=0"}
    )


@pytest.mark.parametrize("kind", ["ready_mid_stream", "callable", "future"])
def test_late_waveform_gives_the_same_streams(tmp_path, monkeypatch, kind):
    """Audio handed over after some (or all) frames: the decoded video and audio equal the in-hand case."""
    _deterministic_x264(monkeypatch)
    frames, waveform = _frames(21, seed=5), np.stack([_sine(21000), _sine(21000, 330.0)])
    log: list[str] = []

    def chunks():
        for start in range(0, 21, 5):
            log.append(f"chunk {start}")
            yield frames[start : start + 5]

    def get() -> np.ndarray:
        log.append("audio")
        return waveform

    if kind == "ready_mid_stream":
        late: object = LateAudio(get, ready=lambda: len(log) >= 2)
    elif kind == "callable":
        late = get
    in_hand = write_mp4(tmp_path / "a.mp4", chunks(), waveform, SR, 24, 2, {}, overwrite=False)
    log.clear()
    if kind == "future":  # submitted now: under load the first write may outlast its 0.2 s, and clear() its log
        pool = ThreadPoolExecutor(1)
        late = pool.submit(lambda: time.sleep(0.2) or get())
    stats = write_mp4(tmp_path / "b.mp4", chunks(), late, SR, 24, 2, {}, overwrite=False)
    if kind == "ready_mid_stream":  # fetched as soon as ready, before the next chunk was pulled
        assert log == ["chunk 0", "chunk 5", "audio", "chunk 10", "chunk 15", "chunk 20"]
    elif kind == "callable":  # frames streamed into the encoder first; the waveform after the last chunk
        assert log == ["chunk 0", "chunk 5", "chunk 10", "chunk 15", "chunk 20", "audio"]
    else:
        pool.shutdown()
        assert log.count("audio") == 1 and len(log) == 6
    assert (stats.frames, stats.audio_samples, stats.audio_samples_padded) == (21, 21000, 0)
    assert (in_hand.frames, in_hand.audio_samples) == (stats.frames, stats.audio_samples)
    (video_a, audio_a), (video_b, audio_b) = _decode(tmp_path / "a.mp4"), _decode(tmp_path / "b.mp4")
    assert np.array_equal(video_a, video_b) and video_b.shape == (21, H, W, 3)
    assert np.array_equal(audio_a, audio_b) and audio_b.shape[0] == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.mp4", "b.mp4"]


def test_late_waveform_failure_leaves_nothing(tmp_path):
    pulled: list[int] = []

    def chunks():
        for i in range(3):
            pulled.append(i)
            yield _frames(4, seed=i)

    pool = ThreadPoolExecutor(1)
    failing = pool.submit(lambda: (_ for _ in ()).throw(RuntimeError("vocoder failed on purpose")))
    with pytest.raises(RuntimeError, match="vocoder failed on purpose"):
        write_mp4(tmp_path / "v.mp4", chunks(), failing, SR, 24, 2, {}, overwrite=False)
    pool.shutdown()
    assert list(tmp_path.iterdir()) == [] and pulled == [0]  # already failed: the run stops at the first chunk

    def late_failure() -> np.ndarray:
        raise RuntimeError("audio worker died")

    with pytest.raises(RuntimeError, match="audio worker died"):
        write_mp4(tmp_path / "v.mp4", chunks(), late_failure, SR, 24, 2, {}, overwrite=False)
    assert list(tmp_path.iterdir()) == [] and pulled == [0, 0, 1, 2]  # fetched (and failed) after the last chunk


def test_writer_failure_with_late_waveform_pending_leaves_nothing(tmp_path):
    def chunks():
        yield _frames(4)
        yield np.zeros((2, H, W + 2, 3), np.uint8)  # wrong width: fails on the writer thread
        yield _frames(4)

    pool = ThreadPoolExecutor(1)
    late = pool.submit(lambda: time.sleep(0.3) or np.stack([_sine(9000), _sine(9000)]))
    threads = threading.active_count()
    with pytest.raises(ValueError, match=r"expected \[F>=1, 64, 96, 3\]"):
        write_mp4(tmp_path / "v.mp4", chunks(), late, SR, 24, 2, {}, overwrite=False, queue_chunks=1)
    pool.shutdown()
    assert list(tmp_path.iterdir()) == []
    assert threading.active_count() <= threads  # the writer thread was joined


@pytest.mark.parametrize("exc", [KeyboardInterrupt, SystemExit, RuntimeError])
def test_atomic_output_removes_temp_on_any_exception(tmp_path, exc):
    target = tmp_path / "out.mp4"
    target.write_bytes(b"old")
    with pytest.raises(exc), atomic_output(target, overwrite=True) as temp:
        assert temp.parent == tmp_path and temp.name.startswith(".out.mp4~") and ".partial" in temp.name
        assert temp.suffix == ".mp4"
        temp.write_bytes(b"new, unfinished")
        raise exc
    assert [p.name for p in tmp_path.iterdir()] == ["out.mp4"] and target.read_bytes() == b"old"


def test_atomic_output_renames_on_success(tmp_path):
    target = tmp_path / "out.mp4"
    target.write_bytes(b"old")
    with atomic_output(target, overwrite=True) as temp:
        temp.write_bytes(b"new")
        assert target.read_bytes() == b"old"  # nothing visible until the block ends
    assert [p.name for p in tmp_path.iterdir()] == ["out.mp4"] and target.read_bytes() == b"new"


def test_sigterm_becomes_an_exception_and_cleans_up(tmp_path):
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(Terminated) as err, install_signal_cleanup() as installed:
        assert installed
        with atomic_output(tmp_path / "out.mp4", overwrite=False) as temp:
            temp.write_bytes(b"partial")
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)  # the handler raises at the next bytecode, long before this ends
    assert err.value.exit_code == 128 + signal.SIGTERM
    assert list(tmp_path.iterdir()) == []
    assert signal.getsignal(signal.SIGTERM) == before


def test_output_path_errors_name_the_field(tmp_path):
    existing = tmp_path / "exists.mp4"
    existing.write_bytes(b"x")
    with pytest.raises(RequestError, match="--overwrite") as err:
        check_output_path(existing, overwrite=False)
    assert err.value.field == "--output-path"
    check_output_path(existing, overwrite=True)
    with pytest.raises(RequestError, match="does not exist") as err:
        write_mp4(tmp_path / "missing" / "o.mp4", [_frames(2)], None, None, 24, 1, {}, overwrite=False)
    assert err.value.field == "--output-path"
    with pytest.raises(RequestError, match="is a directory") as err:
        check_output_path(tmp_path, overwrite=True)
    assert err.value.field == "--output-path"
    pulled = []

    def chunks():
        pulled.append(1)
        yield _frames(2)

    with pytest.raises(RequestError, match="--overwrite"):
        write_mp4(existing, chunks(), None, None, 24, 1, {}, overwrite=False)
    assert pulled == []  # refused before any (costly) chunk was produced
    assert existing.read_bytes() == b"x"


def test_metadata_round_trips_unicode_and_quotes(tmp_path):
    prompt = "A \"quoted\" café at dusk — 雨の夜, {json: 'braces'}\nsecond line " + "x" * 80
    fields = {"prompt": prompt, "negative_prompt": "blurry, \"low\" quality", "seed": 10, "width": W, "height": H,
              "num_frames": 9, "fps": 24.0, "steps": 20, "video_guidance": 3.0, "audio_guidance": 7.0}  # fmt: skip
    out = tmp_path / "meta.mp4"
    write_mp4(out, [_frames(9)], None, None, 24, 1, mp4_metadata(fields, "ltx-2-19b-dev"), overwrite=False)
    tags = probe_mp4(out).metadata
    assert tags["title"] == prompt[:80]
    assert json.loads(tags["comment"]) == {
        **fields,
        "model_version": "ltx-2-19b-dev",
        "ltx2_edge_version": ltx2_edge.__version__,
    }
    assert tags["ltx2_edge"] == ltx2_edge.__version__


def test_video_only_writer_has_no_audio_stream(tmp_path):
    out = tmp_path / "silent.mp4"
    stats = write_mp4(out, [_frames(5)], None, None, 24, 1, {}, overwrite=False)
    probe = probe_mp4(out)
    assert (probe.frames, probe.audio_codec, stats.audio_samples) == (5, None, 0)


def test_bad_writer_settings_are_request_errors(tmp_path):
    with pytest.raises(RequestError) as err:
        Mp4Writer(tmp_path / "a.mp4", width=W, height=H, fps=24, audio_sample_rate=SR, audio_channels=3, metadata={})
    assert err.value.field == "--audio-channels"
    with pytest.raises(RequestError) as err:
        Mp4Writer(tmp_path / "c.mp4", width=W, height=H, fps=24, audio_sample_rate=12345, audio_channels=1, metadata={})
    assert err.value.field == "--audio-sample-rate"
    with pytest.raises(RequestError, match="even"):
        Mp4Writer(tmp_path / "b.mp4", width=95, height=H, fps=24, audio_sample_rate=SR, audio_channels=1, metadata={})
    assert list(tmp_path.iterdir()) == []


def test_synchronous_writer_failure_deletes_file(tmp_path):
    writer = Mp4Writer(
        tmp_path / "s.mp4", width=W, height=H, fps=24, audio_sample_rate=SR, audio_channels=1, metadata={}
    )
    writer.write_frames(_frames(2))
    with pytest.raises(ValueError, match=r"expected float \[1\|2, N\]"):
        writer.write_audio(np.zeros((3, 100), np.float32))
    assert list(tmp_path.iterdir()) == []


def test_missing_encoder_is_named():
    require_encoders()  # the installed wheel has both
    with pytest.raises(EncoderMissingError, match="no encoder no_such_encoder"):
        require_encoders(["libx264", "no_such_encoder"])


def test_mux_re_exports_the_moved_names():
    # The pipeline and the end-to-end tests import these from the mux stage: they must be the same objects.
    for name in ("Mp4Probe", "probe_mp4", "fps_fraction", "mp4_metadata"):
        assert getattr(mux, name) is getattr(mp4_probe, name)
    assert mux.EncoderMissingError is EncoderMissingError
