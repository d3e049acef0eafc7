"""Sequence parallel (DeepSpeed-Ulysses) for one transformer forward: video tokens split across ranks, audio
tokens replicated, through ltx-core's own classes (the model is not rewritten).

ltx-core's ``Attention`` calls ``self.attention_function(q, k, v, heads, mask)`` after its projections, norms and
RoPE, and every other part of a block (AdaLN, feed-forwards, text cross-attention, the preprocessor's per-token
RoPE and timestep embeddings, the output projection, ``X0Model``'s denoise) works token by token. So with each
rank holding a contiguous slice of the video tokens, only two attentions need the other ranks, and both are fixed
by swapping that one attribute (``sequence_sharded``):
- ``attn1`` (video self-attention): ``UlyssesAttention``. An all-to-all turns [B, T/w, H*D] (this rank's tokens,
  all heads) into [B, T, H/w*D] (all tokens, this rank's heads), the original function attends, a second
  all-to-all turns the result back. Needs H divisible by w (32 heads in LTX-2 19B: 2, 4 or 8 ranks).
- ``video_to_audio_attn`` (audio queries over video keys): ``GatheredKeys`` all-gathers the video keys and values
  (the audio queries are on every rank), so every rank computes the same audio update.
``audio_to_video_attn`` (video queries over audio keys) and the text cross-attentions need nothing: their keys are
on every rank. Audio self-attention and the audio feed-forwards run whole on every rank (W1's 101 audio tokens
against 1872 video tokens). Deterministic kernels then keep the audio stream bit-identical across ranks.

Not handled (refused): a video self-attention mask (keyframe conditioning with attention strength), and a video
token count that the ranks do not divide. This module decides nothing about when it pays
(``bench/sequence_parallel.py`` measures it).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace

import torch
import torch.distributed as dist
from ltx_core.guidance.perturbations import BatchedPerturbationConfig
from ltx_core.model.transformer import Modality
from ltx_core.model.transformer.attention import AttentionCallable


class UlyssesAttention:
    """``attention_function`` for self-attention over a token axis sharded in rank order over ``group``."""

    def __init__(self, inner: AttentionCallable, world_size: int, group: dist.ProcessGroup | None = None) -> None:
        self.inner, self.world, self.group = inner, world_size, group

    def __call__(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int, mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        if mask is not None:
            raise ValueError("sequence parallel attention takes no self-attention mask (keyframe attention strength)")
        if heads % self.world:
            raise ValueError(f"{heads} attention heads do not split over {self.world} ranks")
        local = heads // self.world
        q, k, v = (self._tokens_to_heads(t, heads) for t in (q, k, v))
        return self._heads_to_tokens(self.inner(q, k, v, local, None))

    def _tokens_to_heads(self, t: torch.Tensor, heads: int) -> torch.Tensor:
        b, tokens, width = t.shape
        w, d = self.world, width // heads
        # Chunk j (head group j of this rank's tokens) goes to rank j; chunk j received is rank j's tokens.
        send = t.reshape(b, tokens, w, heads // w, d).permute(2, 0, 1, 3, 4).contiguous()
        got = torch.empty_like(send)
        dist.all_to_all_single(got, send, group=self.group)
        return got.permute(1, 0, 2, 3, 4).reshape(b, w * tokens, (heads // w) * d)

    def _heads_to_tokens(self, out: torch.Tensor) -> torch.Tensor:
        b, tokens, width = out.shape
        w = self.world
        send = out.reshape(b, w, tokens // w, width).permute(1, 0, 2, 3).contiguous()  # chunk j: rank j's tokens
        got = torch.empty_like(send)
        dist.all_to_all_single(got, send, group=self.group)  # chunk j: head group j, this rank's tokens
        return got.permute(1, 2, 0, 3).reshape(b, tokens // w, w * width)


class GatheredKeys:
    """``attention_function`` for queries every rank holds over keys/values sharded in rank order."""

    def __init__(self, inner: AttentionCallable, world_size: int, group: dist.ProcessGroup | None = None) -> None:
        self.inner, self.world, self.group = inner, world_size, group

    def __call__(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int, mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        return self.inner(q, gather_tokens(k, self.world, self.group), gather_tokens(v, self.world, self.group),
                          heads, mask)  # fmt: skip


def gather_tokens(t: torch.Tensor, world_size: int, group: dist.ProcessGroup | None = None) -> torch.Tensor:
    """Every rank's slice of the token axis (dim 1), in rank order."""
    parts = [torch.empty_like(t) for _ in range(world_size)]
    dist.all_gather(parts, t.contiguous(), group=group)
    return torch.cat(parts, dim=1)


