"""The pipeline's decode stage (``Generator.decode_into``): overlapped decode + streaming MP4 on the tiny model.

One denoising run gives the latents; each test decodes them. The serial path (``decode_audio`` then
``decode_video``) is the reference: the stage must feed the writer the same frames and samples, bit for bit.
"""

from __future__ import annotations

import gc
import io
import threading
import weakref
from dataclasses import replace
from pathlib import Path

import av
import numpy as np
import pytest
import torch

from conftest import track_loaded_modules
from ltx2_edge.mp4 import encoder as mp4_encoder
from ltx2_edge.mp4.mux import probe_mp4, write_mp4
from ltx2_edge.pipeline import Generator
from ltx2_edge.plan.tile_plan import plan_tiling
from ltx2_edge.progress import Progress
from ltx2_edge.request import GenerationRequest
from ltx2_edge.stages import decode as decode_module
from ltx2_edge.stages import decode_stage

# 128 x 64 px, 33 frames: latent 5 x 2 x 4, so 64 px / 16-frame tiles cut it in space and time (3 chunks).
REQUEST = GenerationRequest(prompt="surf on a reef", width=128, height=64, num_frames=33, num_inference_steps=2)


@pytest.fixture(scope="module")
def run(tiny_dir: Path):
    """A generator, its plan for REQUEST, a tiled variant of the plan, and the final latents of one denoise."""
    stream = io.StringIO()
    gen = Generator(tiny_dir / "ltx2.safetensors", tiny_dir / "gemma", progress=Progress(stream))
    run_plan = gen.prepare(REQUEST)
    plan = run_plan.memory
    latents, _ = gen.runner.denoise(run_plan.passes[0], REQUEST.seed, gen.runner.encode_text(run_plan)[0])
    tiles = plan_tiling(gen.setup.checkpoint.config["vae"], 5, 2, 4, (64, 32), (16, 8))
    tiled = replace(plan, stages=tuple(replace(s, tiles=tiles) if s.name == "decode" else s for s in plan.stages))
    return gen, plan, tiled, latents, stream


def _decode_into(gen, latents, request, path, plan):
    return gen.decoders.decode_into(latents, plan, request.frame_rate, request.audio_channels, path, {})


def _deterministic_x264(monkeypatch) -> None:
    # x264 with lookahead/mbtree off is bit-reproducible, so two encodes of the same frames decode the same.
    monkeypatch.setattr(
        mp4_encoder, "X264_OPTIONS", {**mp4_encoder.X264_OPTIONS, "x264-params": "rc-lookahead=0:mbtree=0"}
    )


def _decode_mp4(path: Path) -> tuple[np.ndarray, np.ndarray]:
    with av.open(str(path)) as c:
        video = np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)])
    with av.open(str(path)) as c:
        audio = np.concatenate([f.to_ndarray() for f in c.decode(audio=0)], axis=1)
    return video, audio


