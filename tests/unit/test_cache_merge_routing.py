"""Pure pieces: the embedding cache, top-k merge and the routing policy."""

from __future__ import annotations

import numpy as np
import pytest

from recsys.cache import EmbeddingCache, normalise_query
from recsys.config import RoutingConfig, VariantConfig
from recsys.index.merge import merge_topk
from recsys.routing import Deadline, RoutingPolicy, stable_bucket


def fake_encode(calls: list[list[str]]):
    def encode(texts: list[str]) -> np.ndarray:
        calls.append(list(texts))
        return np.array([[len(t), i] for i, t in enumerate(texts)], dtype=np.float32)

    return encode


def test_cache_encodes_each_distinct_miss_once_and_counts_hits() -> None:
    cache = EmbeddingCache(capacity=10)
    calls: list[list[str]] = []
    out, hits = cache.encode_through(["Red Shoes", "red  shoes", "bag"], fake_encode(calls), 2)
    assert hits == 0
    assert calls == [["red shoes", "bag"]]
    assert np.array_equal(out[0], out[1])
    out2, hits2 = cache.encode_through(["RED SHOES"], fake_encode(calls), 2)
    assert hits2 == 1 and len(calls) == 1
    assert np.array_equal(out2[0], out[0])
    assert cache.hit_ratio == pytest.approx(1 / 4)


def test_cache_evicts_least_recently_used() -> None:
    cache = EmbeddingCache(capacity=2)
    calls: list[list[str]] = []
    enc = fake_encode(calls)
    cache.encode_through(["a", "b"], enc, 2)
    cache.encode_through(["a"], enc, 2)  # a is now most recent
    cache.encode_through(["c"], enc, 2)  # evicts b
    assert cache.get("a") is not None and cache.get("c") is not None
    assert cache.get("b") is None
    assert len(cache) == 2


def test_cache_of_size_zero_stores_nothing() -> None:
    cache = EmbeddingCache(capacity=0)
    calls: list[list[str]] = []
    cache.encode_through(["a"], fake_encode(calls), 2)
    cache.encode_through(["a"], fake_encode(calls), 2)
    assert len(calls) == 2 and len(cache) == 0


def test_cache_shared_by_threads_stays_bounded_and_counts_every_lookup() -> None:
    from concurrent.futures import ThreadPoolExecutor

    cache = EmbeddingCache(capacity=8)

    def work(seed: int) -> None:
        for i in range(2000):
            key = f"q{(seed * 7 + i) % 24}"
            if cache.get(key) is None:
                cache.put(key, np.full(2, i, np.float32))

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(work, range(4)))
    assert len(cache) == 8 and cache.lookups == 8000


def test_normalise_query() -> None:
    assert normalise_query("  Grey   SOFA ") == "grey sofa"


def test_merge_topk_matches_a_global_sort_and_dedups() -> None:
    rng = np.random.default_rng(0)
    scores = rng.random((3, 40)).astype(np.float32)
    ids = np.stack([rng.permutation(40) for _ in range(3)])
    shards = [(scores[:, :15], ids[:, :15]), (scores[:, 15:], ids[:, 15:])]
    got_s, got_i = merge_topk(shards, k=10)
    for row in range(3):
        order = np.argsort(-scores[row])[:10]
        assert list(got_i[row]) == list(ids[row][order])
        assert np.allclose(got_s[row], scores[row][order])
    dup = (np.array([[0.9, 0.5]]), np.array([[7, 8]]))
    dup2 = (np.array([[0.7, -1.0]]), np.array([[7, -1]]))
    s, i = merge_topk([dup, dup2], k=3)
    assert list(i[0]) == [7, 8, -1]
    assert s[0][0] == pytest.approx(0.9) and s[0][2] == -np.inf


def test_merge_topk_rejects_mismatched_shapes() -> None:
    with pytest.raises(ValueError):
        merge_topk([(np.zeros((2, 3)), np.zeros((2, 3))), (np.zeros((1, 3)), np.zeros((1, 3)))], 2)


def policy(weights: dict[str, float]) -> RoutingPolicy:
    return RoutingPolicy(
        RoutingConfig(variants=[VariantConfig(name=n, weight=w) for n, w in weights.items()])
    )


def test_variants_split_close_to_weights_and_are_stable() -> None:
    p = policy({"control": 0.7, "treatment": 0.3})
    users = [f"U{i:07d}" for i in range(20_000)]
    picks = [p.variant_for(u) for u in users]
    share = picks.count("treatment") / len(picks)
    assert share == pytest.approx(0.3, abs=0.015)
    assert picks == [p.variant_for(u) for u in users]  # same shopper, same arm


def test_anonymous_and_unknown_shoppers_get_control() -> None:
    p = policy({"control": 0.0001, "treatment": 1.0})
    assert p.decide("search", None, user_known=False).variant == "control"
    assert p.decide("search", "nobody", user_known=False).variant == "control"
    d = p.decide("search", "U0000001", user_known=True)
    assert d.personalised and d.variant == "treatment"


def test_salt_reshuffles_buckets() -> None:
    a = [stable_bucket(f"U{i}", "s1") for i in range(100)]
    b = [stable_bucket(f"U{i}", "s2") for i in range(100)]
    assert a != b and all(0 <= x < 1 for x in a)


def test_ranker_budget_keeps_the_fallback_reserve_and_is_none_when_too_little() -> None:
    cfg = RoutingConfig(deadline_ms=100, fallback_reserve_share=0.25, min_ranker_budget_ms=5)
    p = RoutingPolicy(cfg)
    fresh = Deadline.starting_now(100)
    budget = p.ranker_budget_s(fresh)
    assert budget is not None and 0.070 < budget <= 0.075
    half = Deadline(start=fresh.start - 0.05, budget_s=0.1)
    assert p.ranker_budget_s(half) == pytest.approx(0.025, abs=0.002)
    late = Deadline(start=fresh.start - 0.072, budget_s=0.1)
    assert p.ranker_budget_s(late) is None


def test_routing_config_rejects_bad_variants() -> None:
    with pytest.raises(ValueError, match="duplicate"):
        RoutingConfig(
            variants=[VariantConfig(name="a", weight=1), VariantConfig(name="a", weight=1)]
        )
    with pytest.raises(ValueError, match="zero"):
        RoutingConfig(variants=[VariantConfig(name="a", weight=0)])
