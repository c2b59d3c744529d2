"""Query-cache hit rates of a stream, computed by replaying what a system was sent.

The benchmark does not read the caches' metrics (an in-process pipeline has none, the naive
workers none either, and Serve's come through Prometheus). It replays instead: every search
query a system was sent, in order (warm-up, low-load points, every searched rate, every
stream, since a cache lives as long as the server), through LRU caches of the system's own
sizes (``recsys.cache.EmbeddingCache``). Where a system holds several caches (one per naive
worker, per encoder replica, per ingress replica) each search goes to one of them at random,
as a load balancer spreads them. Cache tiers are consulted in order: a search the ingress's
query cache answers never reaches the encoder's. The reported hit rate of a stream is the
share of its searches answered from some cache (and per tier).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from recsys.bench.topology import encoder_in_ingress
from recsys.cache import EmbeddingCache, normalise_query
from recsys.config import AppConfig


@dataclass(frozen=True)
class CacheTier:
    """``caches`` LRU caches of ``capacity`` queries each, one of which a search meets."""

    name: str
    caches: int
    capacity: int


def cache_tiers(kind: str, app: AppConfig, workers: int = 1) -> list[CacheTier]:
    """The query caches a system of ``kind`` running ``app`` has, in the order a search
    meets them (``workers``: naive server processes)."""
    encoder_cache = app.encoder.cache_size
    if kind == "inprocess":
        return [CacheTier("encoder", 1, encoder_cache)]
    if kind == "naive":
        return [CacheTier("encoder", max(1, workers), encoder_cache)]
    if kind == "monolith":
        return [CacheTier("encoder", 1, encoder_cache)]
    ingress_replicas = max(1, app.ingress.autoscaling.min_replicas)
    tiers = []
    if app.ingress.query_cache_size > 0:
        tiers.append(CacheTier("ingress", ingress_replicas, app.ingress.query_cache_size))
    encoders = (
        ingress_replicas
        if encoder_in_ingress(app)
        else max(1, app.query_encoder.autoscaling.min_replicas)
    )
    tiers.append(CacheTier("encoder", encoders, encoder_cache))
    return tiers


def stream_hit_rates(
    searches: Sequence[tuple[str, str]], tiers: Sequence[CacheTier], seed: int = 0
) -> dict[str, dict[str, Any]]:
    """Per stream: searches, and the share answered by each tier and by any (``hit_rate``).

    ``searches`` are (stream, query) in the order the system was sent them."""
    rng = np.random.default_rng([seed, 0xCAC4E])
    caches = [[EmbeddingCache(t.capacity) for _ in range(t.caches)] for t in tiers]
    owners = [rng.integers(0, t.caches, size=len(searches)) for t in tiers]
    counts: dict[str, dict[str, int]] = {}
    for i, (stream, query) in enumerate(searches):
        key = normalise_query(query)
        c = counts.setdefault(stream, {"searches": 0, "any": 0} | {t.name: 0 for t in tiers})
        c["searches"] += 1
        met: list[EmbeddingCache] = []
        for t, tier in enumerate(tiers):
            cache = caches[t][int(owners[t][i])]
            met.append(cache)
            if cache.get(key) is not None:
                c[tier.name] += 1
                c["any"] += 1
                break
        else:  # encoded: every cache it passed keeps the vector
            for cache in met:
                cache.put(key, _VECTOR)
    out: dict[str, dict[str, Any]] = {}
    for stream, c in counts.items():
        n = c["searches"]
        out[stream] = {
            "searches": n,
            "hit_rate": c["any"] / n if n else None,
            "by_tier": {t.name: (c[t.name] / n if n else None) for t in tiers},
            "tiers": [f"{t.name}: {t.caches} x {t.capacity}" for t in tiers],
        }
    return out


_VECTOR = np.zeros(1, np.float32)
