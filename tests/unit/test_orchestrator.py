"""The one request flow (``recsys.orchestrator``) without Ray: variants, deadlines, the
degraded path, upstream failures, circuit breakers and the query cache.

The stages are small scripted implementations of the stages interface (``recsys.stages``):
deterministic candidates and scores, and a knob each for lateness and failure, so every
outcome is known in advance. The real in-process stages run the same flow in
``test_pipeline.py``.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import pytest

from recsys.catalog import Catalog
from recsys.config import AdmissionConfig, RoutingConfig, VariantConfig
from recsys.orchestrator import Answer, Job, Orchestrator, StageError, breakers_for
from recsys.request import prepare
from recsys.routing import Deadline, RoutingPolicy
from recsys.stages import (
    EncodedGroup,
    LocalRanker,
    Pending,
    QueryRows,
    Ranked,
    Retrieved,
    StageSet,
    upstream,
    with_query_vectors,
)
from recsys.types import Candidates, RankQuery, RetrievalRequest

N_ITEMS, DIM = 40, 8


class BackPressureError(Exception):
    """Named as Serve's: the stage is alive, its queue full."""


class ActorDiedError(Exception):
    """Named as Ray's: the stage's replica is gone."""


def catalog() -> Catalog:
    items = pd.DataFrame(
        {
            "item_id": [f"I{i:07d}" for i in range(N_ITEMS)],
            "title": [f"item {i}" for i in range(N_ITEMS)],
            "price": np.linspace(1, 40, N_ITEMS),
            "category_l1": "home",
            "category_l2": "kitchen",
            "category_l3": "pans",
            "leaf_idx": 0,
            "brand": "acme",
            "brand_idx": 0,
        }
    )
    shoppers = pd.DataFrame({"user_id": [f"U{i:07d}" for i in range(50)]})
    return Catalog.from_frames(items, shoppers)


def task(coro: Any) -> asyncio.Task[Any]:
    return asyncio.ensure_future(coro)


class Encoder:
    def __init__(self) -> None:
        self.calls: list[list[str]] = []
        self.error: Exception | None = None

    def encode(self, queries: list[str]) -> Pending[EncodedGroup]:
        self.calls.append(list(queries))

        async def run() -> EncodedGroup:
            if self.error is not None:
                raise self.error
            rows = [np.full(DIM, len(q), np.float32) for q in queries]
            return EncodedGroup(np.stack(rows), 1.5)

        return task(run())


class Retriever:
    """Candidates 0..9 in retrieval order, offset by the request's user (so requests differ);
    records the requests it saw, vectors attached."""

    def __init__(self) -> None:
        self.seen: list[RetrievalRequest] = []
        self.error: Exception | None = None
        self.delay_s = 0.0

    def retrieve(
        self,
        requests: list[RetrievalRequest],
        encoded: Pending[EncodedGroup] | None,
        query_rows: QueryRows,
    ) -> Pending[list[Retrieved]]:
        async def run() -> list[Retrieved]:
            group = None if encoded is None else await upstream(encoded)
            if self.delay_s:
                await asyncio.sleep(self.delay_s)
            ready, timings = with_query_vectors(requests, group, query_rows)
            if self.error is not None:
                raise self.error
            self.seen.extend(ready)
            out = []
            for r, t in zip(ready, timings, strict=True):
                start = r.user_idx or 0
                idx = np.arange(start, start + 10, dtype=np.int64)
                score = np.linspace(1.0, 0.1, 10).astype(np.float32)
                zeros = np.zeros(10, np.float32)
                out.append(Retrieved(Candidates(idx, score, zeros, zeros), {**t, "retrieve": 2.0}))
            return out

        return task(run())


class Ranker:
    """Scores that reverse the retrieval order; ``delay_s`` late, ``error`` failing."""

    def __init__(self) -> None:
        self.calls: list[list[RankQuery]] = []
        self.delay_s = 0.0
        self.error: Exception | None = None

    def rank(
        self, queries: list[RankQuery], retrieved: Pending[list[Retrieved]], picks: list[int]
    ) -> Pending[list[Ranked]]:
        self.calls.append(list(queries))

        async def run() -> list[Ranked]:
            group = await upstream(retrieved)
            if self.delay_s:
                await asyncio.sleep(self.delay_s)
            if self.error is not None:
                raise self.error
            out = []
            for pos in picks:
                c = group[pos].candidates
                scores = np.arange(len(c), dtype=np.float32)  # last retrieved ranks first
                out.append(Ranked(c, scores, {**group[pos].timings, "rank": 3.0}))
            return out

        return task(run())


