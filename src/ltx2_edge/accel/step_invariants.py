"""Work that is the same at every denoising step, done once per run: RoPE tables, caption projections, text K/V.

Across the steps of a run the latent positions and the text contexts never change; only the latents and sigma
do. ltx-core recomputes from them, on every forward, the rotary tables (built with numpy on the CPU and copied
to the device: a host sync that also makes the forward impossible to capture as a CUDA graph), the caption
projections of the contexts, and in each block's text cross-attention the K and V projections of the context
(~4.1 TFLOP of a W1 forward's 53). ``step_invariants`` computes each once and hands the stored result back:

- rotary tables and caption projections are memoised by the identity of their input: storage pointer, shape,
  strides and version counter of the tensor, with a reference kept so the storage cannot be reused by another
  tensor while the entry lives;
- text K/V: each block's ``attn2.to_k``/``to_v`` (and the audio ones) are swapped for holders of their output on
  the run's (projected) contexts, computed on first use. Only valid without cross-attention AdaLN (LTX-2.3),
  where the context is modulated by the timestep; ``freeze_text_kv`` refuses that model.

Everything is restored on exit, so the model is unchanged for the next run. This module never changes a value:
outputs with and without it are identical bit for bit (same ops on the same inputs, only fewer times).

A captured CUDA graph reads the stored results by address. To let the next clip of a batch replay the same graph
(``accel.engine.StepEngine.begin_run``), ``Invariants.refill()`` marks every stored result stale: the next call
recomputes it from its (refilled) input and writes the result *into the stored tensors*, so the addresses the
graph holds now carry the new run's values.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.utils._pytree import tree_flatten

TEXT_ATTENTIONS = ("attn2", "audio_attn2")  # the blocks' cross-attentions over the text context


def _key(t: torch.Tensor) -> tuple:
    # Inference tensors keep no version counter; nothing in a run writes positions or contexts in place.
    version = None if t.is_inference() else t._version
    return (t.data_ptr(), tuple(t.shape), tuple(t.stride()), t.dtype, t.device, version)


def _describe(arg: object) -> object:
    # Other arguments enter the key by value, tensors by shape and dtype: ltx-core passes the step's latent
    # projection to _prepare_context only for its batch size and width.
    if isinstance(arg, tuple) and len(arg) == 2 and isinstance(arg[0], str):
        return (arg[0], _describe(arg[1]))
    if isinstance(arg, torch.Tensor):
        return ("tensor", tuple(arg.shape), arg.dtype)
    return repr(arg)


@dataclass
class InvariantStats:
    """Hits and misses of the memo over a run (a miss computes; every later step should hit)."""

    computed: int = 0
    reused: int = 0
    text_kv_bytes: int = 0

    def as_dict(self) -> dict[str, int]:
        return {"computed": self.computed, "reused": self.reused, "text_kv_bytes": self.text_kv_bytes}


def _copy_into(stored: object, fresh: object) -> None:
    """Write ``fresh`` into ``stored`` tensor by tensor (same structure and shapes: the same call on a refilled
    input of the same shape)."""
    old, old_spec = tree_flatten(stored)
    new, new_spec = tree_flatten(fresh)
    if old_spec != new_spec:
        raise RuntimeError("a step invariant changed structure between runs of one captured graph")
    for o, n in zip(old, new, strict=True):
        if isinstance(o, torch.Tensor):
            if not isinstance(n, torch.Tensor) or o.shape != n.shape or o.dtype != n.dtype:
                raise RuntimeError("a step invariant changed shape between runs of one captured graph")
            o.copy_(n)
        elif o is not n and o != n:
            raise RuntimeError("a step invariant's non-tensor part changed between runs of one captured graph")


@dataclass
class _Memo:
    stats: InvariantStats
    entries: dict[tuple, tuple[torch.Tensor, object]] = field(default_factory=dict)
    stale: set[tuple] = field(default_factory=set)

    def wrap(self, fn: Callable[..., torch.Tensor], tensor_arg: str) -> Callable[..., torch.Tensor]:
        def memoised(*args: object, **kwargs: object) -> torch.Tensor:
            if tensor_arg in kwargs:
                t, positional = kwargs[tensor_arg], args
            else:
                t, positional = args[0], args[1:]
            named = sorted((k, v) for k, v in kwargs.items() if k != tensor_arg)
            key = (fn.__name__, _key(t), tuple(_describe(a) for a in (*positional, *named)))
            hit = self.entries.get(key)
            if hit is not None and key in self.stale:  # refilled input: new values into the stored result
                _copy_into(hit[1], fn(*args, **kwargs))
                self.stale.discard(key)
                self.stats.computed += 1
                return hit[1]  # type: ignore[return-value]
            if hit is not None:
                self.stats.reused += 1
                return hit[1]  # type: ignore[return-value]
            out = fn(*args, **kwargs)
            self.entries[key] = (t, out)  # t kept alive: its storage pointer is part of the key
            self.stats.computed += 1
            return out

        return memoised


class _FrozenProjection(nn.Module):
    """Stands in for a text K or V projection: returns its output on the run's context, computed once.

    The context seen at the first call is the run's; a later call with another context (a new run through the
    same model inside the scope would be a bug) raises instead of returning stale K/V.
    """

    def __init__(self, proj: nn.Module, stats: InvariantStats) -> None:
        super().__init__()
        self.proj = proj
        self.stats = stats
        self.key: tuple | None = None
        self.stale = False
        self.register_buffer("value", None, persistent=False)

    def forward(self, context: torch.Tensor) -> torch.Tensor:
        if self.stale and self.value is not None:  # a new run refilled the context: new K/V, same storage
            self.value.copy_(self.proj(context))
            self.key, self.stale = _key(context), False
            self.stats.computed += 1
            return self.value
        if self.value is None:
            self.value = self.proj(context)
            self.key = _key(context)
            self.stats.computed += 1
            self.stats.text_kv_bytes += self.value.numel() * self.value.element_size()
            return self.value
        # is_compiling() first: asking CUDA whether it captures, inside a compiled block, breaks the graph.
        if torch.compiler.is_compiling() or (context.is_cuda and torch.cuda.is_current_stream_capturing()):
            return self.value  # the key was checked by the eager steps before any compile or capture
        if _key(context) != self.key:
            raise RuntimeError("text K/V were frozen for another context: leave step_invariants() between runs")
        self.stats.reused += 1
        return self.value


def _text_projections(model: nn.Module) -> Iterator[tuple[nn.Module, str]]:
    for block in model.transformer_blocks:
        for attn_name in TEXT_ATTENTIONS:
            attn = getattr(block, attn_name, None)
            if attn is not None:
                yield attn, "to_k"
                yield attn, "to_v"


def text_kv_bytes(config: dict, batch: int, context_tokens: int, dtype_bytes: int = 2) -> int:
    """Bytes the frozen text K/V of all blocks hold: for the planner, from the checkpoint's transformer config."""
    t = config["transformer"] if "transformer" in config else config
    video = t["num_attention_heads"] * t["attention_head_dim"]
    audio = t["audio_num_attention_heads"] * t["audio_attention_head_dim"]
    return 2 * t["num_layers"] * batch * context_tokens * (video + audio) * dtype_bytes


