"""The stages the orchestrator calls, what travels between them, and the in-process adapter.

A request group goes encode -> retrieve -> rank (one ranker per variant). Each stage call
takes the previous stage's answer as a *pending* value (awaitable, cancellable) rather than
its result, so an adapter can chain calls without the orchestrator awaiting intermediate
results: Serve deployment handles pass a ``DeploymentResponse`` straight on
(``deployments.handles``), the in-process adapters here chain ``asyncio`` tasks. Adapters
can be mixed per stage (a partial topology: say the ranker in its own deployment, encoder
and retriever inside the ingress).

The payloads are frozen dataclasses, one per stage answer; a request without a query has no
row in the encoder's answer (``None``, never a sentinel). The helpers below are the per-group
work both the Serve deployments and the in-process adapters do, so the two cannot drift;
none mutates its input.

Light on purpose: no torch, transformers, faiss or Ray here (the ingress imports it); the
stage objects are passed in already built.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Awaitable, Callable, Generator, Sequence, Sized
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import numpy as np

from recsys.cache import EmbeddingCache
from recsys.types import Candidates, RankQuery, RankRequest, RetrievalRequest

if TYPE_CHECKING:
    from recsys.encoder import QueryEncoder
    from recsys.ranking import CandidateRanker
    from recsys.retrieval import Retriever

T = TypeVar("T")
T_co = TypeVar("T_co", covariant=True)
S = TypeVar("S", list[Any], np.ndarray)


# ---- payloads ------------------------------------------------------------------------------


@dataclass(frozen=True)
class EncodedGroup:
    """The encoder's answer to one call: the group's query vectors, float32 ``(m, d)``, rows
    in call order, and the encode time in ms."""

    vectors: np.ndarray
    ms: float


@dataclass(frozen=True)
class Retrieved:
    """One request's retrieval answer: its candidates and the stage times so far (ms)."""

    candidates: Candidates
    timings: dict[str, float]


@dataclass(frozen=True)
class Ranked:
    """One request's ranked answer: the candidates, their scores and the stage times (ms)."""

    candidates: Candidates
    scores: np.ndarray
    timings: dict[str, float]


QueryRows = list[int | None]
"""Each request's row in its group's :class:`EncodedGroup` (None: the request has no query
vector to take from the encoder)."""


def split_by_sizes(flat: S, groups: Sequence[Sized]) -> list[S]:
    """``flat`` (a batch answer, in call order) cut back into one slice per call's group."""
    bounds = np.cumsum([0, *(len(group) for group in groups)])
    return [flat[a:b] for a, b in zip(bounds[:-1], bounds[1:], strict=True)]


def with_query_vectors(
    requests: Sequence[RetrievalRequest], encoded: EncodedGroup | None, rows: QueryRows
) -> tuple[list[RetrievalRequest], list[dict[str, float]]]:
    """The group's retrieval requests with their encoded query vectors (new objects; the
    inputs are left as they are), and each request's encode time (empty: not encoded)."""
    out: list[RetrievalRequest] = []
    timings: list[dict[str, float]] = []
    for request, row in zip(requests, rows, strict=True):
        if row is None:
            out.append(request)
            timings.append({})
            continue
        if encoded is None:
            raise ValueError("a request has a query row but its group has no vectors")
        out.append(dataclasses.replace(request, query_vec=encoded.vectors[row]))
        timings.append({"encode": encoded.ms})
    return out, timings


def rank_requests(
    queries: Sequence[RankQuery], retrieved: Sequence[Retrieved], picks: Sequence[int]
) -> tuple[list[RankRequest], list[dict[str, float]]]:
    """What a ranker scores for one group: ``picks`` are the positions in the group's
    retrieval answer that this ranker variant serves, in the order of ``queries``."""
    requests = [
        RankRequest.of(query, retrieved[pos].candidates)
        for query, pos in zip(queries, picks, strict=True)
    ]
    return requests, [retrieved[pos].timings for pos in picks]


# ---- the interface -------------------------------------------------------------------------


class Pending(Protocol[T_co]):
    """A stage's answer on its way: awaitable once or more, and cancellable (an
    ``asyncio.Task``, a Serve ``DeploymentResponse``)."""

    def __await__(self) -> Generator[Any, None, T_co]: ...

    def cancel(self) -> Any: ...


class EncodeStage(Protocol):
    def encode(self, queries: list[str]) -> Pending[EncodedGroup]: ...


class RetrieveStage(Protocol):
    def retrieve(
        self,
        requests: list[RetrievalRequest],
        encoded: Pending[EncodedGroup] | None,
        query_rows: QueryRows,
    ) -> Pending[list[Retrieved]]: ...


class RankStage(Protocol):
    def rank(
        self, queries: list[RankQuery], retrieved: Pending[list[Retrieved]], picks: list[int]
    ) -> Pending[list[Ranked]]: ...


