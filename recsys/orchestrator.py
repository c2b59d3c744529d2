"""The one request flow: encode -> retrieve -> rank per variant -> top-k, or retrieval order.

Every front runs this: the Serve ingress (over deployment handles in the split topology, over
in-process stage objects in the fused one, or a mix), :class:`recsys.pipeline.Pipeline`
(``recsys query``, evaluation, the benchmark's in-process bound) and the benchmark's
monolith. The stages sit behind the small interface of ``recsys.stages``.

For a group of concurrent requests (``recsys.coalesce``) it makes one call per stage and
hands each stage's pending answer to the next call, so on the happy path it awaits only the
ranked answers; only when a ranked answer misses its share of the deadline
(``RoutingPolicy.ranker_budget_s``), its ranker is overloaded, failing or known down (circuit
breaker open) does it await the retrieved candidates and answer in their order
(``degraded``). When retrieval itself fails, every request of the group gets a
:class:`StageError` (a 503 for the HTTP front), blamed on the encoder when its own answer
failed. The group keeps the earliest deadline of its requests. Under overload the front may
shed the ranker for a group that queued long (brownout: retrieval order, ``ranker_shed``).

Plain asyncio, no Ray, no model stack: unit-tested with in-process stages.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from recsys.admission import CircuitBreaker
from recsys.cache import EmbeddingCache, normalise_query
from recsys.catalog import Catalog
from recsys.config import AdmissionConfig
from recsys.request import PreparedRequest, ranked_items
from recsys.routing import Deadline, RoutingPolicy
from recsys.stages import EncodedGroup, Pending, Ranked, Retrieved, StageSet
from recsys.types import RankedResponse, Route

log = logging.getLogger("recsys.orchestrator")


class StageError(Exception):
    """A stage could not answer in time or at all: the request gets a 503."""

    def __init__(
        self,
        stage: str,
        reason: str,
        detail: str,
        *,
        down: bool = False,
        headers: dict[str, str] | None = None,
    ):
        super().__init__(detail)
        self.stage, self.reason, self.detail = stage, reason, detail
        self.down = down
        """The stage's replica was reported dead or the deployment unavailable."""
        self.headers = headers
        """Retry headers of the answer (default: the configured ``Retry-After``)."""

    def copy(self) -> StageError:
        return StageError(self.stage, self.reason, self.detail, down=self.down)


DOWN_ERRORS = (
    "ActorDiedError",
    "RayActorError",
    "ActorUnavailableError",
    "AioRpcError",
    "DeploymentUnavailableError",
    "GangBrokenError",  # a rank of the ranker's gang died: that replica ends itself
)
"""Errors (by class name, so that this module needs no Ray) meaning the stage's replica or
deployment is gone: its breaker opens at once."""
OVERLOADED_ERRORS = ("BackPressureError",)
"""Errors meaning the stage is alive but its queue is full (not a failure of the stage)."""


def stage_failure(exc: BaseException, stage: str) -> StageError:
    """What a stage call's exception means for the request (timeouts are handled apart)."""
    names = {cls.__name__ for cls in type(exc).__mro__}
    if names & set(OVERLOADED_ERRORS):
        return StageError(stage, "overloaded", f"{stage} is overloaded; retry later")
    log.warning("%s failed: %r", stage, exc)
    if "DeploymentUnavailableError" in names:
        return StageError(stage, "unavailable", f"{stage} is unavailable: {exc}", down=True)
    if names & set(DOWN_ERRORS):
        name = type(exc).__name__
        detail = f"{stage} is unavailable (its replica died: {name}); retry later"
        return StageError(stage, "unavailable", detail, down=True)
    return StageError(stage, "failed", f"{stage} failed ({type(exc).__name__}); retry later")


async def await_stage(pending: Pending[Any], timeout_s: float, stage: str) -> Any:
    """Await a stage's answer within ``timeout_s``; failures become :class:`StageError`."""
    if timeout_s <= 0:
        pending.cancel()
        raise StageError(stage, "deadline", f"request deadline exceeded before {stage}")
    try:
        return await asyncio.wait_for(_awaited(pending), timeout=timeout_s)
    except TimeoutError:
        pending.cancel()
        detail = f"{stage} did not answer within {timeout_s * 1000:.0f} ms"
        raise StageError(stage, "deadline", detail) from None
    except StageError:
        raise
    except Exception as exc:  # a replica died or raised: answer 503, never hang
        raise stage_failure(exc, stage) from exc


async def _awaited(pending: Pending[Any]) -> Any:
    return await pending


@dataclass
class Job:
    """One request waiting for its group: what to compute and its own deadline."""

    request: PreparedRequest
    deadline: Deadline


@dataclass(frozen=True)
class Answer:
    """One request's answer and its timings (ms; also in the response)."""

    response: RankedResponse
    timings: dict[str, float]


class Observer(Protocol):
    """What the orchestrator reports as it goes (the Serve ingress records metrics)."""

    def group_done(self, size: int, chain_ms: float) -> None: ...

    def degraded(self, route: Route, reason: str) -> None: ...

    def query_cache(self, hits: int, lookups: int, hit_ratio: float) -> None: ...


