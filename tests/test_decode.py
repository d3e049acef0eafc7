"""Overlapped audio + video decode (stages/decode.py) and tiled video decode, on the tiny checkpoint's decoders."""

from __future__ import annotations

import contextlib
import threading
from pathlib import Path

import pytest
import torch
from ltx_core.model.video_vae import SpatialTilingConfig, TemporalTilingConfig, TilingConfig
from ltx_core.types import AudioLatentShape, VideoLatentShape

from ltx2_edge.checkpoint.configs import ltx2_config
from ltx2_edge.models.loaders import load_audio_decoder, load_video_decoder, load_vocoder
from ltx2_edge.stages.decode import ChunkMeter, decode_overlapped
from ltx2_edge.stages.decode_audio import decode_audio
from ltx2_edge.stages.decode_video import decode_video, video_chunk_frames
from ltx2_edge.stages.latents import VIDEO_LATENT_CHANNELS, VIDEO_SCALE_FACTORS, pixel_shape

CPU = torch.device("cpu")
# 128 px wide, 64 high, 33 frames: latent 5 x 2 x 4. 64 px tiles with 32 px overlap give three spatial tiles
# across (borders at x = 32, 64, 96) and 16-frame tiles with 8 frames of overlap several temporal ones.
SHAPE = pixel_shape(width=128, height=64, num_frames=33, frame_rate=24.0)
TILED = TilingConfig(SpatialTilingConfig(64, 32), TemporalTilingConfig(16, 8))
HARD_CUT = TilingConfig(SpatialTilingConfig(64, 0), TemporalTilingConfig(16, 0))  # same tiles, no blending
# Borders both tilings share: x = 64 (columns 63 | 64) and frames 8 and 24 (HARD_CUT's tiles start at 8 and 24).
BORDER_COLUMNS, BORDER_FRAMES = [63, 64], [8, 24]


@pytest.fixture(scope="module")
def decoders(tiny_dir: Path):
    ckpt = tiny_dir / "ltx2.safetensors"
    return (load_video_decoder(ckpt, CPU, torch.float32), load_audio_decoder(ckpt, CPU, torch.float32),
            load_vocoder(ckpt, CPU, torch.float32))  # fmt: skip


@pytest.fixture(scope="module")
def latents() -> tuple[torch.Tensor, torch.Tensor]:
    """Unpatchified latents of SHAPE, as the pipeline hands them to the decoders: video [1, 128, f, h, w]."""
    g = torch.Generator().manual_seed(0)
    video = VideoLatentShape.from_pixel_shape(SHAPE, VIDEO_LATENT_CHANNELS, VIDEO_SCALE_FACTORS)
    audio = AudioLatentShape.from_video_pixel_shape(SHAPE)
    return torch.randn(video.to_torch_shape(), generator=g), torch.randn(audio.to_torch_shape(), generator=g)


def _video(latent: torch.Tensor, decoder, tiling: TilingConfig | None) -> torch.Tensor:
    return torch.cat(list(decode_video(latent, decoder, None, tiling))).float()


def _psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(10 * torch.log10(255.0**2 / ((a - b) ** 2).mean()))


@pytest.mark.parametrize("tiling", [None, TILED], ids=["untiled", "tiled"])
def test_overlapped_equals_sequential(decoders, latents, tiling) -> None:
    vdec, adec, voc = decoders
    video, audio = latents
    want_wave, want_rate = decode_audio(audio, adec, voc)
    want_chunks = list(decode_video(video, vdec, None, tiling))
    chunks, future = decode_overlapped(video, vdec, None, tiling, audio, adec, voc)
    got_chunks = list(chunks)
    wave, rate, seconds, hidden, after = future.result()
    assert future.sample_rate == rate  # announced before the decode ended, for the MP4 writer
    assert len(got_chunks) == len(want_chunks) == (1 if tiling is None else 3)
    assert all(torch.equal(g, w) for g, w in zip(got_chunks, want_chunks, strict=True))
    assert all(c.device == CPU and c.dtype == torch.uint8 and c.shape[0] > 0 for c in got_chunks)
    assert sum(c.shape[0] for c in got_chunks) == SHAPE.frames
    assert torch.equal(wave, want_wave) and wave.dtype == torch.float32 and rate == want_rate == 24000
    # The video was pulled at once, while the vocoder (~0.15 s here) was still running: some audio is hidden.
    assert seconds > 0 and 0 < hidden <= seconds + 1e-6