def freeze_text_kv_allowed(velocity_model: nn.Module) -> str | None:
    """None when text K/V can be frozen for ``velocity_model``, else why not (one line)."""
    if getattr(velocity_model, "cross_attention_adaln", False):
        return "the model modulates its text context by the timestep (cross-attention AdaLN): K/V change per step"
    return None


@dataclass
class Invariants:
    """The live scope: its counters, and ``refill`` for the next run of a captured graph."""

    stats: InvariantStats
    _memo: _Memo
    _frozen: list[_FrozenProjection]

    def refill(self, stats: InvariantStats | None = None) -> None:
        """Every stored result is recomputed at its next use and written into the same tensors (the caller has
        written the new run's inputs into the tensors the results were computed from). ``stats``: the new run's
        counters."""
        if stats is not None:
            self.stats = self._memo.stats = stats
            for f in self._frozen:
                f.stats = stats
        self._memo.stale = set(self._memo.entries)
        for f in self._frozen:
            f.stale = f.value is not None


@contextmanager
def step_invariants(x0_model: nn.Module, freeze_text_kv: bool = False) -> Iterator[Invariants]:
    """Inside: the transformer computes step-invariant work once. Yields the live ``Invariants``.

    ``x0_model``: ltx-core's ``X0Model`` (or the ``LTXModel`` itself). ``freeze_text_kv`` also keeps every
    block's text K/V (memory: ``text_kv_bytes``); ``ValueError`` if the model cannot (see
    ``freeze_text_kv_allowed``). One scope per run (the K/V belong to that run's prompt), unless the next run's
    inputs are written into this run's tensors and ``refill`` is called (a reused CUDA graph).
    """
    model = getattr(x0_model, "velocity_model", x0_model)
    if freeze_text_kv:
        reason = freeze_text_kv_allowed(model)
        if reason is not None:
            raise ValueError(f"freeze_text_kv=True is not possible: {reason}")
    stats = InvariantStats()
    memo = _Memo(stats)
    patched: list[tuple[object, str]] = []
    swapped: list[tuple[nn.Module, str, nn.Module]] = []
    frozen: list[_FrozenProjection] = []
    try:
        for name in ("video_args_preprocessor", "audio_args_preprocessor"):
            pre = getattr(model, name, None)
            if pre is None:
                continue
            simple = getattr(pre, "simple_preprocessor", pre)
            for method, arg in (("_prepare_positional_embeddings", "positions"), ("_prepare_context", "context")):
                setattr(simple, method, memo.wrap(getattr(simple, method), arg))
                patched.append((simple, method))
        if freeze_text_kv:
            for attn, proj_name in _text_projections(model):
                proj = getattr(attn, proj_name)
                holder = _FrozenProjection(proj, stats)
                setattr(attn, proj_name, holder)
                swapped.append((attn, proj_name, proj))
                frozen.append(holder)
        yield Invariants(stats, memo, frozen)
    finally:
        for obj, method in patched:
            delattr(obj, method)  # the instance attribute hid the class method; removing it restores that
        for attn, proj_name, proj in swapped:
            setattr(attn, proj_name, proj)
