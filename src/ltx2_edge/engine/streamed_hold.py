"""``StreamedHold``: a streamed transformer kept from one denoise to the next of a batch.

Under a budget that streams blocks, loading the transformer is mostly packing the streamed blocks into page-locked
host memory (11.5 s per clip for W1 at 16 GiB on an H200), while the steps themselves take ~6 s. A batch whose
clips all stream the same way (same residency, slots, source and LoRAs) loads once and reuses the resident blocks,
the slots and the pinned copies for every clip. The streamer is built for many forwards in a row, so a later clip
is just more forwards; the batch plan (``engine.batch_plan``) decides when that is allowed, and the device memory
held between clips is counted in the cache (``ModelCache.beside``), as the step graph's is.

This module holds and releases; it never decides.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Hashable

import torch

from ltx2_edge.models.model_cache import ModelCache
from ltx2_edge.streaming.streamer import BlockStreamer, StreamStats

BESIDE_NAME = "streamed_transformer"


def device_bytes(module: torch.nn.Module, device: torch.device) -> int:
    """Device memory behind ``module``'s tensors, each storage once: streamed blocks are views into a few shared
    slots, so summing their tensors would count every slot many times over."""
    seen: dict[int, int] = {}
    for t in itertools.chain(module.parameters(), module.buffers()):
        if t.device.type == device.type and t.device.type != "meta":
            storage = t.untyped_storage()
            seen[storage.data_ptr()] = storage.nbytes()
    return sum(seen.values())


def stats_since(now: StreamStats, before: StreamStats | None) -> StreamStats:
    """What streaming cost between two snapshots of one streamer (``before`` None: since it was made)."""
    if before is None:
        return now
    return StreamStats(
        bytes_streamed=now.bytes_streamed - before.bytes_streamed,
        copies=now.copies - before.copies,
        host_wait_s=now.host_wait_s - before.host_wait_s,
        device_wait_s=now.device_wait_s - before.device_wait_s,
        slots=now.slots,
        slot_bytes=now.slot_bytes,
        source_pinned_bytes=now.source_pinned_bytes,
    )


class StreamedHold:
    """At most one streamed transformer with its streamer, for the key it was loaded for."""

    def __init__(self, cache: ModelCache) -> None:
        self.cache = cache
        self._key: Hashable = None
        self._model: torch.nn.Module | None = None
        self._streamer: BlockStreamer | None = None

    def get(self, key: Hashable, load: Callable[[], tuple[torch.nn.Module, BlockStreamer]],
            ) -> tuple[torch.nn.Module, BlockStreamer, bool]:  # fmt: skip
        """``(model, streamer, reused)``: the held pair when it was loaded for ``key``, else ``load()``'s (the old
        pair released first, so two never sit on the device together)."""
        if self._model is not None and self._streamer is not None and self._key == key:
            return self._model, self._streamer, True
        self.close()
        model, streamer = load()
        self._key, self._model, self._streamer = key, model, streamer
        self.cache.beside[BESIDE_NAME] = device_bytes(model, self.cache.device)
        return model, streamer, False

    def holds(self, streamer: object) -> bool:
        """Whether ``streamer`` is the held one (its owner must not close it)."""
        return streamer is not None and streamer is self._streamer

    def after_error(self) -> None:
        """A denoise raised with the held streamer (mid-forward or between steps): restart its sequence so the next
        clip's first forward finds the first streamed block; if even that fails, let the pair go."""
        if self._streamer is None:
            return
        try:
            self._streamer.reset()
        except Exception:
            self.close()
            raise

    def close(self) -> None:
        """Release the held pair (slots, pinned copies and resident blocks); nothing held is a no-op."""
        streamer, self._streamer, self._model, self._key = self._streamer, None, None, None
        self.cache.beside.pop(BESIDE_NAME, None)
        if streamer is not None:
            streamer.close()
