"""Scoring candidates with the ranker: feature assembly around an executor."""

from __future__ import annotations

import numpy as np
import pandas as pd

from recsys import layout
from recsys.artifacts import Artifact
from recsys.features import FeatureBatch, ItemFeatureTable, ShopperProfiles, assemble
from recsys.ranker.executor import LocalExecutor, RankerExecutor
from recsys.ranker.model import RankerSpec
from recsys.ranker.weights import load_model, read_meta
from recsys.types import RankRequest


class CandidateRanker:
    """``score(requests) -> one score array per request`` in a single batched forward pass."""

    def __init__(
        self,
        spec: RankerSpec,
        table: ItemFeatureTable,
        profiles: ShopperProfiles,
        executor: RankerExecutor,
    ):
        self.spec = spec
        self.table = table
        self.profiles = profiles
        self.executor = executor

    @classmethod
    def from_artifact(
        cls, artifact: Artifact, executor: RankerExecutor | None = None, device: str = "cpu"
    ) -> CandidateRanker:
        meta = read_meta(artifact.path(layout.RANKER_META))
        items = pd.read_parquet(
            artifact.path(layout.ITEMS),
            columns=["title", "leaf_idx", "brand_idx", "price", "rating", "popularity"],
        )
        table = ItemFeatureTable.from_items(items, meta.stats)
        if executor is None:
            model = load_model(artifact.path(layout.RANKER_WEIGHTS), meta.spec, device)
            executor = LocalExecutor(model, device)
        profiles = ShopperProfiles.load(artifact.path(layout.SHOPPER_PROFILES))
        return cls(meta.spec, table, profiles, executor)

    def features(self, requests: list[RankRequest]) -> FeatureBatch:
        users, items, qcos, hcos, hq, hh, cover = [], [], [], [], [], [], []
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
            cover.append(self.coverage(req))
        return assemble(
            self.table,
            self.profiles,
            np.concatenate(users).astype(np.int64),
            np.concatenate(items).astype(np.int64),
            np.concatenate(qcos),
            np.concatenate(hcos),
            np.concatenate(hq),
            np.concatenate(hh),
            np.concatenate(cover),
        )

    def coverage(self, req: RankRequest) -> np.ndarray:
        """Query-term coverage of each candidate's title (the seed's title for similar)."""
        items = req.candidates.item_idx
        if req.query is not None:
            return self.table.titles.coverage(req.query, items)
        if req.seed_item is not None:
            return self.table.titles.item_coverage(req.seed_item, items)
        return np.zeros(len(items), np.float32)

    def score(self, requests: list[RankRequest]) -> list[np.ndarray]:
        if not requests:
            return []
        sizes = [len(r.candidates) for r in requests]
        if sum(sizes) == 0:
            return [np.zeros(0, np.float32) for _ in requests]
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