class Flow:
    """An orchestrator over scripted stages, two variants (control, b), and its breakers."""

    def __init__(self, deadline_ms: float = 5_000.0, query_cache_size: int = 0):
        routing = RoutingConfig(
            variants=[VariantConfig(name="control", weight=1), VariantConfig(name="b", weight=1)],
            deadline_ms=deadline_ms,
            min_ranker_budget_ms=5.0,
        )
        self.policy = RoutingPolicy(routing)
        self.catalog = catalog()
        self.encoder, self.retriever = Encoder(), Retriever()
        self.rankers = {"control": Ranker(), "b": Ranker()}
        self.breakers = breakers_for(self.policy.variants, AdmissionConfig(breaker_failures=3))
        self.orchestrator = Orchestrator(
            StageSet(self.encoder, self.retriever, dict(self.rankers)),
            self.policy,
            self.catalog,
            "v1",
            n_candidates=10,
            query_cache_size=query_cache_size,
            breakers=self.breakers,
        )
        self.deadline_ms = deadline_ms

    def user_in(self, variant: str) -> str:
        return next(u for u in self.catalog.user_index if self.policy.variant_for(u) == variant)

    def job(self, route: str = "search", **ids: Any) -> Job:
        prep = prepare(route, self.catalog, self.policy, 5, **ids)  # type: ignore[arg-type]
        return Job(prep, Deadline.starting_now(self.deadline_ms))

    def run(self, jobs: Sequence[Job]) -> list[Answer | StageError]:
        async def go() -> list[Answer | StageError]:
            answers = await self.orchestrator.run_group(jobs)
            await asyncio.sleep(0)  # let the query cache's background update run
            await asyncio.sleep(0)
            return answers

        return asyncio.run(go())


def ids(answer: Answer | StageError) -> list[str]:
    assert isinstance(answer, Answer), answer
    return [i.item_id for i in answer.response.items]


RETRIEVAL_ORDER = [f"I{i:07d}" for i in range(5)]
RANKED_ORDER = [f"I{i:07d}" for i in range(9, 4, -1)]


def test_a_group_is_ranked_per_variant_with_one_call_per_stage() -> None:
    flow = Flow()
    control, b = flow.user_in("control"), flow.user_in("b")
    jobs = [
        flow.job(query="pans"),
        flow.job(query="lids", user_id=b),
        flow.job("recommend", user_id=control),
        flow.job("similar", item_id="I0000003"),
    ]
    answers = flow.run(jobs)
    assert flow.encoder.calls == [["pans", "lids"]]  # requests without a query: no row
    assert [len(c) for c in (flow.rankers["control"].calls, flow.rankers["b"].calls)] == [1, 1]
    assert len(flow.rankers["control"].calls[0]) == 3 and len(flow.rankers["b"].calls[0]) == 1
    variants = [a.response.variant for a in answers if isinstance(a, Answer)]
    assert variants == ["control", "b", "control", "control"]
    assert ids(answers[0]) == RANKED_ORDER
    first = answers[0]
    assert isinstance(first, Answer) and not first.response.degraded
    assert set(first.timings) == {
        "encode",
        "retrieve",
        "rank",
        "group_wait",
        "chain_wall",
        "group_size",
        "total",
    }
    assert first.timings["group_size"] == 4.0
    assert "encode" not in answers[2].timings  # type: ignore[union-attr]  # recommend: no query


def test_retrieval_gets_each_query_vector_and_the_prepared_requests_are_left_alone() -> None:
    flow = Flow()
    jobs = [flow.job(query="ab"), flow.job("similar", item_id="I0000001"), flow.job(query="abc")]
    flow.run(jobs)
    vectors = [r.query_vec for r in flow.retriever.seen]
    assert vectors[1] is None
    assert vectors[0] is not None and vectors[2] is not None
    assert vectors[0][0] == 2.0 and vectors[2][0] == 3.0  # each request its own row


def test_with_query_vectors_returns_new_requests() -> None:
    requests = [RetrievalRequest(n=5, query="a"), RetrievalRequest(n=5, seed_item=2)]
    encoded = EncodedGroup(np.ones((1, DIM), np.float32), 4.0)
    ready, timings = with_query_vectors(requests, encoded, [0, None])
    assert requests[0].query_vec is None  # input untouched
    assert ready[0].query_vec is not None and ready[1] is requests[1]
    assert timings == [{"encode": 4.0}, {}]
    with pytest.raises(ValueError, match="no vectors"):
        with_query_vectors(requests, None, [0, None])


