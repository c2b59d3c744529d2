"""QueryEncoder deployment: batched MiniLM query embedding with an LRU cache."""

from __future__ import annotations

import asyncio
import time

from ray import serve

from deployments.metrics import stage_metrics
from deployments.payloads import EncodedGroup, split_by_sizes
from recsys.cache import EmbeddingCache
from recsys.config import AppConfig
from recsys.encoder import QueryEncoder


@serve.deployment
class QueryEncoderDeployment:
    """``encode(queries) -> (vectors float32 (len(queries), 384), encode_ms)``.

    Batched across calls; each call is one group of queries from the ingress."""

    def __init__(self, config: AppConfig):
        stage = config.query_encoder
        enc_config = config.encoder.model_copy(update={"num_threads": stage.torch_threads})
        self.encoder = QueryEncoder(enc_config)
        self.cache = EmbeddingCache(config.encoder.cache_size)
        self.metrics = stage_metrics()
        self.fault_delay_s = stage.fault_delay_ms / 1000.0
        self.encode.set_max_batch_size(stage.max_batch_size)
        self.encode.set_batch_wait_timeout_s(stage.batch_wait_timeout_s)
        self.encoder.encode(["warm up"])  # first call allocates; keep it out of a request

    @serve.batch
    async def encode(self, groups: list[list[str]]) -> list[EncodedGroup]:
        """Each call carries one ingress group's queries; all calls in a batch are encoded
        together and every call gets its own rows back as one compact array."""
        started = time.perf_counter()
        if self.fault_delay_s:
            await asyncio.sleep(self.fault_delay_s)
        queries = [q for group in groups for q in group]
        vectors, hits = self.cache.encode_through(queries, self.encoder.encode, self.encoder.dim)
        ms = (time.perf_counter() - started) * 1000.0
        m = self.metrics
        m.batch_size.observe(len(queries), tags={"stage": "encode"})
        m.stage_latency.observe(ms, tags={"stage": "encode"})
        if hits:
            m.cache_hits.inc(hits, tags={"stage": "encode"})
        m.cache_lookups.inc(len(queries), tags={"stage": "encode"})
        m.cache_hit_ratio.set(self.cache.hit_ratio, tags={"stage": "encode"})
        return [(rows, ms) for rows in split_by_sizes(vectors, groups)]

    def stats(self) -> dict[str, float]:
        """Cache statistics of this replica (for tests and operators)."""
        return {
            "cache_entries": len(self.cache),
            "cache_hits": self.cache.hits,
            "cache_lookups": self.cache.lookups,
            "cache_hit_ratio": self.cache.hit_ratio,
        }
