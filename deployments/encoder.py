"""QueryEncoder deployment: batched MiniLM query embedding with an LRU cache.

The replica warms up in ``__init__`` (one forward per served batch size), so Serve routes
nothing to it before its first forward has run."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from ray import serve

from deployments.metrics import stage_metrics
from deployments.readiness import deployment_name, finish_cold_start, replica_id
from recsys.cache import EmbeddingCache
from recsys.config import AppConfig
from recsys.encoder import QueryEncoder
from recsys.stages import EncodedGroup, split_by_sizes
from recsys.warmup import (
    LOAD,
    WARMUP,
    ColdStart,
    encoder_warmup_batches,
    run_batches,
    served_batch_sizes,
    stage_report,
)


@serve.deployment
class QueryEncoderDeployment:
    """``encode(queries) -> EncodedGroup`` (vectors float32 (len(queries), 384), encode ms).

    Batched across calls; each call is one group of queries from the ingress."""

    def __init__(self, config: AppConfig):
        stage = config.query_encoder
        self.cold = ColdStart(deployment_name("QueryEncoder"))
        enc_config = config.encoder.model_copy(update={"num_threads": stage.torch_threads})
        with self.cold.phase(LOAD):
            self.encoder = QueryEncoder(enc_config)
        self.cache = EmbeddingCache(config.encoder.cache_size)
        self.metrics = stage_metrics()
        self.fault_delay_s = stage.fault_delay_ms / 1000.0
        self.encode.set_max_batch_size(stage.max_batch_size)
        self.encode.set_batch_wait_timeout_s(stage.batch_wait_timeout_s)
        self.served = 0
        with self.cold.phase(WARMUP):  # past the cache: every batch is a real forward
            sizes = served_batch_sizes(stage.max_batch_size)
            run_batches(self.encoder.encode, encoder_warmup_batches(sizes))
        finish_cold_start(self.cold)

    @serve.batch
    async def encode(self, groups: list[list[str]]) -> list[EncodedGroup]:
        """Each call carries one ingress group's queries; all calls in a batch are encoded
        together and every call gets its own rows back as one compact array."""
        started = time.perf_counter()
        if self.fault_delay_s:
            await asyncio.sleep(self.fault_delay_s)
        queries = [q for group in groups for q in group]
        self.served += len(queries)
        vectors, hits = self.cache.encode_through(queries, self.encoder.encode, self.encoder.dim)
        ms = (time.perf_counter() - started) * 1000.0
        m = self.metrics
        m.batch_size.observe(len(queries), tags={"stage": "encode"})
        m.stage_latency.observe(ms, tags={"stage": "encode"})
        if hits:
            m.cache_hits.inc(hits, tags={"stage": "encode"})
        m.cache_lookups.inc(len(queries), tags={"stage": "encode"})
        m.cache_hit_ratio.set(self.cache.hit_ratio, tags={"stage": "encode"})
        return [EncodedGroup(rows, ms) for rows in split_by_sizes(vectors, groups)]

    def readiness(self) -> dict[str, Any]:
        """This replica's readiness and cold start (``recsys.warmup.stage_report``)."""
        return stage_report(
            self.cold.stage,
            self.cold,
            warm=True,
            version=None,
            served=self.served,
            replica=replica_id(),
        )

    def stats(self) -> dict[str, float]:
        """Cache statistics of this replica (for tests and operators)."""
        return {
            "cache_entries": len(self.cache),
            "cache_hits": self.cache.hits,
            "cache_lookups": self.cache.lookups,
            "cache_hit_ratio": self.cache.hit_ratio,
        }
