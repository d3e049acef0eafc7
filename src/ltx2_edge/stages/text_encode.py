"""The text-encode stage: prompts -> Gemma 3 hidden states -> LTX-2 embeddings processor -> contexts.

Same result as ``ltx_pipelines.utils.helpers.encode_prompts`` (one ``EmbeddingsProcessorOutput`` per prompt,
in order), with less memory: only Gemma's language model is loaded, the prompts (positive and negative) go
through it in one batched forward, and Gemma is freed before the embeddings processor is loaded, so the two
never share the memory budget. Both come from a ``ModelCache``: the run's plan (or a long-lived owner pinning them)
decides whether they stay loaded between calls.

Prompts are checked against the 1024-token context before any weight is loaded: a long prompt is refused,
never truncated. This stage never plans memory itself; the pipeline decides whether it may keep weights.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from ltx_core.text_encoders.gemma.embeddings_processor import EmbeddingsProcessor, EmbeddingsProcessorOutput

from ltx2_edge.errors import RequestError
from ltx2_edge.models.embeddings import load_embeddings_processor
from ltx2_edge.models.gemma import (
    PromptTokenizer,
    find_gemma_files,
    load_gemma_text_model,
    load_streamed_gemma_text_model,
    read_text_config,
)
from ltx2_edge.models.model_cache import ModelCache
from ltx2_edge.quant.policy import QuantPolicy
from ltx2_edge.streaming.streamer import StreamStats

Progress = Callable[[str, float], None]
"""Called once per part ("gemma", then "embeddings") with the seconds it took, loading included."""


@dataclass(frozen=True)
class HiddenStates:
    """Gemma's output for a few prompts: every layer's hidden states (``[prompts, 1024, hidden]`` each) and the
    ``[prompts, 1024]`` mask. What waits between the two parts of the text stage when a batch runs all its prompts
    through Gemma before loading the connectors (``phased``): ``to("cpu")`` there, back to the device to connect."""

    layers: tuple[torch.Tensor, ...]
    mask: torch.Tensor

    @property
    def prompts(self) -> int:
        return int(self.mask.shape[0])

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (*self.layers, self.mask))

    def to(self, device: torch.device | str) -> HiddenStates:
        return HiddenStates(tuple(t.to(device) for t in self.layers), self.mask.to(device))


class TextEncoder:
    """Turns prompts into LTX-2 text contexts; loads Gemma and the embeddings processor on demand through ``cache``.

    Each ``encode`` loads Gemma (or finds it in the cache), runs it, and tells the cache it is done with it, then
    the same for the embeddings processor: by default both are dropped before the next part loads (the staged
    path). ``keep`` names the parts the run's plan keeps loaded after the call; a cache owner may also pin them
    (``ModelCache.hold``). ``keep_resident=True`` pins both, for a standalone encoder serving many requests.
    Gemma with streamed layers is never kept: its slots exist for one call.
    """

    def __init__(
        self,
        gemma_root: Path,
        checkpoint_path: Path,
        device: torch.device | str,
        dtype: torch.dtype,
        keep_resident: bool = False,
        policy: QuantPolicy | None = None,
        cache: ModelCache | None = None,
    ) -> None:
        self.gemma_root = Path(gemma_root)
        self.policy = policy
        self.checkpoint_path = Path(checkpoint_path)
        self.device = torch.device(device)
        self.dtype = dtype
        self.cache = cache if cache is not None else ModelCache(self.device)
        if keep_resident:
            self.cache.hold("gemma")
            self.cache.hold("embeddings")
        config_path, _, tokenizer_root = find_gemma_files(self.gemma_root)
        self._text_config = read_text_config(config_path)
        self.tokenizer = PromptTokenizer(tokenizer_root)
        # (resident layers, source tier, prefetch depth) when the plan streams Gemma's layers; set per request.
        self.layer_streaming: tuple[int, str, int] | None = None
        self.last_stream_stats: StreamStats | None = None  # of the last encode that streamed layers

    def count_tokens(self, prompt: str) -> int:
        """Tokens ``prompt`` takes in the 1024-token context (``<bos>`` included); loads no weights."""
        return self.tokenizer.count_tokens(prompt)

    def encode(
        self, prompts: Sequence[str], progress: Progress | None = None, keep: tuple[str, ...] = ()
    ) -> list[EmbeddingsProcessorOutput]:
        """One ``EmbeddingsProcessorOutput`` per prompt, equal to the official ``encode_prompts``.

        Raises ``RequestError`` (before loading anything) for an empty list or a prompt over 1024 tokens.
        ``keep``: of "gemma" and "embeddings", what stays loaded after the call.
        """
        hidden = self.hidden_states(prompts, progress, keep)
        return self.connect(hidden, progress, keep)

    def hidden_states(
        self, prompts: Sequence[str], progress: Progress | None = None, keep: tuple[str, ...] = ()
    ) -> HiddenStates:
        """Gemma's part of ``encode``: every layer's hidden states of ``prompts`` (one batched forward) and the mask,
        on the device. ``connect`` turns them into what ``encode`` returns."""
        if not prompts:
            raise RequestError("prompts", list(prompts), "at least one prompt")
        for i, prompt in enumerate(prompts):
            self.tokenizer.check(prompt, field=f"prompts[{i}]" if len(prompts) > 1 else "prompt")

        start = time.perf_counter()
        streamer = None
        if not self.cache.holds("gemma") and self.layer_streaming is not None:
            resident, tier, prefetch = self.layer_streaming
            gemma, streamer = load_streamed_gemma_text_model(self.gemma_root, self.device, self.dtype, self.tokenizer,
                                                             self.policy, resident, tier, prefetch)  # fmt: skip
        else:
            gemma = self.cache.get("gemma", lambda: load_gemma_text_model(self.gemma_root, self.device, self.dtype,
                                                                          self.tokenizer, self.policy))  # fmt: skip
        try:
            hidden_states, mask = gemma.encode(prompts)
        finally:
            if streamer is not None:
                self.last_stream_stats = streamer.stats()
                streamer.close()
        del gemma, streamer
        self.cache.done_with("gemma", keep)
        _report(progress, "gemma", start, self.device)
        return HiddenStates(hidden_states, mask)

    def connect(
        self, hidden: HiddenStates, progress: Progress | None = None, keep: tuple[str, ...] = ()
    ) -> list[EmbeddingsProcessorOutput]:
        """The embeddings processor's part of ``encode``: one output per prompt of ``hidden`` (moved to the device
        first when it waits elsewhere)."""
        start = time.perf_counter()

        def load_processor() -> EmbeddingsProcessor:
            return load_embeddings_processor(self.checkpoint_path, self.device, self.dtype, self._text_config)

        processor = self.cache.get("embeddings", load_processor)
        outputs = connect_prompts(processor, hidden.to(self.device))
        del hidden, processor
        self.cache.done_with("embeddings", keep)
        _report(progress, "embeddings", start, self.device)
        return outputs

    def close(self) -> None:
        """Free the text parts, pinned or not (a no-op when nothing is loaded)."""
        self.cache.release("gemma")
        self.cache.release("embeddings")


def connect_prompts(processor: EmbeddingsProcessor, hidden: HiddenStates) -> list[EmbeddingsProcessorOutput]:
    """The embeddings processor over each prompt of ``hidden`` (already on the processor's device)."""
    with torch.inference_mode():
        # One prompt at a time: ltx-core's connector swaps padding for registers with a mask indexed as if the batch
        # held one row, and the official path calls it per prompt too.
        return [
            processor.process_hidden_states(tuple(h[i : i + 1] for h in hidden.layers), hidden.mask[i : i + 1])
            for i in range(hidden.prompts)
        ]


def encode_text(
    gemma_root: Path,
    checkpoint_path: Path,
    prompts: Sequence[str],
    device: torch.device | str,
    dtype: torch.dtype,
    progress: Progress | None = None,
) -> list[EmbeddingsProcessorOutput]:
    """Encode ``prompts`` with Gemma then the embeddings processor, each freed after use (the staged path)."""
    encoder = TextEncoder(gemma_root, checkpoint_path, device, dtype, keep_resident=False)
    return encoder.encode(prompts, progress)


def _report(progress: Progress | None, part: str, start: float, device: torch.device) -> None:
    if progress is None:
        return
    if device.type == "cuda":
        torch.cuda.synchronize(device)  # kernels run asynchronously: time the work, not its launch
    progress(part, time.perf_counter() - start)
