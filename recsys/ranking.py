"""Scoring candidates with the ranker: feature assembly around an executor."""

from __future__ import annotations

import numpy as np
import pandas as pd

from recsys import layout
from recsys.artifacts import Artifact
from recsys.features import ItemFeatureTable, assemble
from recsys.ranker.executor import LocalExecutor, RankerExecutor
from recsys.ranker.model import RankerSpec
from recsys.ranker.weights import load_model, read_meta
from recsys.types import RankRequest


class CandidateRanker:
    """``score(requests) -> one score array per request`` in a single batched forward pass."""

    def __init__(self, spec: RankerSpec, table: ItemFeatureTable, executor: RankerExecutor):
        self.spec = spec
        self.table = table
        self.executor = executor

    @classmethod
    def from_artifact(
        cls, artifact: Artifact, executor: RankerExecutor | None = None, device: str = "cpu"
    ) -> CandidateRanker:
        meta = read_meta(artifact.path(layout.RANKER_META))
        items = pd.read_parquet(
            artifact.path(layout.ITEMS),
            columns=["leaf_idx", "brand_idx", "price", "rating", "popularity"],
        )
        table = ItemFeatureTable.from_items(items, meta.stats)
        if executor is None:
            model = load_model(artifact.path(layout.RANKER_WEIGHTS), meta.spec, device)
            executor = LocalExecutor(model, device)
        return cls(meta.spec, table, executor)

    def features(self, requests: list[RankRequest]):  # -> FeatureBatch
        users, items, qcos, hcos, hq, hh = [], [], [], [], [], []
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
        return assemble(
            self.table,
            np.concatenate(users).astype(np.int64),
            np.concatenate(items).astype(np.int64),
            np.concatenate(qcos),
            np.concatenate(hcos),
            np.concatenate(hq),
            np.concatenate(hh),
        )

    def score(self, requests: list[RankRequest]) -> list[np.ndarray]:
        if not requests:
            return []
        sizes = [len(r.candidates) for r in requests]
        if sum(sizes) == 0:
            return [np.zeros(0, np.float32) for _ in requests]
        batch = self.features(requests)
        logits = self.executor.forward(batch.sparse, batch.dense)
        return np.split(logits.astype(np.float32), np.cumsum(sizes)[:-1])
