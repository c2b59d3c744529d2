"""encode -> retrieve -> rank in one process, around the request logic the Serve ingress shares.

``prepare`` (ids, filters, route decision) and ``ranked_items`` (top-k with display fields)
are the pure steps around the stages (``recsys.request``, light enough for the ingress);
:class:`Pipeline` chains them with in-process stage objects. The Serve deployments wrap the
same stage objects one per replica, and the ingress calls the same ``prepare`` /
``ranked_items``.
"""

from __future__ import annotations

import time

import numpy as np

from recsys.artifacts import Artifact
from recsys.cache import EmbeddingCache
from recsys.catalog import Catalog
from recsys.config import AppConfig
from recsys.encoder import QueryEncoder
from recsys.ranking import CandidateRanker
from recsys.request import PreparedRequest, prepare, ranked_items
from recsys.request import new_request_id as new_request_id  # re-exported for callers
from recsys.retrieval import Retriever
from recsys.routing import RoutingPolicy
from recsys.types import Filters, RankedResponse


class Pipeline:
    """The whole request path in one process (tests, offline evaluation, benchmarks)."""

    def __init__(
        self,
        artifact: Artifact,
        config: AppConfig,
        encoder: QueryEncoder,
        retriever: Retriever,
        rankers: dict[str, CandidateRanker],
        catalog: Catalog,
    ):
        self.artifact = artifact
        self.config = config
        self.encoder = encoder
        self.cache = EmbeddingCache(config.encoder.cache_size)
        self.retriever = retriever
        self.rankers = rankers
        self.catalog = catalog
        self.policy = RoutingPolicy(config.routing)

    @classmethod
    def load(cls, config: AppConfig, encoder: QueryEncoder | None = None) -> Pipeline:
        artifact = Artifact.open(config.artifacts, config.cache_dir)
        rankers = {}
        for variant in config.routing.variants:
            source = (
                Artifact.open(variant.artifacts, config.cache_dir)
                if variant.artifacts
                else artifact
            )
            rankers[variant.name] = CandidateRanker.from_artifact(source)
        return cls(
            artifact,
            config,
            encoder or QueryEncoder(config.encoder),
            Retriever.from_artifact(artifact, config.retrieval),
            rankers,
            Catalog.from_artifact(artifact),
        )

    def encode(self, queries: list[str]) -> np.ndarray:
        vectors, _ = self.cache.encode_through(queries, self.encoder.encode, self.encoder.dim)
        return vectors

    def run(self, prepared: list[PreparedRequest]) -> list[RankedResponse]:
        """Serve a batch of prepared requests, batching every stage across them."""
        timings: list[dict[str, float]] = [{} for _ in prepared]
        t0 = time.perf_counter()
        with_query = [i for i, p in enumerate(prepared) if p.query is not None]
        vectors: dict[int, np.ndarray] = {}
        if with_query:
            encoded = self.encode([prepared[i].query for i in with_query])  # type: ignore[misc]
            vectors = dict(zip(with_query, encoded, strict=True))
        t1 = time.perf_counter()
        n = self.config.retrieval.n_candidates
        candidates = self.retriever.retrieve(
            [p.retrieval(n, vectors.get(i)) for i, p in enumerate(prepared)]
        )
        t2 = time.perf_counter()
        scores: list[np.ndarray | None] = [None] * len(prepared)
        for variant, ranker in self.rankers.items():
            members = [i for i, p in enumerate(prepared) if p.decision.variant == variant]
            if members:
                ranked = ranker.score([prepared[i].rank(candidates[i]) for i in members])
                for i, s in zip(members, ranked, strict=True):
                    scores[i] = s
        t3 = time.perf_counter()
        out = []
        for i, p in enumerate(prepared):
            timings[i] = {
                "encode": round((t1 - t0) * 1000, 3) if p.query is not None else 0.0,
                "retrieve": round((t2 - t1) * 1000, 3),
                "rank": round((t3 - t2) * 1000, 3),
                "total": round((t3 - t0) * 1000, 3),
            }
            out.append(
                RankedResponse(
                    request_id=p.request_id,
                    route=p.route,
                    variant=p.decision.variant,
                    degraded=False,
                    items=ranked_items(self.catalog, candidates[i], scores[i], p.k),
                    timings_ms=timings[i],
                    artifact_version=self.artifact.version,
                )
            )
        return out

    def search(
        self,
        query: str,
        user_id: str | None = None,
        k: int | None = None,
        filters: Filters | None = None,
    ) -> RankedResponse:
        p = prepare(
            "search",
            self.catalog,
            self.policy,
            k or self.config.default_k,
            query=query,
            user_id=user_id,
            filters=filters,
        )
        return self.run([p])[0]

    def recommend(self, user_id: str, k: int | None = None) -> RankedResponse:
        p = prepare(
            "recommend", self.catalog, self.policy, k or self.config.default_k, user_id=user_id
        )
        return self.run([p])[0]

    def similar(self, item_id: str, k: int | None = None) -> RankedResponse:
        p = prepare(
            "similar", self.catalog, self.policy, k or self.config.default_k, item_id=item_id
        )
        return self.run([p])[0]
