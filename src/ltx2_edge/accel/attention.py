"""Which scaled-dot-product-attention kernel a run uses: the fastest on this GPU at this run's shapes, measured.

PyTorch picks an SDPA backend by rules, not by speed; on Hopper, flash, cuDNN and memory-efficient attention
differ by tens of percent at LTX-2's shapes (a few thousand video tokens, 128-wide heads, 1024 text tokens).
``choose_backend`` times each available backend once per run on the step's attention shapes (a few ms) and
``use_backend`` pins the winner for the denoising, eager, compiled or graphed. FP8 attention is not offered:
PyTorch's SDPA has no FP8 path on Hopper (FlashAttention-3's FP8 kernels ship outside PyTorch).

On CPU nothing is measured: the default dispatch runs and the report says so. This module never changes
what attention computes, only which kernel computes it.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

CANDIDATES: dict[str, SDPBackend] = {
    "cudnn": SDPBackend.CUDNN_ATTENTION,
    "flash": SDPBackend.FLASH_ATTENTION,
    "efficient": SDPBackend.EFFICIENT_ATTENTION,
}
# (batch, heads, query tokens, key tokens, head dim) of one call.
Shape = tuple[int, int, int, int, int]
_CHOSEN: dict[tuple, tuple[str | None, dict[str, float | str]]] = {}  # choose_backend's choices in this process


def step_shapes(config: dict, batch: int, video_tokens: int, audio_tokens: int, text_tokens: int) -> list[Shape]:
    """The attention calls of one block at a run's sizes: self, text cross and A/V cross, video and audio."""
    t = config["transformer"] if "transformer" in config else config
    vh, vd = t["num_attention_heads"], t["attention_head_dim"]
    ah, ad = t["audio_num_attention_heads"], t["audio_attention_head_dim"]
    return [
        (batch, vh, video_tokens, video_tokens, vd),
        (batch, vh, video_tokens, text_tokens, vd),
        (batch, ah, audio_tokens, audio_tokens, ad),
        (batch, ah, audio_tokens, text_tokens, ad),
        (batch, ah, video_tokens, audio_tokens, ad),  # audio->video: video queries at the audio width
        (batch, ah, audio_tokens, video_tokens, ad),
    ]


def _time_backend(backend: SDPBackend, tensors: list[tuple[torch.Tensor, ...]], repeats: int) -> float:
    with sdpa_kernel([backend]):
        for q, k, v in tensors:  # warm-up, and raises here if the backend cannot take a shape
            torch.nn.functional.scaled_dot_product_attention(q, k, v)
        torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(repeats):
            for q, k, v in tensors:
                torch.nn.functional.scaled_dot_product_attention(q, k, v)
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / repeats


def choose_backend(
    shapes: Sequence[Shape], device: torch.device, dtype: torch.dtype, repeats: int = 3
) -> tuple[str | None, dict[str, float | str]]:
    """``(fastest backend name or None, {name: seconds for all shapes once, or why it could not run})``.

    Timed once per process for the same shapes, device and dtype: a long-lived process (the service's batch) then
    keeps the first run's choice, so its clips neither pay the timing again nor run different kernels."""
    if device.type != "cuda":
        return None, {"note": f"not measured on {device.type}: PyTorch's default dispatch"}
    key = (tuple(shapes), str(device), dtype, repeats)
    if key in _CHOSEN:
        backend, results = _CHOSEN[key]
        return backend, {**results, "note": "timed by an earlier run of these shapes in this process"}
    gen = torch.Generator(device=device).manual_seed(0)
    tensors = [
        tuple(torch.randn(b, h, n, d, device=device, dtype=dtype, generator=gen) for n in (q, k, k))
        for b, h, q, k, d in shapes
    ]
    results: dict[str, float | str] = {}
    for name, backend in CANDIDATES.items():
        try:
            results[name] = _time_backend(backend, tensors, repeats)
        except RuntimeError as exc:  # a backend that cannot run these shapes is recorded, not chosen
            results[name] = f"unavailable: {str(exc).splitlines()[0][:160]}"
    timed = {k: v for k, v in results.items() if isinstance(v, float)}
    backend = min(timed, key=timed.__getitem__) if timed else None
    _CHOSEN[key] = (backend, results)
    return backend, results


@contextmanager
def use_backend(name: str | None) -> Iterator[None]:
    """Pin SDPA to ``name`` (a ``CANDIDATES`` key) inside; None leaves PyTorch's dispatch alone."""
    with sdpa_kernel([CANDIDATES[name]]) if name is not None else nullcontext():
        yield