def test_a_late_ranker_is_answered_in_retrieval_order() -> None:
    flow = Flow(deadline_ms=200.0)
    flow.rankers["control"].delay_s = 1.0
    b_user = flow.user_in("b")
    answers = flow.run([flow.job(query="pans"), flow.job(query="pans", user_id=b_user)])
    late, fine = answers
    assert isinstance(late, Answer) and late.response.degraded
    assert late.response.degraded_reason == "ranker_deadline"
    assert ids(late) == RETRIEVAL_ORDER and "rank" not in late.timings
    assert isinstance(fine, Answer) and not fine.response.degraded  # the other variant's ranker
    assert flow.breakers["rank:control"].failures == 1


def test_no_budget_left_for_the_ranker_degrades_without_calling_it() -> None:
    flow = Flow()
    job = flow.job(query="pans")
    job.deadline = Deadline(job.deadline.start - 4.99, job.deadline.budget_s)  # 10 ms left
    (answer,) = flow.run([job])
    assert isinstance(answer, Answer) and answer.response.degraded_reason == "ranker_deadline"
    assert flow.rankers["control"].calls == []


def test_the_group_keeps_its_earliest_deadline() -> None:
    flow = Flow()
    flow.rankers["control"].delay_s = 0.3
    tight = Job(flow.job(query="a").request, Deadline.starting_now(200.0))
    loose = flow.job(query="b")
    answers = flow.run([loose, tight])
    assert all(isinstance(a, Answer) and a.response.degraded for a in answers)


def test_a_group_that_queued_long_skips_the_ranker_when_the_front_sheds_it() -> None:
    flow = Flow()
    flow.orchestrator.skip_ranker = lambda waited: max(waited) > 50.0
    fresh = flow.job(query="a")
    late = flow.job(query="b")
    late.deadline = Deadline(late.deadline.start - 0.2, late.deadline.budget_s)  # queued 200 ms
    (answer,) = flow.run([fresh])
    assert isinstance(answer, Answer) and not answer.response.degraded
    answers = flow.run([fresh, late])
    assert all(isinstance(a, Answer) for a in answers)
    assert [a.response.degraded_reason for a in answers] == ["ranker_shed"] * 2  # type: ignore[union-attr]
    assert ids(answers[1]) == RETRIEVAL_ORDER
    assert len(flow.rankers["control"].calls) == 1  # only the first group's


def test_a_failing_ranker_degrades_then_its_breaker_opens() -> None:
    flow = Flow()
    flow.rankers["control"].error = RuntimeError("boom")
    for _ in range(3):
        (answer,) = flow.run([flow.job(query="pans")])
        assert isinstance(answer, Answer) and answer.response.degraded_reason == "ranker_failed"
        assert ids(answer) == RETRIEVAL_ORDER
    assert flow.breakers["rank:control"].state == "open"
    calls = len(flow.rankers["control"].calls)
    (answer,) = flow.run([flow.job(query="pans")])
    assert isinstance(answer, Answer) and answer.response.degraded_reason == "ranker_unavailable"
    assert len(flow.rankers["control"].calls) == calls  # known down: not called


def test_an_overloaded_ranker_degrades_but_counts_as_alive() -> None:
    flow = Flow()
    flow.rankers["control"].error = BackPressureError("queue full")
    for _ in range(4):
        (answer,) = flow.run([flow.job(query="pans")])
        assert isinstance(answer, Answer)
        assert answer.response.degraded_reason == "ranker_overloaded"
    assert flow.breakers["rank:control"].state == "closed"


def test_a_dead_ranker_replica_opens_its_breaker_at_once() -> None:
    flow = Flow()
    flow.rankers["control"].error = ActorDiedError("gone")
    (answer,) = flow.run([flow.job(query="pans")])
    assert isinstance(answer, Answer) and answer.response.degraded_reason == "ranker_unavailable"
    assert flow.breakers["rank:control"].state == "open"


def test_a_broken_ranker_gang_opens_its_breaker_at_once() -> None:
    """The replica whose gang lost a rank ends itself: no point asking it twice more."""
    from recsys.ranker.errors import GangBrokenError

    class RemoteGangBrokenError(GangBrokenError):
        """As the caller receives it: Ray's remote error subclasses the raised class."""

    flow = Flow()
    flow.rankers["control"].error = RemoteGangBrokenError("collective failed")
    (answer,) = flow.run([flow.job(query="pans")])
    assert isinstance(answer, Answer) and answer.response.degraded_reason == "ranker_unavailable"
    assert flow.breakers["rank:control"].state == "open"