@dataclass(frozen=True)
class StageSet:
    """The stages one orchestrator calls: an encoder, a retriever, a ranker per variant."""

    encoder: EncodeStage
    retriever: RetrieveStage
    rankers: dict[str, RankStage]


# ---- in-process adapters -------------------------------------------------------------------

Runner = Callable[[Callable[[], T]], Awaitable[T]]
"""How an in-process stage runs its (blocking, CPU-bound) work from the event loop."""


async def run_inline(work: Callable[[], T]) -> T:
    """On the event loop itself (one caller at a time: ``Pipeline.run``, tests)."""
    return work()


def run_in(executor: Executor) -> Runner[Any]:
    """In ``executor``'s threads, so the event loop keeps accepting (and shedding) requests
    while torch computes (the fused topology: one worker thread per group in flight, so the
    stage objects must be safe to call from two threads at once)."""

    async def run(work: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(executor, work)

    return run


async def upstream(pending: Pending[T]) -> T:
    """The previous stage's answer, awaited without passing a cancellation on to it: another
    stage (a ranker of another variant, the fallback to retrieval order) may still need it
    when this call is cancelled (its deadline share ran out)."""
    return await asyncio.shield(_as_future(pending))


def _as_future(pending: Pending[T]) -> asyncio.Future[T]:
    if isinstance(pending, asyncio.Future):
        return pending
    return asyncio.ensure_future(pending)


def _timed(work: Callable[[], T]) -> Callable[[], tuple[T, float]]:
    def run() -> tuple[T, float]:
        started = time.perf_counter()
        out = work()
        return out, (time.perf_counter() - started) * 1000.0

    return run


class LocalEncoder:
    """:class:`~recsys.encoder.QueryEncoder` in this process, behind its query cache."""

    def __init__(
        self, encoder: QueryEncoder, cache_size: int, runner: Runner[Any] = run_inline
    ) -> None:
        self.encoder = encoder
        self.cache = EmbeddingCache(cache_size)
        self.runner = runner
        self.served = 0

    def encode(self, queries: list[str]) -> asyncio.Task[EncodedGroup]:
        return asyncio.ensure_future(self._encode(list(queries)))

    async def _encode(self, queries: list[str]) -> EncodedGroup:
        def work() -> np.ndarray:
            vectors, _ = self.cache.encode_through(queries, self.encoder.encode, self.encoder.dim)
            return vectors

        vectors, ms = await self.runner(_timed(work))
        self.served += len(queries)
        return EncodedGroup(vectors, ms)


class LocalRetriever:
    """:class:`~recsys.retrieval.Retriever` in this process."""

    def __init__(self, retriever: Retriever, runner: Runner[Any] = run_inline) -> None:
        self.retriever = retriever
        self.runner = runner
        self.served = 0

    def retrieve(
        self,
        requests: list[RetrievalRequest],
        encoded: Pending[EncodedGroup] | None,
        query_rows: QueryRows,
    ) -> asyncio.Task[list[Retrieved]]:
        return asyncio.ensure_future(self._retrieve(list(requests), encoded, list(query_rows)))

    async def _retrieve(
        self,
        requests: list[RetrievalRequest],
        encoded: Pending[EncodedGroup] | None,
        query_rows: QueryRows,
    ) -> list[Retrieved]:
        group = None if encoded is None else await upstream(encoded)
        ready, so_far = with_query_vectors(requests, group, query_rows)
        candidates, ms = await self.runner(_timed(lambda: self.retriever.retrieve(ready)))
        self.served += len(ready)
        return [
            Retrieved(c, {**t, "retrieve": ms}) for c, t in zip(candidates, so_far, strict=True)
        ]


class LocalRanker:
    """:class:`~recsys.ranking.CandidateRanker` (one variant) in this process."""

    def __init__(self, ranker: CandidateRanker, runner: Runner[Any] = run_inline) -> None:
        self.ranker = ranker
        self.runner = runner
        self.served = 0

    def rank(
        self, queries: list[RankQuery], retrieved: Pending[list[Retrieved]], picks: list[int]
    ) -> asyncio.Task[list[Ranked]]:
        return asyncio.ensure_future(self._rank(list(queries), retrieved, list(picks)))

    async def _rank(
        self, queries: list[RankQuery], retrieved: Pending[list[Retrieved]], picks: list[int]
    ) -> list[Ranked]:
        requests, so_far = rank_requests(queries, await upstream(retrieved), picks)
        scores, ms = await self.runner(_timed(lambda: self.ranker.score(requests)))
        self.served += len(requests)
        return [
            Ranked(r.candidates, s, {**t, "rank": ms})
            for r, s, t in zip(requests, scores, so_far, strict=True)
        ]
