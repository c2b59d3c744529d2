"""Query streams (repeat share, variants, schedule rewrite), cache replay, spread, topology."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from recsys.bench.analysis import spread
from recsys.bench.caches import CacheTier, cache_tiers, stream_hit_rates
from recsys.bench.config import MAIN_SYSTEMS
from recsys.bench.streams import (
    CatalogTerms,
    StreamMaker,
    longtail_queries,
    reorder,
    repeat_share,
    search_queries,
    typo,
    with_queries,
)
from recsys.bench.topology import (
    TopologyUnavailableError,
    layout_of,
    supports_layout,
    with_layout,
)
from recsys.config import AppConfig
from recsys.traffic.config import ConstantShape, RouteMix, SamplingConfig, TrafficConfig
from recsys.traffic.schedule import Workload, build_schedule


def head_queries(n: int = 300) -> tuple[list[str], np.ndarray]:
    """A steep head like the artifact's: Zipf frequencies over ``n`` queries."""
    queries = [f"query number {i} shoes" for i in range(n)]
    freq = 1.0 / np.arange(1, n + 1) ** 1.1
    return queries, freq / freq.sum()


def catalog(n: int = 5000) -> CatalogTerms:
    """Items like the synthetic world's: a leaf, a brand, some attributes, a title of words."""
    rng = np.random.default_rng(0)
    leaves = [f"leaf{i}" for i in range(80)]
    vocabulary = [f"word{i}" for i in range(400)]
    items = pd.DataFrame(
        {
            "title": [" ".join(rng.choice(vocabulary, rng.integers(3, 8))) for _ in range(n)],
            "category_l3": rng.choice(leaves, n),
            "brand": rng.choice([f"brand{i}" for i in range(120)], n),
            "colour": rng.choice(["red", "blue", "black", None], n),
            "material": rng.choice(["wool", "steel", None], n),
            "size": rng.choice(["1 l", "xl", None], n),
            "popularity": rng.pareto(1.5, n) + 1e-6,
        }
    )
    return CatalogTerms.from_items(items)


def test_repeat_share_counts_normalised_earlier_occurrences() -> None:
    assert repeat_share([]) == 0.0
    assert repeat_share(["a", "b", "A ", "c", "b"]) == pytest.approx(2 / 5)


def test_the_head_stream_repeats_most_searches_and_the_longtail_at_most_half() -> None:
    head, p = head_queries()
    rng = np.random.default_rng(1)
    n = 90_000  # the searches of a full benchmark run: repeats grow with the run's length
    cached = list(np.asarray(head)[rng.choice(len(head), size=n, p=p)])
    assert repeat_share(cached) > 0.8
    longtail = longtail_queries(n, head, p, catalog(), np.random.default_rng(2))
    assert len(longtail) == n
    assert 0.1 < repeat_share(longtail) <= 0.5
    # variants are made of catalog words, not just the head
    assert sum(q.startswith("brand") or q.startswith("leaf") for q in longtail) > n // 10


def test_longtail_with_no_head_share_hardly_repeats() -> None:
    head, p = head_queries()
    queries = longtail_queries(5000, head, p, catalog(), np.random.default_rng(3), head_share=0)
    assert repeat_share(queries) < 0.35
    assert not set(queries) & set(head)  # a changed head query is never the head query


def test_typo_and_reorder_change_the_text_but_keep_its_letters_close() -> None:
    rng = np.random.default_rng(4)
    for _ in range(50):
        text = "wireless running shoes"
        changed = typo(text, rng)
        assert changed != text and abs(len(changed) - len(text)) <= 1
        shuffled = reorder(text, rng)
        assert shuffled != text and sorted(shuffled.split()) == sorted(text.split())
    assert typo("a 1", rng) == "a 1" and reorder("one", rng) == "one"


def schedule(seed: int = 5) -> pd.DataFrame:
    queries = pd.DataFrame({"query": [f"q{i}" for i in range(20)], "frequency": 1.0})
    shoppers = pd.DataFrame({"user_id": [f"U{i}" for i in range(10)]})
    items = pd.DataFrame({"item_id": [f"I{i}" for i in range(10)], "popularity": 1.0})
    workload = Workload.from_frames(queries, shoppers, items, SamplingConfig())
    traffic = TrafficConfig(
        shape=ConstantShape(rate=200), duration_s=1.0, mix=RouteMix(), seed=seed
    )
    return build_schedule(traffic, workload)


