"""Candidate retrieval: query / shopper / seed-item vectors -> top-N items, with filters.

Unfiltered requests of a batch share one FAISS search call. A filtered request is searched
exactly over the matching items when they are few (``filter_exact_max``), otherwise by ANN with
over-fetch and post-filtering, falling back to the exact scan when post-filtering leaves fewer
than N. A shopper without history and without a query gets the most popular items.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from recsys import layout
from recsys.artifacts import Artifact
from recsys.config import RetrievalConfig
from recsys.index.vector_index import VectorIndex
from recsys.types import Candidates, ItemFilter, RetrievalRequest


@dataclass
class ItemAttributes:
    """What filters and the popularity fallback look at."""

    leaf_idx: np.ndarray
    brand_idx: np.ndarray
    price: np.ndarray
    popularity_order: np.ndarray  # item indexes, most popular first

    @classmethod
    def from_frame(cls, items: pd.DataFrame) -> ItemAttributes:
        return cls(
            leaf_idx=items["leaf_idx"].to_numpy(np.int32),
            brand_idx=items["brand_idx"].to_numpy(np.int32),
            price=items["price"].to_numpy(np.float32),
            popularity_order=np.argsort(-items["popularity"].to_numpy(), kind="stable"),
        )

    def mask(self, f: ItemFilter) -> np.ndarray:
        keep = np.ones(len(self.price), dtype=bool)
        if f.leaves is not None:
            keep &= np.isin(self.leaf_idx, f.leaves)
        if f.brands is not None:
            keep &= np.isin(self.brand_idx, f.brands)
        if f.price_min is not None:
            keep &= self.price >= f.price_min
        if f.price_max is not None:
            keep &= self.price <= f.price_max
        return keep


class Retriever:
    """Batch candidate generation over a FAISS index and the item embedding matrix."""

    def __init__(
        self,
        index: VectorIndex,
        item_embeddings: np.ndarray,
        user_history: np.ndarray,
        attributes: ItemAttributes,
        config: RetrievalConfig,
    ):
        if index.ntotal != len(item_embeddings):
            raise ValueError(
                f"index has {index.ntotal} vectors but there are {len(item_embeddings)} items"
            )
        self.index = index
        self.embeddings = item_embeddings
        self.history = user_history
        self.has_history = np.any(user_history != 0, axis=1)
        self.attributes = attributes
        self.config = config

    @classmethod
    def from_artifact(
        cls, artifact: Artifact, config: RetrievalConfig, use_gpu: str = "auto"
    ) -> Retriever:
        report = artifact.manifest.reports["index"]
        index = VectorIndex.load(
            artifact.path(layout.INDEX), report["kind"], report["param_value"], use_gpu
        )
        embeddings = np.load(artifact.path(layout.ITEM_EMBEDDINGS), allow_pickle=False)
        history = np.load(artifact.path(layout.USER_HISTORY), allow_pickle=False)
        items = pd.read_parquet(
            artifact.path(layout.ITEMS), columns=["leaf_idx", "brand_idx", "price", "popularity"]
        )
        return cls(index, embeddings, history, ItemAttributes.from_frame(items), config)

    @property
    def dim(self) -> int:
        return int(self.embeddings.shape[1])

    def user_vector(self, user_idx: int | None) -> np.ndarray | None:
        if user_idx is None or not self.has_history[user_idx]:
            return None
        return self.history[user_idx].astype(np.float32)

    def search_vector(self, req: RetrievalRequest) -> tuple[np.ndarray | None, np.ndarray | None]:
        """The vector to search with, and the shopper's history vector (if any)."""
        hist = self.user_vector(req.user_idx)
        if req.seed_item is not None:
            return self.embeddings[req.seed_item].astype(np.float32), hist
        if req.query_vec is not None:
            q = np.asarray(req.query_vec, np.float32)
            if hist is None or self.config.history_weight == 0:
                return q, hist
            mixed = self.config.query_weight * q + self.config.history_weight * hist
            return (mixed / max(float(np.linalg.norm(mixed)), 1e-12)).astype(np.float32), hist
        return hist, hist

    def retrieve(self, requests: list[RetrievalRequest]) -> list[Candidates]:
        """Candidates for each request, in request order."""
        vectors = [self.search_vector(r) for r in requests]
        out: list[Candidates | None] = [None] * len(requests)
        batch = [
            i
            for i, r in enumerate(requests)
            if vectors[i][0] is not None and (r.item_filter is None or r.item_filter.is_empty())
        ]
        if batch:
            k = max(requests[i].n + (requests[i].seed_item is not None) for i in batch)
            q = np.stack([vectors[i][0] for i in batch])  # type: ignore[misc]
            scores, ids = self.index.search(q, k)
            for row, i in enumerate(batch):
                valid = ids[row] >= 0
                out[i] = self._candidates(
                    requests[i], ids[row][valid], scores[row][valid], *vectors[i], "ann"
                )
        for i, req in enumerate(requests):
            if out[i] is None:
                out[i] = self._retrieve_one(req, *vectors[i])
        return [c for c in out if c is not None]

    def _retrieve_one(
        self, req: RetrievalRequest, vec: np.ndarray | None, hist: np.ndarray | None
    ) -> Candidates:
        mask = None
        if req.item_filter is not None and not req.item_filter.is_empty():
            mask = self.attributes.mask(req.item_filter)
        if vec is None:  # no query, no history: popular items
            order = self.attributes.popularity_order
            if mask is not None:
                order = order[mask[order]]
            ids = order[: req.n]
            score = np.zeros(len(ids), np.float32)
            return self._candidates(req, ids, score, None, hist, "popular")
        assert mask is not None
        subset = np.flatnonzero(mask)
        if len(subset) > self.config.filter_exact_max:
            want = req.n + (req.seed_item is not None)
            scores, ids = self.index.search(vec[None, :], want * self.config.overfetch)
            valid = ids[0] >= 0
            ids, scores = ids[0][valid], scores[0][valid]
            keep = mask[ids]
            if keep.sum() >= want:
                return self._candidates(req, ids[keep], scores[keep], vec, hist, "ann")
        sims = self.embeddings[subset] @ vec
        top = np.argsort(-sims, kind="stable")[: req.n + 1]
        return self._candidates(req, subset[top], sims[top], vec, hist, "exact")

    def _candidates(
        self,
        req: RetrievalRequest,
        ids: np.ndarray,
        scores: np.ndarray,
        vec: np.ndarray | None,
        hist: np.ndarray | None,
        source: str,
    ) -> Candidates:
        ids = ids.astype(np.int64)
        if req.seed_item is not None:
            keep = ids != req.seed_item
            ids, scores = ids[keep], scores[keep]
        ids, scores = ids[: req.n], scores[: req.n].astype(np.float32)
        emb = self.embeddings[ids]
        has_query = req.query_vec is not None or req.seed_item is not None
        anchor = (
            self.embeddings[req.seed_item]
            if req.seed_item is not None
            else (np.asarray(req.query_vec, np.float32) if req.query_vec is not None else None)
        )
        zeros = np.zeros(len(ids), np.float32)
        return Candidates(
            item_idx=ids,
            score=scores,
            query_cos=(emb @ anchor).astype(np.float32) if anchor is not None else zeros,
            history_cos=(emb @ hist).astype(np.float32) if hist is not None else zeros,
            has_query=has_query,
            has_history=hist is not None,
            source=source,
        )
