"""LRU cache of image embeddings, accounted in bytes, so each extra click on an image costs only
the decoder.

Keys are :func:`segflow.prompt.base.image_key` digests (sha256 of the pixels and shape). Each
entry carries its size in bytes; :attr:`EmbeddingCache.nbytes` is their sum and never exceeds
:attr:`EmbeddingCache.max_bytes`: a new entry evicts the least recently used ones until it fits,
and an entry larger than the whole budget is not kept. The service counts ``max_bytes`` in its
memory budget. All methods are thread-safe (one lock).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any


class EmbeddingCache:
    """A thread-safe, byte-bounded LRU map ``key -> value``.

    Args:
        max_bytes: Budget in bytes (0 keeps nothing).

    Attributes:
        hits: :meth:`get` calls that found their key.
        misses: :meth:`get` calls that did not.
        evictions: Entries dropped to make room.
    """

    def __init__(self, max_bytes: int) -> None:
        if max_bytes < 0:
            raise ValueError(f"cache max_bytes must be >= 0, got {max_bytes}")
        self.max_bytes = int(max_bytes)
        self.hits = 0
        self.misses = 0
        self.evictions = 0
        self._items: OrderedDict[str, tuple[Any, int]] = OrderedDict()
        self._nbytes = 0
        self._lock = threading.Lock()

    @property
    def nbytes(self) -> int:
        """Bytes the entries hold now."""
        with self._lock:
            return self._nbytes

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)

    def __contains__(self, key: object) -> bool:
        """Whether ``key`` is cached (does not count as a hit or miss, nor refresh it)."""
        with self._lock:
            return key in self._items

    def get(self, key: str) -> Any | None:
        """The value of ``key`` (now the most recently used), or None; counts a hit or a miss."""
        with self._lock:
            item = self._items.get(key)
            if item is None:
                self.misses += 1
                return None
            self._items.move_to_end(key)
            self.hits += 1
            return item[0]

    def put(self, key: str, value: Any, nbytes: int) -> bool:
        """Stores ``value`` (``nbytes`` bytes) under ``key``, evicting the oldest entries to fit.

        Returns:
            False when ``nbytes`` exceeds :attr:`max_bytes` (nothing is stored or evicted).
        """
        nbytes = int(nbytes)
        with self._lock:
            if nbytes > self.max_bytes:
                return False
            old = self._items.pop(key, None)
            if old is not None:
                self._nbytes -= old[1]
            while self._items and self._nbytes + nbytes > self.max_bytes:
                _, (_, size) = self._items.popitem(last=False)
                self._nbytes -= size
                self.evictions += 1
            self._items[key] = (value, nbytes)
            self._nbytes += nbytes
            return True

    def clear(self) -> None:
        """Drops every entry (the counters stay)."""
        with self._lock:
            self._items.clear()
            self._nbytes = 0

    def stats(self) -> dict[str, int]:
        """``{entries, nbytes, max_bytes, hits, misses, evictions}`` for health answers and logs."""
        with self._lock:
            return {
                "entries": len(self._items),
                "nbytes": self._nbytes,
                "max_bytes": self.max_bytes,
                "hits": self.hits,
                "misses": self.misses,
                "evictions": self.evictions,
            }
