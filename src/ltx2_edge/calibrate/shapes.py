"""The shapes ``calibrate`` times: one transformer block's GEMMs and the video decoder's convolutions at W1.

The planner divides each kernel class's FLOPs by one rate (``plan.stage_fit.FitContext.seconds``), so the rate
that predicts best is the FLOP-weighted one over the shapes a run really has: every Linear of a block at its own
token count (``plan.flops.transformer_rows``: video, audio or text tokens, times the guidance batch), split into
the 8-bit ones and the bf16 keep-list (``quant.policy``); every 3x3x3 convolution of the decoder at W1's latent
(``plan.activations.video_decoder_levels``). Pure arithmetic over the checkpoint's config; never imports torch.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

from ltx2_edge.plan.activations import TokenCounts, token_counts, video_decoder_levels
from ltx2_edge.plan.flops import block_linear_shapes, transformer_rows
from ltx2_edge.plan.planner import default_is_quantized

# The reference workload W1 (docs/benchmarks.md): 512x288, 97 frames at 24 fps, CFG = 2 passes in one forward.
W1 = {"width": 512, "height": 288, "num_frames": 97, "frame_rate": 24.0}
W1_BATCH = 2
_BLOCK = "model.diffusion_model.transformer_blocks.0."


@dataclass(frozen=True)
class Gemm:
    """``count`` GEMMs of ``[m, k] x [k, n]`` per block; ``quantized``: 8-bit under the default policy."""

    m: int
    k: int
    n: int
    count: int
    quantized: bool

    @property
    def flops(self) -> float:
        return 2.0 * self.m * self.k * self.n * self.count


@dataclass(frozen=True)
class Conv:
    """``count`` 3x3x3 convolutions ``c_in -> c_out`` over ``frames x height x width`` voxels (one W1 decode)."""

    c_in: int
    c_out: int
    frames: int
    height: int
    width: int
    count: int

    @property
    def flops(self) -> float:
        return 2.0 * 27 * self.c_in * self.c_out * self.frames * self.height * self.width * self.count


def w1_tokens(config: dict[str, Any]) -> TokenCounts:
    """W1's token counts for this model (video 1872, audio 101, text 1024 for LTX-2 19B)."""
    return token_counts(config, **W1)  # type: ignore[arg-type]


def block_linears(config: dict[str, Any]) -> dict[str, tuple[int, int]]:
    """Block 0's Linear weights by file name -> ``(out_features, in_features)``, as ltx-core's
    ``BasicAVTransformerBlock`` builds them from ``config["transformer"]`` (``plan.flops.block_linear_shapes``;
    ``tests/test_calibrate.py`` checks this against the checkpoint layout)."""
    return {_BLOCK + name: shape for name, shape in block_linear_shapes(config).items()}


def gemm_shapes(config: dict[str, Any], tokens: TokenCounts, batch: int = W1_BATCH) -> list[Gemm]:
    """One block's GEMMs at ``tokens`` x ``batch`` rows, merged by shape (largest FLOPs first)."""
    rows = transformer_rows(tokens)
    counted: Counter[tuple[int, int, int, bool]] = Counter()
    for name, (n, k) in block_linears(config).items():
        m = batch * rows(name.removeprefix("model.diffusion_model."))
        counted[(m, k, n, default_is_quantized(name))] += 1
    shapes = [Gemm(m, k, n, count, q) for (m, k, n, q), count in counted.items()]
    return sorted(shapes, key=lambda g: -g.flops)


def conv_shapes(config: dict[str, Any], tokens: TokenCounts) -> list[Conv]:
    """The video decoder's 3x3x3 convolutions over W1's latent: each level's ResNet convs and its upsampling conv."""
    vae = config["vae"]
    levels = video_decoder_levels(vae, tokens.latent_frames, tokens.latent_height, tokens.latent_width)
    shapes = []
    for lv in levels:
        if lv.res_convs:
            shapes.append(Conv(lv.channels, lv.channels, lv.frames, lv.height, lv.width, lv.res_convs))
        if lv.up_convs_to:
            shapes.append(Conv(lv.channels, lv.up_convs_to, lv.frames, lv.height, lv.width, 1))
    return shapes