def test_retrieval_failure_fails_the_whole_group_and_opens_its_breaker() -> None:
    flow = Flow()
    flow.retriever.error = RuntimeError("index gone")
    for _ in range(3):
        answers = flow.run([flow.job(query="a"), flow.job("similar", item_id="I0000002")])
        assert all(isinstance(a, StageError) for a in answers)
        # the group had a query: the upstream call was encode+retrieve, and the encoder's
        # own answer came, so the retriever's breaker counts the failure
        assert {(a.stage, a.reason) for a in answers} == {  # type: ignore[union-attr]
            ("encode+retrieve", "failed")
        }
    assert flow.breakers["retrieve"].state == "open"
    before = len(flow.encoder.calls)
    (answer,) = flow.run([flow.job(query="a")])
    assert isinstance(answer, StageError) and answer.reason == "unavailable"
    assert answer.stage == "retrieve" and len(flow.encoder.calls) == before  # not called
    assert flow.breakers["encode"].state == "closed"


def test_an_encoder_failure_is_blamed_on_the_encoder() -> None:
    flow = Flow()
    flow.encoder.error = ActorDiedError("encoder replica died")
    (answer,) = flow.run([flow.job(query="a")])
    assert isinstance(answer, StageError) and answer.stage == "encode"
    assert answer.reason == "unavailable" and answer.down
    assert flow.breakers["encode"].state == "open"
    assert flow.breakers["retrieve"].state == "closed"
    # a request without a query does not need the encoder: still served
    (answer,) = flow.run([flow.job("similar", item_id="I0000002")])
    assert isinstance(answer, Answer) and not answer.response.degraded


def test_the_query_cache_spares_the_encoder_a_repeated_query() -> None:
    flow = Flow(query_cache_size=8)
    first = flow.run([flow.job(query="Waterproof  boots")])[0]
    again = flow.run([flow.job(query="waterproof boots")])[0]
    assert flow.encoder.calls == [["Waterproof  boots"]]
    assert isinstance(first, Answer) and "encode" in first.timings
    assert isinstance(again, Answer) and "encode" not in again.timings
    assert ids(first) == ids(again)
    flow.orchestrator.forget_queries()
    flow.run([flow.job(query="waterproof boots")])
    assert len(flow.encoder.calls) == 2


def test_a_failed_encoder_leaves_the_query_cache_as_it_was() -> None:
    flow = Flow(query_cache_size=8)
    flow.encoder.error = RuntimeError("boom")
    flow.run([flow.job(query="boots")])
    flow.encoder.error = None
    flow.run([flow.job(query="boots")])
    assert flow.encoder.calls == [["boots"], ["boots"]]


def test_every_variant_needs_a_ranker_stage() -> None:
    flow = Flow()
    stages = StageSet(flow.encoder, flow.retriever, {"control": flow.rankers["control"]})
    with pytest.raises(ValueError, match="no ranker stage"):
        Orchestrator(stages, flow.policy, flow.catalog, "v1", 10)


def test_payloads_are_frozen() -> None:
    group = EncodedGroup(np.zeros((1, DIM), np.float32), 1.0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        group.ms = 2.0  # type: ignore[misc]


class ReversingRanker:
    """A ranker object (``CandidateRanker``'s ``score``) for the in-process adapter."""

    def score(self, requests: list[Any]) -> list[np.ndarray]:
        return [np.arange(len(r.candidates), dtype=np.float32) for r in requests]


def test_a_ranker_still_waiting_for_slow_retrieval_leaves_it_to_the_fallback() -> None:
    """The ranker's share of the deadline runs out while retrieval is still running: the
    in-process ranker is cancelled, retrieval is not, and the answer comes in its order."""
    flow = Flow(deadline_ms=400.0)  # ranker share: 300 ms (a quarter kept for the fallback)
    flow.retriever.delay_s = 0.33
    local = LocalRanker(ReversingRanker())  # type: ignore[arg-type]
    flow.orchestrator.stages = StageSet(
        flow.encoder, flow.retriever, {"control": local, "b": local}
    )
    (answer,) = flow.run([flow.job(query="pans")])
    assert isinstance(answer, Answer), answer
    assert answer.response.degraded_reason == "ranker_deadline"
    assert ids(answer) == RETRIEVAL_ORDER
