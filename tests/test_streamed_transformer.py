"""The transformer with streamed blocks equals the resident one bit for bit, from pinned memory and the file."""

from __future__ import annotations

import pytest
import torch

from ltx2_edge import cli
from ltx2_edge.errors import RequestError
from ltx2_edge.guidance import Guidance
from ltx2_edge.models.loaders import load_transformer
from ltx2_edge.models.streamed_transformer import load_streamed_transformer
from ltx2_edge.quant.policy import QuantPolicy
from ltx2_edge.stages.denoise import Contexts, denoise, official_sigmas
from ltx2_edge.stages.latents import final_latents, noised_latents, pixel_shape

CPU = torch.device("cpu")


def _run(transformer, config, dtype=torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(3)
    width = config["transformer"]["caption_channels"]
    ctx = Contexts(*(torch.randn(1, 1024, width, generator=g).to(dtype) for _ in range(4)))
    setup = noised_latents(pixel_shape(64, 64, 9, 24.0), torch.Generator().manual_seed(10), CPU, dtype)
    v, a = denoise(transformer, setup.video_state, setup.audio_state, official_sigmas(3, CPU), ctx,
                   Guidance.preset_named("cfg"))  # fmt: skip
    return final_latents(setup, v, a)


@pytest.mark.parametrize("precision", ["bf16", "int8"])
def test_pinned_streaming_equals_resident(precision, tiny_dir, tiny_config):
    ckpt = tiny_dir / "ltx2.safetensors"
    policy = QuantPolicy.from_flags(precision)
    resident = load_transformer(ckpt, CPU, torch.float32, None if precision == "bf16" else policy)
    streamed, streamer = load_streamed_transformer(ckpt, CPU, torch.float32, policy, 1, "pinned", prefetch=2)
    with streamer:
        ref_v, ref_a = _run(resident, tiny_config)
        out_v, out_a = _run(streamed, tiny_config)
        stats = streamer.stats()
    assert torch.equal(out_v, ref_v) and torch.equal(out_a, ref_a)
    # One batched forward per step: the one streamed block crosses once per step, 3 steps.
    assert stats.copies == 3 and stats.bytes_streamed == 3 * stats.slot_bytes > 0


def test_a_streamed_load_opens_one_reader(tiny_dir, monkeypatch):
    """Every block of a pinned load reads through one reader: each new one pins its own staging buffers, which cost
    more than the block's own reading on a lent H200."""
    from ltx2_edge.streaming import tensor_reader

    opened = []
    real_init = tensor_reader.TensorReader.__init__

    def counting_init(self, *args, **kwargs):
        opened.append(1)
        real_init(self, *args, **kwargs)

    monkeypatch.setattr(tensor_reader.TensorReader, "__init__", counting_init)
    from ltx2_edge.checkpoint.header import read_config
    from ltx2_edge.models.loaders import build_transformer_meta, transformer_key_map
    from ltx2_edge.models.streamed_blocks import load_streamed
    from ltx2_edge.models.streamed_transformer import TRANSFORMER_BLOCKS

    ckpt = tiny_dir / "ltx2.safetensors"
    model = build_transformer_meta(read_config(ckpt)).velocity_model
    times: dict[str, float] = {}
    _, streamer = load_streamed(model, TRANSFORMER_BLOCKS, [ckpt], transformer_key_map(), CPU, torch.float32,
                                QuantPolicy.from_flags("int8"), 0, "pinned", 2, times=times)  # fmt: skip
    with streamer:
        assert len(streamer.streamed) >= 2
    assert len(opened) == 1
    # The load's parts, as calibrate times the pinning by them.
    assert set(times) == {"resident_s", "buffer_wait_s", "pack_s"} and all(v >= 0 for v in times.values())


def test_file_streaming_needs_a_prequantized_checkpoint(tiny_dir, tiny_config, tmp_path):
    ckpt, bf16 = tiny_dir / "ltx2.safetensors", torch.bfloat16
    with pytest.raises(RequestError, match="ltx2-edge quantize"):
        load_streamed_transformer(ckpt, CPU, bf16, QuantPolicy.from_flags("int8"), 1, "file", prefetch=2)
    quantized = tmp_path / "q.safetensors"
    assert cli.main(["quantize", "--checkpoint-path", str(ckpt), "--to", "int8", "--out", str(quantized)]) == 0
    policy = QuantPolicy.from_flags("int8")
    with pytest.raises(RequestError, match="dtype"):  # the file's bytes are bf16: a float32 run cannot stream them
        load_streamed_transformer(quantized, CPU, torch.float32, policy, 1, "file", prefetch=2)
    resident = load_transformer(quantized, CPU, bf16, policy)
    streamed, streamer = load_streamed_transformer(quantized, CPU, bf16, policy, 1, "file", prefetch=2)
    with streamer:
        for a, b in zip(_run(resident, tiny_config, bf16), _run(streamed, tiny_config, bf16), strict=True):
            assert torch.equal(a, b)
