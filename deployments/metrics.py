"""The project's metrics, exported through Ray Serve's metrics API.

They appear on Ray's Prometheus endpoint beside Serve's own ``ray_serve_*`` metrics, prefixed
``ray_`` (counters get ``_total``): ``ray_recsys_stage_latency_ms``, ``ray_recsys_batch_size``,
``ray_recsys_cache_hits_total``, ``ray_recsys_cache_lookups_total``,
``ray_recsys_requests_total``, ``ray_recsys_degraded_total``, ``ray_recsys_rejected_total``,
``ray_recsys_cold_start_s``. Each replica creates them once (metric objects are per-process).
"""

from __future__ import annotations

from functools import lru_cache

from ray.serve import metrics

from recsys.warmup import ColdStart

LATENCY_BOUNDARIES_MS = [
    0.5,
    1,
    2,
    3,
    5,
    7.5,
    10,
    15,
    20,
    30,
    50,
    75,
    100,
    150,
    250,
    500,
    1000,
    2500,
]
BATCH_BOUNDARIES = [1, 2, 4, 8, 16, 32, 64, 128]


class StageMetrics:
    """Metrics of one process (ingress or a stage replica)."""

    def __init__(self) -> None:
        self.stage_latency = metrics.Histogram(
            "recsys_stage_latency_ms",
            description="Wall time of one pipeline stage per request, in ms.",
            boundaries=LATENCY_BOUNDARIES_MS,
            tag_keys=("stage",),
        )
        self.batch_size = metrics.Histogram(
            "recsys_batch_size",
            description="Requests per @serve.batch call, per stage.",
            boundaries=BATCH_BOUNDARIES,
            tag_keys=("stage",),
        )
        # stage: "ingress" (the ingress's query cache, a hit skips the encoder call) or
        # "encode" (the encoder's own cache, a hit skips the model)
        self.cache_hits = metrics.Counter(
            "recsys_cache_hits", description="Query-embedding cache hits.", tag_keys=("stage",)
        )
        self.cache_lookups = metrics.Counter(
            "recsys_cache_lookups",
            description="Query-embedding cache lookups.",
            tag_keys=("stage",),
        )
        self.cache_hit_ratio = metrics.Gauge(
            "recsys_cache_hit_ratio",
            description="Hit ratio of this replica's query-embedding cache since start.",
            tag_keys=("stage",),
        )
        self.requests = metrics.Counter(
            "recsys_requests",
            description="Answered HTTP requests by route, ranker variant and status code.",
            tag_keys=("route", "variant", "status"),
        )
        self.degraded = metrics.Counter(
            "recsys_degraded",
            description="Requests answered in retrieval order because the ranker was skipped.",
            tag_keys=("route", "reason"),
        )
        self.rejected = metrics.Counter(
            "recsys_rejected",
            description="Requests answered 503 (overload or deadline), by the stage at fault.",
            tag_keys=("stage", "reason"),
        )
        # one series per replica (Serve adds the replica tag) and phase; phase "total" is the
        # sum, the replica's start time from its constructor's start until it is warm
        self.cold_start = metrics.Gauge(
            "recsys_cold_start_s",
            description="Seconds each phase of this replica's cold start took (artifact_open, "
            "load, gang_start, stages_wait, warmup, total).",
            tag_keys=("stage", "phase"),
        )

    def record_cold_start(self, cold: ColdStart) -> None:
        for phase, seconds in cold.phases.items():
            self.cold_start.set(seconds, tags={"stage": cold.stage, "phase": phase})
        self.cold_start.set(cold.total_s, tags={"stage": cold.stage, "phase": "total"})


@lru_cache(maxsize=1)
def stage_metrics() -> StageMetrics:
    return StageMetrics()