def test_a_stream_rewrites_only_the_search_queries() -> None:
    base = schedule()
    head, p = head_queries(20)
    maker = StreamMaker(head, p, catalog(), seed=0)
    assert maker.apply("cached", base, key=1) is base
    longtail = maker.apply("longtail", base, key=1)
    pd.testing.assert_frame_equal(
        longtail.drop(columns="body"), base.drop(columns="body"), check_dtype=True
    )
    searches = base["route"] == "search"
    assert (
        longtail.loc[~searches, "body"].fillna("") == base.loc[~searches, "body"].fillna("")
    ).all()
    before = [json.loads(b) for b in base.loc[searches, "body"]]
    after = [json.loads(b) for b in longtail.loc[searches, "body"]]
    assert [{k: v for k, v in b.items() if k != "query"} for b in before] == [
        {k: v for k, v in a.items() if k != "query"} for a in after
    ]
    # the same key gives the same stream (one rate is the same for every system); another
    # key gives other variants (two rates of one sweep do not share their queries)
    assert search_queries(maker.apply("longtail", base, key=1)) == search_queries(longtail)
    assert search_queries(maker.apply("longtail", base, key=2)) != search_queries(longtail)
    with pytest.raises(ValueError, match="searches"):
        with_queries(base, ["too", "few"])


def test_cache_replay_per_tier_and_per_stream() -> None:
    searches = [("a", "x"), ("a", "x"), ("a", "y"), ("b", "x"), ("b", "z"), ("b", "Z")]
    one = stream_hit_rates(searches, [CacheTier("encoder", 1, 100)])
    assert one["a"]["hit_rate"] == pytest.approx(1 / 3)
    assert one["b"]["hit_rate"] == pytest.approx(2 / 3)  # x from stream a, z normalised
    off = stream_hit_rates(searches, [CacheTier("encoder", 1, 0)])
    assert off["a"]["hit_rate"] == 0.0
    tiny = stream_hit_rates([("a", q) for q in "xyxyxy"], [CacheTier("encoder", 1, 1)])
    assert tiny["a"]["hit_rate"] == 0.0  # LRU of one alternating between two queries
    two = stream_hit_rates(searches, [CacheTier("ingress", 1, 100), CacheTier("encoder", 1, 100)])
    assert two["b"]["by_tier"] == {"ingress": pytest.approx(2 / 3), "encoder": 0.0}


def test_cache_tiers_follow_the_system_and_its_config() -> None:
    app = AppConfig()
    assert cache_tiers("inprocess", app) == [CacheTier("encoder", 1, app.encoder.cache_size)]
    assert cache_tiers("naive", app, workers=2)[0].caches == 2
    data = app.model_dump(mode="json")
    data["ingress"]["query_cache_size"] = 64
    data["query_encoder"]["autoscaling"] = {"min_replicas": 2, "max_replicas": 2}
    tiers = cache_tiers("serve", AppConfig.model_validate(data))
    assert [(t.name, t.caches, t.capacity) for t in tiers] == [
        ("ingress", 1, 64),
        ("encoder", 2, app.encoder.cache_size),
    ]


def test_spread_of_repeats() -> None:
    s = spread([10.0, 30.0, 20.0, None])
    assert (s["n"], s["median"], s["min"], s["max"]) == (3, 20.0, 10.0, 30.0)
    assert s["iqr"] == pytest.approx(10.0)
    assert spread([])["median"] is None


def test_topology_adapter() -> None:
    app = AppConfig()
    assert with_layout(app, None) is app
    assert with_layout(app, layout_of(app)) is app
    if supports_layout():
        fused = with_layout(app, "fused")
        assert layout_of(fused) == "fused" and layout_of(with_layout(fused, "split")) == "split"
    else:
        assert layout_of(app) == "split"
        with pytest.raises(TopologyUnavailableError, match="layout"):
            with_layout(app, "fused")
    split = MAIN_SYSTEMS["serve_split"].app_config(app)
    assert layout_of(split) == "split"