@pytest.mark.parametrize("tiled", [False, True], ids=["untiled", "tiled"])
@pytest.mark.parametrize("channels", [2, 1])
def test_stage_output_equals_the_serial_path(run, tmp_path, monkeypatch, tiled, channels):
    gen, plan, tiled_plan, latents, stream = run
    plan = tiled_plan if tiled else plan
    _deterministic_x264(monkeypatch)
    fed: dict[str, object] = {}
    real_write = decode_stage.write_mp4

    def recording(path, frames, waveform, *args, **kwargs):
        chunks = []

        def tee():
            for chunk in frames:
                chunks.append(chunk)
                yield chunk

        fed["chunks"] = chunks
        real_get = waveform.get
        waveform = replace(waveform, get=lambda: fed.setdefault("waveform", real_get()))
        return real_write(path, tee(), waveform, *args, **kwargs)

    monkeypatch.setattr(decode_stage, "write_mp4", recording)
    request = replace(REQUEST, audio_channels=channels)
    state = latents.generator.get_state()
    stream.seek(0)
    stream.truncate(0)
    stats, details = _decode_into(gen, latents, request, tmp_path / "stage.mp4", plan)

    latents.generator.set_state(state)
    want_chunks = list(gen.decoders.decode_video(latents, plan))
    want_wave, want_rate = gen.decoders.decode_audio(latents)
    got_chunks = fed["chunks"]
    assert len(got_chunks) == len(want_chunks) == (3 if tiled else 1)
    assert all(torch.equal(g, w) for g, w in zip(got_chunks, want_chunks, strict=True))
    assert torch.equal(fed["waveform"], want_wave) and want_rate == details["sample_rate"] == 24000

    # The files decode to the same frames and samples as a one-shot write of the serial path's output.
    write_mp4(tmp_path / "serial.mp4", want_chunks, want_wave, want_rate, request.frame_rate, channels, {}, False)
    (video_a, audio_a), (video_b, audio_b) = _decode_mp4(tmp_path / "stage.mp4"), _decode_mp4(tmp_path / "serial.mp4")
    assert video_a.shape == (33, 64, 128, 3) and np.array_equal(video_a, video_b)
    assert audio_a.shape[0] == channels and np.array_equal(audio_a, audio_b)
    probe = probe_mp4(tmp_path / "stage.mp4")
    assert (probe.frames, probe.channels, probe.sample_rate) == (33, channels, 24000)
    assert abs(probe.audio_duration_s - probe.video_duration_s) <= 1 / 24

    assert (stats.frames, stats.audio_samples) == (33, 33000)
    assert (details["video_chunks"], details["tiles"]) == ((3, 12) if tiled else (1, 1))
    assert (details["channels"], details["source_channels"], details["source_samples"]) == (
        channels, 2, want_wave.shape[1],
    )  # fmt: skip
    assert details["video_decode_seconds"] > 0 and details["audio_decode_seconds"] > 0
    hidden, after = details["audio_hidden_seconds"], details["audio_after_video_seconds"]
    assert hidden >= 0 and after >= 0 and hidden + after <= details["audio_decode_seconds"] + 1e-3
    lines = [line for line in stream.getvalue().splitlines() if "video chunk" in line]
    total = 3 if tiled else 1
    assert len(lines) == total and lines[-1].startswith(f"[decode] video chunk {total}/{total}: 33/33 frames")


def _threads() -> set[str]:
    return {t.name for t in threading.enumerate()}


def _track_decoders(monkeypatch) -> list[weakref.ref]:
    return track_loaded_modules(monkeypatch, ("load_video_decoder", "load_audio_decoder", "load_vocoder"))


def test_audio_worker_failure_leaves_no_mp4_no_temp_no_thread(run, tmp_path, monkeypatch):
    gen, _, tiled_plan, latents, _ = run
    before = _threads()
    refs = _track_decoders(monkeypatch)

    def failing(*_a, **_k):
        raise RuntimeError("vocoder failed on purpose")

    monkeypatch.setattr(decode_module, "decode_audio", failing)  # what the CPU worker runs
    with pytest.raises(RuntimeError, match="vocoder failed on purpose"):
        _decode_into(gen, latents, REQUEST, tmp_path / "x.mp4", tiled_plan)
    assert list(tmp_path.iterdir()) == []
    assert _threads() <= before
    gc.collect()
    assert len(refs) == 3 and all(r() is None for r in refs)  # the decoders were released all the same


def test_writer_failure_leaves_no_mp4_no_temp_no_thread(run, tmp_path, monkeypatch):
    gen, _, tiled_plan, latents, _ = run
    before = _threads()
    refs = _track_decoders(monkeypatch)
    real = mp4_encoder.Mp4Encoder.write_frames
    calls: list[str] = []

    def failing(self, frames):
        calls.append(threading.current_thread().name)
        if len(calls) == 2:
            raise OSError("disk full (simulated)")
        return real(self, frames)

    monkeypatch.setattr(mp4_encoder.Mp4Encoder, "write_frames", failing)
    with pytest.raises(OSError, match="disk full"):
        _decode_into(gen, latents, REQUEST, tmp_path / "x.mp4", tiled_plan)
    assert calls[1] == "ltx2-edge-mp4-writer"  # it failed on the writer thread, not the caller's
    assert list(tmp_path.iterdir()) == []
    assert _threads() <= before
    gc.collect()
    assert len(refs) == 3 and all(r() is None for r in refs)
