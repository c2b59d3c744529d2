"""The whole request path in one process: the orchestrator over in-process stage objects.

``prepare`` (ids, filters, route decision) and ``ranked_items`` (top-k with display fields)
are the pure steps around the stages (``recsys.request``); the flow between them is
``recsys.orchestrator``'s, the same the Serve ingress runs, here over the in-process
adapters of ``recsys.stages`` with the work inline (one caller at a time). Used by ``recsys
query``, evaluation, the benchmark's in-process bound and its monolith.
"""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor

from recsys.artifacts import Artifact
from recsys.cache import EmbeddingCache
from recsys.catalog import Catalog
from recsys.config import AppConfig
from recsys.encoder import QueryEncoder
from recsys.orchestrator import Answer, Job, Orchestrator
from recsys.ranking import CandidateRanker
from recsys.request import PreparedRequest, prepare, ranked_items
from recsys.request import new_request_id as new_request_id  # re-exported for callers
from recsys.retrieval import Retriever
from recsys.routing import Deadline, RoutingPolicy
from recsys.stages import LocalEncoder, LocalRanker, LocalRetriever, StageSet
from recsys.types import Filters, RankedResponse

__all__ = ["Pipeline", "PreparedRequest", "new_request_id", "prepare", "ranked_items"]

NO_DEADLINE_MS = 86_400_000.0
"""The budget of a request run without a deadline (a day: the ranker is always awaited)."""


class Pipeline:
    """The whole request path in one process (``recsys query``, tests, evaluation, the
    benchmark). :meth:`run` is synchronous: call it from one thread at a time (the query
    cache is not thread-safe); :meth:`answer` is the same from a running event loop."""

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
        self.retriever = retriever
        self.rankers = rankers
        self.catalog = catalog
        self.policy = RoutingPolicy(config.routing)
        self.stages = StageSet(
            LocalEncoder(encoder, config.encoder.cache_size),
            LocalRetriever(retriever),
            {name: LocalRanker(ranker) for name, ranker in rankers.items()},
        )
        self.orchestrator = Orchestrator(
            self.stages,
            self.policy,
            catalog,
            artifact.version,
            config.retrieval.n_candidates,
        )
        self._loops = threading.local()

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

    @property
    def cache(self) -> EmbeddingCache:
        """The encoder's query cache (the benchmark swaps it for an empty one)."""
        encoder = self.stages.encoder
        assert isinstance(encoder, LocalEncoder)
        return encoder.cache

    @cache.setter
    def cache(self, cache: EmbeddingCache) -> None:
        encoder = self.stages.encoder
        assert isinstance(encoder, LocalEncoder)
        encoder.cache = cache

    async def answer(
        self, prepared: list[PreparedRequest], deadline_ms: float | None = None
    ) -> list[RankedResponse]:
        """Each request's response, the stages batched across them; ``deadline_ms``: the
        requests' budget from now (None: the ranker is always awaited). Raises the
        :class:`~recsys.orchestrator.StageError` of a request that could not be answered."""
        budget = NO_DEADLINE_MS if deadline_ms is None else deadline_ms
        deadline = Deadline.starting_now(budget)
        jobs = [Job(p, Deadline(deadline.start, deadline.budget_s)) for p in prepared]
        out = []
        for answer in await self.orchestrator.run_group(jobs):
            if not isinstance(answer, Answer):
                raise answer
            out.append(answer.response)
        return out

    def run(
        self, prepared: list[PreparedRequest], deadline_ms: float | None = None
    ) -> list[RankedResponse]:
        """:meth:`answer` from synchronous code (on an event loop of this thread's own). Called
        where an event loop already runs in this thread (an app factory, a notebook), it
        blocks that loop and computes on a thread of its own, as a plain function would."""
        try:
            asyncio.get_running_loop()
        except RuntimeError:  # no loop here: the usual case
            runner = getattr(self._loops, "runner", None)
            if runner is None:
                runner = self._loops.runner = asyncio.Runner()
            return runner.run(self.answer(prepared, deadline_ms))
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="pipeline") as thread:
            return thread.submit(self.run, prepared, deadline_ms).result()

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
