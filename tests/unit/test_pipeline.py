"""The whole request path in one process: search, recommend, similar, filters, routing."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from recsys.catalog import UnknownFilterError, UnknownIdError
from recsys.config import AppConfig, RoutingConfig, VariantConfig
from recsys.pipeline import Pipeline, prepare, ranked_items
from recsys.types import Candidates, Filters, RetrievalRequest


@pytest.fixture(scope="module")
def pipeline(tiny_artifact: Path) -> Pipeline:
    routing = RoutingConfig(
        variants=[VariantConfig(name="control", weight=1), VariantConfig(name="b", weight=1)]
    )
    return Pipeline.load(AppConfig(artifacts=str(tiny_artifact), routing=routing))


@pytest.fixture(scope="module")
def items(tiny_artifact: Path) -> pd.DataFrame:
    return pd.read_parquet(tiny_artifact / "data" / "items.parquet")


def test_search_for_an_items_title_finds_it(pipeline: Pipeline, items: pd.DataFrame) -> None:
    hits = 0
    for row in items.sample(20, random_state=1).itertuples():
        got = [i.item_id for i in pipeline.search(row.title, k=10).items]
        hits += row.item_id in got
    assert hits >= 16  # the exact title is the nearest neighbour; the ranker keeps it on top


def test_results_are_distinct_sorted_and_k_long(pipeline: Pipeline) -> None:
    resp = pipeline.search("wireless earbuds", k=25)
    scores = [i.score for i in resp.items]
    assert len(resp.items) == 25 and scores == sorted(scores, reverse=True)
    assert len({i.item_id for i in resp.items}) == 25
    assert resp.degraded is False and set(resp.timings_ms) >= {"encode", "retrieve", "rank"}


def test_filters_restrict_results(pipeline: Pipeline, items: pd.DataFrame) -> None:
    dept = items["category_l1"].iloc[0]
    resp = pipeline.search("gift idea", k=10, filters=Filters(category=dept))
    by_id = items.set_index("item_id")
    assert resp.items and all(by_id.loc[i.item_id, "category_l1"] == dept for i in resp.items)
    resp = pipeline.search("gift idea", k=10, filters=Filters(price_min=20, price_max=40))
    assert all(20 <= i.price <= 40 for i in resp.items)
    with pytest.raises(UnknownFilterError):
        pipeline.search("x", filters=Filters(brand="No Such Brand"))


def test_recommend_is_personal_and_similar_excludes_the_seed(pipeline: Pipeline) -> None:
    a = [i.item_id for i in pipeline.recommend("U0000001", k=10).items]
    b = [i.item_id for i in pipeline.recommend("U0000002", k=10).items]
    assert len(a) == 10 and a != b
    seed = pipeline.catalog.item_ids[5]
    sim = pipeline.similar(seed, k=5)
    assert seed not in [i.item_id for i in sim.items] and len(sim.items) == 5
    with pytest.raises(UnknownIdError, match="unknown user"):
        pipeline.recommend("U9999999")


def test_known_shopper_changes_search_and_gets_their_variant(pipeline: Pipeline) -> None:
    anon = pipeline.search("running shoes", k=10)
    users = [f"U{i:07d}" for i in range(40)]
    variants = {pipeline.search("running shoes", user_id=u, k=1).variant for u in users}
    assert anon.variant == "control" and variants == {"control", "b"}
    personal = [pipeline.search("running shoes", user_id=u, k=10) for u in users[:5]]
    assert any([i.item_id for i in p.items] != [i.item_id for i in anon.items] for p in personal)


def test_prepare_decides_route_and_personalisation(pipeline: Pipeline) -> None:
    p = prepare("search", pipeline.catalog, pipeline.policy, 5, query="x", user_id="U0000004")
    assert p.decision.personalised and p.user_idx == 4
    r = p.retrieval(200, np.zeros(384, np.float32))
    assert isinstance(r, RetrievalRequest) and r.user_idx == 4 and r.n == 200
    anon = prepare("search", pipeline.catalog, pipeline.policy, 5, query="x")
    assert not anon.decision.personalised and anon.retrieval(50).user_idx is None


def test_ranked_items_in_retrieval_order_when_degraded(pipeline: Pipeline) -> None:
    cands = Candidates(
        item_idx=np.array([4, 2, 9]),
        score=np.array([0.9, 0.8, 0.1], np.float32),
        query_cos=np.zeros(3, np.float32),
        history_cos=np.zeros(3, np.float32),
    )
    degraded = ranked_items(pipeline.catalog, cands, None, k=2)
    assert [i.item_id for i in degraded] == [
        pipeline.catalog.item_ids[4],
        pipeline.catalog.item_ids[2],
    ]
    ranked = ranked_items(pipeline.catalog, cands, np.array([0.0, 5.0, 1.0]), k=3)
    assert [i.score for i in ranked] == [5.0, 1.0, 0.0]


def test_shopper_without_history_gets_popular_candidates(pipeline: Pipeline) -> None:
    no_history = np.flatnonzero(~pipeline.retriever.has_history)
    if len(no_history) == 0:
        pytest.skip("every shopper of the tiny world has history")
    cands = pipeline.retriever.retrieve([RetrievalRequest(n=20, user_idx=int(no_history[0]))])[0]
    assert cands.source == "popular" and len(cands) == 20


def test_run_works_where_an_event_loop_already_runs(pipeline: Pipeline) -> None:
    """An app factory or a notebook calls the synchronous API from inside a running loop."""
    import asyncio

    async def inside() -> list[str]:
        return [i.item_id for i in pipeline.search("desk lamp", k=3).items]

    assert asyncio.run(inside()) == [i.item_id for i in pipeline.search("desk lamp", k=3).items]
