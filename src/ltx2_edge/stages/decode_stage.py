"""The decode stage as a run performs it: decoded video chunks and the audio future into one MP4, and its record.

``decode.decode_overlapped`` makes the chunks and the audio future; this pulls the chunks through a progress
meter into ``mux.write_mp4`` (H.264 on the writer thread while the next chunk decodes), hands the waveform to the
writer when its decode is done, and reports what overlapped with what. The MP4 is written atomically: a failure
in either decode or in the writer leaves no file and no temporary. It never loads or frees a decoder (the caller
owns them) and never changes a frame or a sample.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Generator, Mapping
from dataclasses import asdict
from pathlib import Path

import torch
from ltx_core.model.video_vae import TilingConfig

from ltx2_edge.mp4.mux import VIDEO_ENCODER, LateAudio, MuxStats, write_mp4
from ltx2_edge.plan.tile_plan import VideoTiling
from ltx2_edge.stages.decode import AudioFuture, ChunkMeter
from ltx2_edge.stages.decode_video import video_chunk_frames


def decode_to_mp4(
    chunks: Generator[torch.Tensor, None, None], audio: AudioFuture, video_latent: torch.Tensor,
    tiling: TilingConfig | None, tiles: VideoTiling | None, frame_rate: float, audio_channels: int,
    output_path: Path, metadata: Mapping[str, str], overwrite: bool, on_line: Callable[[str], None], details: dict,
    video_encoder: str = VIDEO_ENCODER,
) -> MuxStats:  # fmt: skip
    """Encode ``chunks`` and ``audio`` into ``output_path`` with ``video_encoder`` (``mp4.video_encoders``);
    ``details`` gets video, audio, hidden-audio and encode seconds, the tiles and the audio format, with what the
    writer wrote (the video encoder that ran included)."""
    meter = ChunkMeter(chunks, video_chunk_frames(video_latent, tiling), on_line)
    waveform = LateAudio(get=lambda: audio.result().waveform, ready=audio.done)
    with contextlib.closing(chunks):
        stats = write_mp4(output_path, meter, waveform, audio.sample_rate, frame_rate, audio_channels, metadata,
                          overwrite, video_encoder=video_encoder)  # fmt: skip
    ended = time.perf_counter()
    result = audio.result()
    details.update(
        video_decode_seconds=round(meter.seconds, 4), audio_decode_seconds=round(result.seconds, 4),
        audio_hidden_seconds=round(result.hidden_seconds, 4),
        audio_after_video_seconds=round(result.after_video_seconds, 4),
        # Encoding not hidden behind the decode: the writer thread finishing the queued frames and the audio.
        # (finished_at is set: write_mp4 pulls the chunks until they run out.)
        encode_after_decode_seconds=round(ended - meter.finished_at, 4),  # type: ignore[operator]
        tiles=tiles.tiles if tiles is not None else 1, tiling=tiles.describe() if tiles is not None else "untiled",
        video_chunks=meter.chunks, sample_rate=result.sample_rate, channels=audio_channels,
        source_channels=int(result.waveform.shape[0]), source_samples=int(result.waveform.shape[1]),
        **asdict(stats),
    )  # fmt: skip
    return stats
