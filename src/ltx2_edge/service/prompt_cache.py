"""Prompt embeddings kept across clips, so a repeated prompt costs no text encoding.

Keyed by ``PromptKey``: the prompt, the negative prompt and the identity of the text encoder's files (Gemma's
shards and the checkpoint that holds the embeddings connectors: path, size and modification time of each, so a
replaced file never serves stale embeddings). Bounded twice: at most ``max_entries`` entries and ``max_bytes``
bytes of tensors; the least recently used entry goes first. An entry larger than ``max_bytes`` is not kept.

What a value is belongs to the text-encode phase (``engine``): this module counts its bytes (every tensor found
in it, through tuples, lists, dicts and dataclass fields) and hands it back unchanged. Values should live in
host memory: the device budget has no room for a cache. Thread-safe.

This module must never compute an embedding, move a tensor, or import torch at module level.
"""

from __future__ import annotations

import dataclasses
import hashlib
import threading
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DEFAULT_MAX_ENTRIES = 64
# W1's contexts (prompt + negative, 1024 tokens, video 4096 + audio 2048 wide, bf16) are ~25 MB: 512 MiB keeps ~20.
DEFAULT_MAX_BYTES = 512 * 1024**2


@dataclass(frozen=True)
class PromptKey:
    """What makes two prompt embeddings the same."""

    prompt: str
    negative_prompt: str
    encoder: str  # ``encoder_identity`` of the files that compute it


def encoder_identity(files: Iterable[Path]) -> str:
    """A short hash of each file's resolved path, size and modification time (no file is read)."""
    digest = hashlib.sha256()
    for path in sorted(Path(p).resolve() for p in files):
        stat = path.stat()
        digest.update(f"{path}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:16]


def value_bytes(value: Any) -> int:
    """Bytes of every tensor reachable in ``value`` (``nbytes`` of anything that has ``element_size``)."""
    if hasattr(value, "element_size") and hasattr(value, "nelement"):
        return int(value.element_size() * value.nelement())
    if isinstance(value, dict):
        return sum(value_bytes(v) for v in value.values())
    if isinstance(value, (tuple, list)):
        return sum(value_bytes(v) for v in value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return sum(value_bytes(getattr(value, f.name)) for f in dataclasses.fields(value))
    return 0


@dataclass(frozen=True)
class CacheStats:
    entries: int
    bytes: int
    hits: int
    misses: int


class PromptCache:
    """LRU cache of prompt embeddings bounded in entries and in bytes."""

    def __init__(self, max_entries: int = DEFAULT_MAX_ENTRIES, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        if max_entries < 0 or max_bytes < 0:
            raise ValueError(f"max_entries={max_entries}, max_bytes={max_bytes}: both must be >= 0 (0 disables it)")
        self.max_entries, self.max_bytes = max_entries, max_bytes
        self._items: OrderedDict[PromptKey, tuple[Any, int]] = OrderedDict()
        self._bytes = self._hits = self._misses = 0
        self._lock = threading.Lock()

    def get(self, key: PromptKey) -> Any | None:
        """The cached value, or None (a miss)."""
        with self._lock:
            item = self._items.get(key)
            if item is None:
                self._misses += 1
                return None
            self._items.move_to_end(key)
            self._hits += 1
            return item[0]

    def put(self, key: PromptKey, value: Any) -> bool:
        """Keep ``value`` for ``key``, evicting the least recently used; False if it is too large to keep."""
        size = value_bytes(value)
        with self._lock:
            old = self._items.pop(key, None)
            if old is not None:
                self._bytes -= old[1]
            if size > self.max_bytes or self.max_entries == 0:
                return False
            while self._items and (len(self._items) >= self.max_entries or self._bytes + size > self.max_bytes):
                _, (_, freed) = self._items.popitem(last=False)
                self._bytes -= freed
            self._items[key] = (value, size)
            self._bytes += size
            return True

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self._bytes = 0

    def stats(self) -> CacheStats:
        with self._lock:
            return CacheStats(len(self._items), self._bytes, self._hits, self._misses)