class NoObserver:
    def group_done(self, size: int, chain_ms: float) -> None:
        pass

    def degraded(self, route: Route, reason: str) -> None:
        pass

    def query_cache(self, hits: int, lookups: int, hit_ratio: float) -> None:
        pass


def breakers_for(variants: Sequence[str], config: AdmissionConfig) -> dict[str, CircuitBreaker]:
    """One circuit breaker per stage: ``encode``, ``retrieve`` and ``rank:<variant>``."""
    return {
        stage: CircuitBreaker(stage, config.breaker_failures, config.breaker_open_s)
        for stage in ("encode", "retrieve", *(f"rank:{v}" for v in variants))
    }


class Orchestrator:
    """Answers groups of prepared requests through a :class:`~recsys.stages.StageSet`."""

    def __init__(
        self,
        stages: StageSet,
        policy: RoutingPolicy,
        catalog: Catalog,
        artifact_version: str,
        n_candidates: int,
        *,
        query_cache_size: int = 0,
        breakers: Mapping[str, CircuitBreaker] | None = None,
        observer: Observer | None = None,
        skip_ranker: Callable[[Sequence[float]], bool] | None = None,
    ):
        missing = set(policy.variants) - set(stages.rankers)
        if missing:
            raise ValueError(f"no ranker stage for variants {sorted(missing)}")
        self.stages = stages
        self.policy = policy
        self.catalog = catalog
        self.artifact_version = artifact_version
        self.n_candidates = n_candidates
        self.query_cache = EmbeddingCache(query_cache_size)
        self.breakers = dict(breakers or breakers_for(policy.variants, AdmissionConfig()))
        self.observer: Observer = observer or NoObserver()
        self.skip_ranker = skip_ranker
        """Brownout (``AdmissionPolicy.brownout``): given how long the group's requests queued
        (ms), whether to answer it in retrieval order at once (``ranker_shed``)."""
        self._background: set[asyncio.Task[None]] = set()

    def forget_queries(self) -> None:
        """Empty the query cache (after warm-up, whose queries are not the shoppers')."""
        self.query_cache = EmbeddingCache(self.query_cache.capacity)

    async def run_group(self, group: Sequence[Job]) -> list[Answer | StageError]:
        """Each request's answer, or the :class:`StageError` it gets, in group order."""
        if not group:
            return []
        waited = [job.deadline.elapsed_ms() for job in group]  # queued for a group until now
        preps = [job.request for job in group]
        deadline = min((job.deadline for job in group), key=lambda d: d.start + d.budget_s)
        queries, rows, cached = self._query_vectors(preps)
        needed = ["encode", "retrieve"] if queries else ["retrieve"]
        for stage in needed:  # a stage known to be down is not waited out
            breaker = self.breakers[stage]
            if not breaker.allow():
                return [StageError(stage, "unavailable", breaker.describe()) for _ in group]
        encoded = self.stages.encoder.encode(queries) if queries else None
        retrieved = self.stages.retriever.retrieve(
            [p.retrieval(self.n_candidates, v) for p, v in zip(preps, cached, strict=True)],
            encoded,
            rows,
        )
        started = time.perf_counter()
        ranked, reasons, ranker_errors = await self._rank(preps, retrieved, deadline, waited)
        fallback: list[Retrieved] | StageError | None = None
        if any(reasons):  # was it the ranker, or retrieval itself? Retrieval decides.
            upstream = "encode+retrieve" if queries else "retrieve"
            try:
                fallback = await await_stage(retrieved, deadline.remaining_s(), upstream)
            except StageError as exc:
                fallback = exc
        await self._judge(needed, encoded, fallback, ranker_errors)
        chain_ms = (time.perf_counter() - started) * 1000.0
        answers = [
            self._answer(job, ranked[i], reasons[i], fallback, i, waited[i], chain_ms, len(group))
            for i, job in enumerate(group)
        ]
        self.observer.group_done(len(group), chain_ms)
        if encoded is not None and self.query_cache.capacity:  # off the answers' path
            task = asyncio.ensure_future(self._remember(queries, encoded))
            self._background.add(task)
            task.add_done_callback(self._background.discard)
        return answers

    def _query_vectors(
        self, preps: Sequence[PreparedRequest]
    ) -> tuple[list[str], list[int | None], list[np.ndarray | None]]:
        """The queries the encoder must see (those the query cache does not hold), each
        request's row among them (None: none), and the cached vectors."""
        queries: list[str] = []
        rows: list[int | None] = []
        cached: list[np.ndarray | None] = []
        for p in preps:
            vec = None if p.query is None else self.query_cache.get(normalise_query(p.query))
            cached.append(vec)
            if p.query is not None and vec is None:
                rows.append(len(queries))
                queries.append(p.query)
            else:
                rows.append(None)
        lookups = sum(p.query is not None for p in preps)
        if lookups and self.query_cache.capacity:
            hits = sum(vec is not None for vec in cached)
            self.observer.query_cache(hits, lookups, self.query_cache.hit_ratio)
        return queries, rows, cached

    async def _rank(
        self,
        preps: Sequence[PreparedRequest],
        retrieved: Pending[list[Retrieved]],
        deadline: Deadline,
        waited: Sequence[float],
    ) -> tuple[list[Ranked | None], list[str | None], dict[str, StageError]]:
        """Each request's ranked answer, or why it has none (a degraded reason), and the
        errors of the rankers that failed."""
        ranked: list[Ranked | None] = [None] * len(preps)
        reasons: list[str | None] = [None] * len(preps)
        errors: dict[str, StageError] = {}
        budget = self.policy.ranker_budget_s(deadline)
        if budget is None:
            return ranked, ["ranker_deadline"] * len(preps), errors
        if self.skip_ranker is not None and self.skip_ranker(waited):  # a long queue behind
            return ranked, ["ranker_shed"] * len(preps), errors
        by_variant: dict[str, list[int]] = {}
        for i, p in enumerate(preps):
            by_variant.setdefault(p.decision.variant, []).append(i)
        calls = {}
        for variant, picks in by_variant.items():
            if not self.breakers[f"rank:{variant}"].allow():  # down: degrade at once
                for i in picks:
                    reasons[i] = "ranker_unavailable"
                continue
            pending = self.stages.rankers[variant].rank(
                [preps[i].rank_query() for i in picks], retrieved, picks
            )
            calls[variant] = await_stage(pending, budget, "rank")
        outcomes = await asyncio.gather(*calls.values(), return_exceptions=True)
        for variant, outcome in zip(calls, outcomes, strict=True):
            picks = by_variant[variant]
            if isinstance(outcome, StageError):
                errors[variant] = outcome
                for i in picks:
                    reasons[i] = f"ranker_{outcome.reason}"
            elif isinstance(outcome, BaseException):
                raise outcome
            else:
                self.breakers[f"rank:{variant}"].record_success()
                for i, answer in zip(picks, outcome, strict=True):
                    ranked[i] = answer
        return ranked, reasons, errors

    async def _judge(
        self,
        needed: list[str],
        encoded: Pending[EncodedGroup] | None,
        fallback: list[Retrieved] | StageError | None,
        ranker_errors: dict[str, StageError],
    ) -> None:
        """Tell each stage's breaker how its call went: a ranker failed only when retrieval
        itself answered; when retrieval failed, the encoder did if its own answer failed."""
        if not isinstance(fallback, StageError):
            for stage in needed:
                self.breakers[stage].record_success()
            for variant, exc in ranker_errors.items():
                if exc.reason != "overloaded":  # a full queue means alive: not a failure
                    self.breakers[f"rank:{variant}"].record_failure(exc.detail, down=exc.down)
            return
        if fallback.reason == "overloaded":
            return
        blamed = "retrieve"
        if encoded is not None:
            try:
                await asyncio.wait_for(_awaited(encoded), timeout=0.05)
            except Exception:  # the encoder's own answer failed or never came
                blamed = "encode"
        self.breakers[blamed].record_failure(fallback.detail, down=fallback.down)
        if blamed == "encode":
            fallback.stage = "encode"

    def _answer(
        self,
        job: Job,
        ranked: Ranked | None,
        reason: str | None,
        fallback: list[Retrieved] | StageError | None,
        i: int,
        waited_ms: float,
        chain_ms: float,
        size: int,
    ) -> Answer | StageError:
        prep = job.request
        if ranked is not None:
            candidates, scores, timings = ranked.candidates, ranked.scores, dict(ranked.timings)
        elif isinstance(fallback, StageError):
            return fallback.copy()
        else:
            assert fallback is not None and reason is not None
            candidates, scores, timings = fallback[i].candidates, None, dict(fallback[i].timings)
            self.observer.degraded(prep.route, reason)
        timings["group_wait"] = waited_ms
        timings["chain_wall"] = chain_ms
        timings["group_size"] = float(size)
        timings["total"] = job.deadline.elapsed_ms()
        response = RankedResponse(
            request_id=prep.request_id,
            route=prep.route,
            variant=prep.decision.variant,
            degraded=reason is not None,
            degraded_reason=reason,
            items=ranked_items(self.catalog, candidates, scores, prep.k),
            timings_ms={key: round(v, 3) for key, v in timings.items()},
            artifact_version=self.artifact_version,
        )
        return Answer(response, timings)

    async def _remember(self, queries: list[str], encoded: Pending[EncodedGroup]) -> None:
        """Keep the group's new query vectors (the encoder's answer is resolved by now on the
        happy path; a failed or late encoder leaves the cache as it was)."""
        try:
            group = await asyncio.wait_for(_awaited(encoded), timeout=5.0)
        except Exception:  # the request path already answered for this failure
            return
        for query, vec in zip(queries, group.vectors, strict=True):
            self.query_cache.put(normalise_query(query), vec)
