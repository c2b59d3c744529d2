"""Scoring candidates with the ranker: feature assembly around an executor."""

from __future__ import annotations

import numpy as np
import pandas as pd

from recsys import layout
from recsys.artifacts import Artifact
from recsys.features import (
    FeatureBatch,
    FeatureStats,
    ItemFeatureTable,
    ShopperProfiles,
    assemble,
)
from recsys.index.lexical import analyze
from recsys.matching import QueryCategorizer, QueryMatcher
from recsys.ranker.executor import LocalExecutor, RankerExecutor
from recsys.ranker.model import RankerSpec
from recsys.ranker.weights import load_model, read_meta
from recsys.types import RankRequest

MATCH_COLUMNS = [
    "title",
    "leaf_idx",
    "brand_idx",
    "brand",
    "price",
    "rating",
    "popularity",
    "category_l1",
    "category_l2",
    "category_l3",
    "attributes",
]
"""Item columns the ranker's features read."""


class CandidateRanker:
    """``score(requests) -> one score array per request`` in a single batched forward pass."""

    def __init__(
        self,
        spec: RankerSpec | None,
        table: ItemFeatureTable,
        profiles: ShopperProfiles,
        executor: RankerExecutor | None,
        matcher: QueryMatcher,
    ):
        """``spec``/``executor`` None: a retrieval-only artifact (no labels, no behaviour to
        learn from): scores are the retrieval scores, so answers keep the retrieval order."""
        self.spec = spec
        self.table = table
        self.profiles = profiles
        self.executor = executor
        self.matcher = matcher

    @classmethod
    def from_artifact(
        cls, artifact: Artifact, executor: RankerExecutor | None = None, device: str = "cpu"
    ) -> CandidateRanker:
        items = pd.read_parquet(artifact.path(layout.ITEMS), columns=MATCH_COLUMNS)
        categorizer = None
        if layout.QUERY_CATEGORIES in artifact.manifest.files:
            categorizer = QueryCategorizer.load(artifact.path(layout.QUERY_CATEGORIES))
        matcher = QueryMatcher.from_items(items, categorizer)
        profiles = ShopperProfiles.load(artifact.path(layout.SHOPPER_PROFILES))
        if layout.RANKER_META not in artifact.manifest.files:
            table = ItemFeatureTable.from_items(items, FeatureStats.fit(items))
            return cls(None, table, profiles, None, matcher)
        meta = read_meta(artifact.path(layout.RANKER_META))
        table = ItemFeatureTable.from_items(items, meta.stats)
        if executor is None:
            model = load_model(artifact.path(layout.RANKER_WEIGHTS), meta.spec, device)
            executor = LocalExecutor(model, device)
        return cls(meta.spec, table, profiles, executor, matcher)

    def check_health(self) -> None:
        """Raises when the executor (a model-parallel gang) is broken; nothing to check for a
        retrieval-only artifact."""
        if self.executor is not None:
            self.executor.check_health()

    @property
    def trained(self) -> bool:
        """False for a retrieval-only artifact (answers in retrieval order)."""
        return self.executor is not None

    def features(self, requests: list[RankRequest]) -> FeatureBatch:
        assert self.spec is not None, "a retrieval-only artifact has no ranker features"
        users, items, qcos, hcos, hq, hh, match = [], [], [], [], [], [], []
        for req in requests:
            c = req.candidates
            n = len(c)
            known = req.user_idx is not None
            users.append(np.full(n, req.user_idx if known else self.spec.anonymous_user))
            items.append(c.item_idx)
            qcos.append(c.query_cos)
            hcos.append(c.history_cos)
            hq.append(np.full(n, float(c.has_query), np.float32))
            hh.append(np.full(n, float(known and c.has_history), np.float32))
            match.append(self.match(req))
        return assemble(
            self.table,
            self.profiles,
            np.concatenate(users).astype(np.int64),
            np.concatenate(items).astype(np.int64),
            np.concatenate(qcos),
            np.concatenate(hcos),
            np.concatenate(hq),
            np.concatenate(hh),
            np.concatenate(match),
        )

    def match(self, req: RankRequest) -> np.ndarray:
        """Query-item match features of each candidate (the seed's title plays the query)."""
        c = req.candidates
        if req.query is not None:
            words = list(c.query_words) or analyze(req.query)
            return self.matcher.features(words, c.item_idx, c.lexical)
        if req.seed_item is not None:
            seed_title = self.matcher.titles.words_of(req.seed_item)
            return self.matcher.features(seed_title, c.item_idx, None)
        return self.matcher.features([], c.item_idx, None)

    def score(self, requests: list[RankRequest]) -> list[np.ndarray]:
        if not requests:
            return []
        sizes = [len(r.candidates) for r in requests]
        if sum(sizes) == 0:
            return [np.zeros(0, np.float32) for _ in requests]
        if self.executor is None:
            return [r.candidates.score.astype(np.float32) for r in requests]
        batch = self.features(requests)
        logits = self.executor.forward(batch.sparse, batch.dense)
        scores = np.split(logits.astype(np.float32), np.cumsum(sizes)[:-1])
        return [self.pin_exact_titles(r, s) for r, s in zip(requests, scores, strict=True)]

    def pin_exact_titles(self, req: RankRequest, scores: np.ndarray) -> np.ndarray:
        """Business rule: a product whose title is exactly the query comes first.

        The model learns relevance from shoppers' engagement, which rarely contains full-title
        queries, so it can rank the very product a shopper named below similar ones. Exact
        matches are lifted above every other candidate, keeping their model order.
        """
        if req.query is None or len(scores) == 0:
            return scores
        exact = self.table.titles.same_words(req.query, req.candidates.item_idx)
        if exact.any():
            scores = scores.copy()
            scores[exact] += scores.max() - scores[exact].min() + 1.0
        return scores
