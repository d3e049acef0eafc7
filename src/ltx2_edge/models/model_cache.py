"""The one owner of loaded weights: every stage takes its modules from a ``ModelCache``, and only the cache decides
when they go.

Two policies meet here. The run's plan says which parts stay loaded after each stage (``end_stage(keep=...)``:
staged release by default, the distilled pipeline's transformer kept through the upsample, everything with
``keep_resident`` and no budget). A long-lived owner (the service's scheduler) pins parts across clips with
``hold`` and unpins them with ``release``. What stays loaded is counted by ``held_bytes`` so that the next plan
can count it beside its own stages.

This module must never load a part itself (callers pass the loader) nor decide what to keep (plans and owners do).
A module is dropped by forgetting it; its memory returns only once no stage holds a reference either, which is why
``end_stage`` collects garbage before handing the CUDA allocator's cached blocks back.
"""

from __future__ import annotations

import gc
import itertools
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass

import torch

PARTS: tuple[str, ...] = (
    "gemma",
    "embeddings",
    "video_encoder",
    "transformer",
    "spatial_upsampler",
    "video_decoder",
    "audio_decoder",
    "vocoder",
)


@dataclass
class _Entry:
    module: torch.nn.Module
    key: Hashable


def module_bytes(module: object) -> int:
    """Bytes of a loaded part's parameters and buffers (what keeping it loaded costs): a module, or a wrapper that
    holds its module as ``model`` (``GemmaText``: the language model beside its tokenizer)."""
    if not isinstance(module, torch.nn.Module):
        module = getattr(module, "model", None)
        if not isinstance(module, torch.nn.Module):
            raise TypeError(f"cannot count the weights of a {type(module).__name__}: cache modules or wrappers of one")
    return sum(t.numel() * t.element_size() for t in itertools.chain(module.parameters(), module.buffers()))


class ModelCache:
    """Loaded modules by part name (``PARTS``), each with the key it was loaded for (a LoRA set, say)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self._entries: dict[str, _Entry] = {}
        self._pinned: set[str] = set()
        self.loads: dict[str, int] = {}  # loads per part since the cache was made (a cache hit loads nothing)
        # Device memory kept on purpose that is not a module (a batch's CUDA step graph), by name: counted as held
        # so a stage beside it neither reports it as a leak nor takes it for its own.
        self.beside: dict[str, int] = {}

    def get(self, part: str, load: Callable[[], torch.nn.Module], key: Hashable = None) -> torch.nn.Module:
        """The loaded ``part`` for ``key``; loaded with ``load()`` when absent or loaded for another key (the old
        one is dropped first, so the two never share the memory)."""
        _check_part(part)
        entry = self._entries.get(part)
        if entry is not None and entry.key == key:
            return entry.module
        if entry is not None:
            self._drop(part)
            self.collect()
        module = load()
        self._entries[part] = _Entry(module, key)
        self.loads[part] = self.loads.get(part, 0) + 1
        return module

    def hold(self, part: str) -> None:
        """Keep ``part`` (once loaded) across stages and runs until ``release(part)``: the owner's decision."""
        _check_part(part)
        self._pinned.add(part)

    def release(self, part: str) -> None:
        """Unpin and drop ``part`` now (a no-op when it is not loaded)."""
        self._pinned.discard(part)
        self._drop(part)
        self.collect()

    def done_with(self, part: str, keep: Iterable[str] = ()) -> None:
        """``part``'s stage no longer needs it: drop it unless pinned or in ``keep`` (the plan's keep-list)."""
        if part not in self._pinned and part not in set(keep) and part in self._entries:
            self._drop(part)
            self.collect()

    def end_stage(self, keep: Iterable[str] = ()) -> None:
        """A stage ended: drop every part neither pinned nor in ``keep``, then give the memory back.

        Inside an owner's batch (something held) a stage that dropped nothing has nothing to give back: its own
        temporaries are already free in the allocator, which reuses them for the next clip and, at the budget's
        cap, returns cached blocks before it fails. Skipping the collection there keeps a full ``gc.collect`` and
        a device synchronisation off every clip's critical path. Without an owner's holds it always collects: a
        stage may have let go of weights the cache never held (a streamed transformer, built per run)."""
        kept = set(keep) | self._pinned
        dropped = [part for part in self._entries if part not in kept]
        for part in dropped:
            self._drop(part)
        if dropped or not (self._pinned or self.beside):
            self.collect()

    def loaded(self) -> tuple[str, ...]:
        """The parts loaded now, in ``PARTS`` order."""
        return tuple(p for p in PARTS if p in self._entries)

    def holds(self, part: str) -> bool:
        """True when ``part`` is loaded now."""
        return part in self._entries

    def pinned(self) -> tuple[str, ...]:
        """The parts an owner holds across runs."""
        return tuple(p for p in PARTS if p in self._pinned)

    def held_bytes(self, parts: Iterable[str] | None = None) -> int:
        """Bytes of what is loaded now (or of ``parts`` among it): what a later stage finds already in use."""
        names = self._entries if parts is None else [p for p in parts if p in self._entries]
        beside = sum(self.beside.values()) if parts is None else 0
        return beside + sum(module_bytes(self._entries[p].module) for p in names)

    def clear(self) -> None:
        """Drop everything, pinned parts included."""
        self._pinned.clear()
        self._entries.clear()
        self.collect()

    def collect(self) -> None:
        # Dropped modules may sit in reference cycles (transformers' configs and hooks): collect them before asking
        # the CUDA caching allocator to hand their blocks back, or the next stage's load sees the memory as used.
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    def _drop(self, part: str) -> None:
        self._entries.pop(part, None)


def _check_part(part: str) -> None:
    if part not in PARTS:
        raise ValueError(f"unknown model part {part!r}: one of {', '.join(PARTS)}")