def shard_video(video: Modality, rank: int, world_size: int) -> Modality:
    """This rank's contiguous slice of the video tokens (latent, per-token timesteps, positions)."""
    tokens = video.latent.shape[1]
    if tokens % world_size:
        raise ValueError(f"{tokens} video tokens do not split over {world_size} ranks")
    if video.attention_mask is not None:
        raise ValueError("sequence parallel takes no video self-attention mask (keyframe attention strength)")
    n = tokens // world_size
    cut = slice(rank * n, (rank + 1) * n)
    return replace(video, latent=video.latent[:, cut], timesteps=video.timesteps[:, cut],
                   positions=video.positions[:, :, cut])  # fmt: skip


def _blocks(transformer: torch.nn.Module) -> list[torch.nn.Module]:
    model = getattr(transformer, "velocity_model", transformer)
    return list(model.transformer_blocks)


@contextmanager
def sequence_sharded(transformer: torch.nn.Module, world_size: int,
                     group: dist.ProcessGroup | None = None) -> Iterator[None]:  # fmt: skip
    """Inside the block, ``transformer``'s blocks expect this rank's video tokens (``shard_video``); after it,
    every block has its own attention functions back."""
    swapped = []
    for block in _blocks(transformer):
        for name, kind in (("attn1", UlyssesAttention), ("video_to_audio_attn", GatheredKeys)):
            attn = getattr(block, name)
            swapped.append((attn, attn.attention_function))
            attn.attention_function = kind(attn.attention_function, world_size, group)
    try:
        yield
    finally:
        for attn, original in swapped:
            attn.attention_function = original


def sharded_forward(
    transformer: torch.nn.Module,
    video: Modality,
    audio: Modality,
    perturbations: BatchedPerturbationConfig,
    rank: int,
    world_size: int,
    group: dist.ProcessGroup | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One forward with the video tokens split over the ranks: the whole denoised video (gathered) and audio,
    the same on every rank. ``video`` and ``audio`` are the whole inputs, as a single-device forward takes them."""
    with sequence_sharded(transformer, world_size, group):
        out_v, out_a = transformer(video=shard_video(video, rank, world_size), audio=audio,
                                   perturbations=perturbations)  # fmt: skip
    return gather_tokens(out_v, world_size, group), out_a


class SequenceParallel(torch.nn.Module):
    """``transformer`` behind the same call, its video tokens split over the ranks each forward: the denoising loop
    (``stages.denoise.denoise``, eager) runs it unchanged on every rank and every rank keeps the same latents."""

    def __init__(self, transformer: torch.nn.Module, rank: int, world_size: int,
                 group: dist.ProcessGroup | None = None) -> None:  # fmt: skip
        super().__init__()
        self.inner, self.rank, self.world, self.group = transformer, rank, world_size, group

    def forward(
        self, video: Modality, audio: Modality, perturbations: BatchedPerturbationConfig | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if perturbations is None:  # as ltx-core's blocks read None: no perturbation, one config a sample
            perturbations = BatchedPerturbationConfig.empty(video.latent.shape[0])
        return sharded_forward(self.inner, video, audio, perturbations, self.rank, self.world, self.group)