def test_tiled_matches_untiled_and_has_no_seams(decoders) -> None:
    """Tiled vs untiled on a latent constant over space and time, so tile edges are the only difference.

    With random weights the tiny VAE's receptive field (about 3 latent cells) is wider than its 2-cell tiles,
    so on a random latent every pixel depends on where its tile ends (measured: PSNR 16-18 dB, blended or
    not): no tolerance there says anything. On a constant latent what remains is each tile's edge padding,
    which the overlap blend must hide. Measured over seeds 0-5: blended 31.5-32.7 dB, max 36-54 levels, border
    diff 0.85-1.12x the mean; hard cuts 21.4-22.4 dB, max 158-229, border diff 2-2.8x. Bounds sit between.
    """
    vdec = decoders[0]
    g = torch.Generator().manual_seed(1)
    channels = torch.randn(1, VIDEO_LATENT_CHANNELS, 1, 1, 1, generator=g)
    latent = channels.expand(VideoLatentShape.from_pixel_shape(SHAPE, VIDEO_LATENT_CHANNELS).to_torch_shape())
    latent = latent.contiguous()
    full = _video(latent, vdec, None)
    blended, hard = _video(latent, vdec, TILED), _video(latent, vdec, HARD_CUT)
    assert blended.shape == hard.shape == full.shape == (SHAPE.frames, SHAPE.height, SHAPE.width, 3)

    diff, hard_diff = (blended - full).abs(), (hard - full).abs()
    assert _psnr(blended, full) >= 30.0 and diff.max() <= 64
    assert _psnr(hard, full) < 25.0 and hard_diff.max() > 128  # the bounds would catch a tiling that stopped blending

    def seams(d: torch.Tensor) -> tuple[float, float]:
        """Mean diff on the border columns and border frames, each over the mean diff of the whole clip."""
        per_column, per_frame = d.mean(dim=(0, 1, 3)), d.mean(dim=(1, 2, 3))
        return float(per_column[BORDER_COLUMNS].mean() / d.mean()), float(per_frame[BORDER_FRAMES].mean() / d.mean())

    columns, frames = seams(diff)
    assert columns < 1.3 and frames < 1.4
    hard_columns, hard_frames = seams(hard_diff)
    assert hard_columns > 2.0 and hard_frames > 1.7  # a hard cut does show up at the borders


def _threads_after(start: int) -> int:
    """Threads alive now beyond ``start`` (the worker is joined, not left to exit later, so no waiting here)."""
    return threading.active_count() - start


def test_audio_exception_reaches_caller_and_no_thread_remains(decoders, latents, monkeypatch) -> None:
    vdec, adec, voc = decoders
    video, audio = latents
    start = threading.active_count()

    def boom(*args: object, **kwargs: object) -> torch.Tensor:
        raise RuntimeError("vocoder failed on purpose")

    monkeypatch.setattr(voc, "forward", boom)
    chunks, future = decode_overlapped(video, vdec, None, TILED, audio, adec, voc)
    with pytest.raises(RuntimeError, match="vocoder failed on purpose"):
        list(chunks)  # the video finishes (or stops) and then reports the audio's failure
    with pytest.raises(RuntimeError, match="vocoder failed on purpose"):
        future.result()
    assert future.done()
    assert _threads_after(start) == 0


def test_consumer_stopping_early_leaves_no_thread(decoders, latents) -> None:
    vdec, adec, voc = decoders
    video, audio = latents
    start = threading.active_count()
    chunks, future = decode_overlapped(video, vdec, None, TILED, audio, adec, voc)
    first = next(chunks)
    assert first.shape[0] > 0
    chunks.close()  # the consumer stops after one chunk
    assert _threads_after(start) == 0
    assert torch.equal(future.result().waveform, decode_audio(audio, adec, voc)[0])  # audio is still whole

    # A consumer that raises: contextlib.closing stops the iterator the same way.
    chunks, future = decode_overlapped(video, vdec, None, TILED, audio, adec, voc)
    with pytest.raises(KeyError), contextlib.closing(chunks):
        for _ in chunks:
            raise KeyError("writer failed")
    assert _threads_after(start) == 0
    assert future.result().sample_rate == 24000


@pytest.mark.parametrize("latent_frames", [5, 13, 31])
@pytest.mark.parametrize(
    "tiling",
    [None, TilingConfig(None, TemporalTilingConfig(16, 8)), TilingConfig(SpatialTilingConfig(64, 32),
     TemporalTilingConfig(24, 8)), TilingConfig(None, TemporalTilingConfig(64, 24))],
    ids=["untiled", "16-8", "space+24-8", "64-24"],
)  # fmt: skip
def test_chunk_frames_are_known_before_decoding(latent_frames, tiling) -> None:
    """The progress total (chunks and their frames) equals what the decoder yields; shapes only, on meta."""
    from ltx_core.model.video_vae import VideoDecoderConfigurator

    with torch.device("meta"):
        decoder = VideoDecoderConfigurator.from_config(ltx2_config("tiny"))
    latent = torch.empty(1, VIDEO_LATENT_CHANNELS, latent_frames, 2, 3, device="meta")
    got = [c.shape[0] for c in decode_video(latent, decoder, None, tiling)]
    assert video_chunk_frames(latent, tiling) == got
    assert sum(got) == 8 * (latent_frames - 1) + 1


def test_chunk_meter_times_chunks_and_reports_progress(decoders, latents) -> None:
    vdec, adec, voc = decoders
    video, audio = latents
    lines: list[str] = []
    chunks, future = decode_overlapped(video, vdec, None, TILED, audio, adec, voc)
    meter = ChunkMeter(chunks, video_chunk_frames(video, TILED), lines.append)
    frames = [c.shape[0] for c in meter]
    assert frames == [8, 8, 17] and (meter.chunks, meter.frames) == (3, 33)
    assert lines[0].startswith("video chunk 1/3: 8/33 frames") and lines[-1].startswith("video chunk 3/3: 33/33")
    assert lines[-1].endswith("ETA 0.0 s") and len(lines) == 3
    assert meter.seconds > 0 and meter.finished_at is not None
    result = future.result()
    # The audio either overlapped the video or ran on after it: together they cover its whole decode.
    assert result.hidden_seconds + result.after_video_seconds <= result.seconds + 1e-6
