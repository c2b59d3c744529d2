"""A bounded LRU cache of query embeddings with hit accounting."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence

import numpy as np


def normalise_query(text: str) -> str:
    """Cache key of a query: case- and whitespace-insensitive."""
    return " ".join(text.lower().split())


class EmbeddingCache:
    """LRU map from normalised query text to its embedding (a read-only float32 vector).

    Safe to share between threads (the fused topology's stage threads): each lookup and
    insert holds a lock; the encoding of the misses does not, so two threads may both encode
    a query neither found, and the later answer wins (the same vector)."""

    def __init__(self, capacity: int):
        if capacity < 0:
            raise ValueError("cache capacity must be >= 0")
        self.capacity = capacity
        self._entries: OrderedDict[str, np.ndarray] = OrderedDict()
        self.hits = 0
        self.lookups = 0
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def hit_ratio(self) -> float:
        return self.hits / self.lookups if self.lookups else 0.0

    def get(self, key: str) -> np.ndarray | None:
        with self._lock:
            self.lookups += 1
            vec = self._entries.get(key)
            if vec is not None:
                self._entries.move_to_end(key)
                self.hits += 1
            return vec

    def put(self, key: str, vec: np.ndarray) -> None:
        if self.capacity == 0:
            return
        vec = np.array(vec, dtype=np.float32, copy=True)
        vec.setflags(write=False)
        with self._lock:
            self._entries[key] = vec
            self._entries.move_to_end(key)
            while len(self._entries) > self.capacity:
                self._entries.popitem(last=False)

    def encode_through(
        self, texts: Sequence[str], encode: Callable[[list[str]], np.ndarray], dim: int
    ) -> tuple[np.ndarray, int]:
        """Embed ``texts``, calling ``encode`` only for the distinct misses.

        Returns the (n, dim) embeddings in input order and the number of cache hits.
        """
        keys = [normalise_query(t) for t in texts]
        out = np.empty((len(keys), dim), dtype=np.float32)
        missing: dict[str, list[int]] = {}
        hits = 0
        for i, key in enumerate(keys):
            vec = self.get(key)
            if vec is None:
                missing.setdefault(key, []).append(i)
            else:
                out[i] = vec
                hits += 1
        if missing:
            miss_keys = list(missing)
            fresh = encode(miss_keys)
            for key, vec in zip(miss_keys, fresh, strict=True):
                out[missing[key]] = vec
                self.put(key, vec)
        return out, hits
