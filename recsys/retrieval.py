"""Candidate retrieval: query text / vectors, shoppers, seed items -> top-N items, with filters.

Dense side: unfiltered requests of a batch share one FAISS search call. A filtered request is
searched exactly over the matching items when they are few (``filter_exact_max``), otherwise
by ANN with over-fetch and post-filtering, falling back to the exact scan when post-filtering
leaves fewer than N. A shopper without history and without a query gets the most popular
items.

Lexical side (searches only, when the artifact has a lexical index): BM25 over the whole
catalog (``recsys.index.lexical``), the filter applied as a mask, so filtered results are
complete. ``hybrid`` fuses the two top-N lists by reciprocal rank (an item's score is the sum
over the lists it is on of ``1 / (rrf_k + rank)``): no score calibration between BM25 and
cosine is needed, and an item both sides agree on comes first. Every search candidate carries
its cosine to the query and its normalised BM25 score whichever side found it, so the ranker
sees both.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from recsys import layout
from recsys.artifacts import Artifact
from recsys.config import RetrievalConfig
from recsys.index.lexical import LexicalIndex, top_positive
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
        lexical: LexicalIndex | None = None,
        artifact_mode: str = "dense",
    ):
        if index.ntotal != len(item_embeddings):
            raise ValueError(
                f"index has {index.ntotal} vectors but there are {len(item_embeddings)} items"
            )
        mode = artifact_mode if config.mode == "auto" else config.mode
        if mode != "dense" and lexical is None:
            raise ValueError(
                f"retrieval mode {mode!r} needs a lexical index, and this artifact has none "
                "(rebuild it with `recsys build`, or set retrieval.mode: dense)"
            )
        self.mode = mode
        self.lexical = lexical
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
        lexical = None
        if layout.LEXICAL_META in artifact.manifest.files:
            lexical_files = [n for n in artifact.manifest.files if n.startswith(layout.LEXICAL)]
            artifact.verify(lexical_files)
            lexical = LexicalIndex.load(artifact.root / layout.LEXICAL)
        mode = str(artifact.manifest.config.get("retrieval_mode", "dense"))
        return cls(
            index, embeddings, history, ItemAttributes.from_frame(items), config, lexical, mode
        )

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
        """Candidates for each request, in request order (the request is not modified)."""
        dense = self._retrieve_dense(requests) if self.mode != "lexical" else None
        out = []
        for i, req in enumerate(requests):
            if req.query is None or self.lexical is None or req.seed_item is not None:
                out.append(dense[i] if dense is not None else self._retrieve_dense([req])[0])
            else:
                out.append(self._search(req, dense[i] if dense is not None else None))
        return out

    def _search(self, req: RetrievalRequest, dense: Candidates | None) -> Candidates:
        """A text search on the lexical side (fused with ``dense`` in hybrid mode)."""
        assert self.lexical is not None and req.query is not None
        analysed = self.lexical.analyze_query(req.query)
        words = self.lexical.indexed(analysed)
        mask = None
        if req.item_filter is not None and not req.item_filter.is_empty():
            mask = self.attributes.mask(req.item_filter)
        all_scores = self.lexical.scores(words, mask)
        ceiling = max(self.lexical.ceiling(words), 1e-6)
        lex_ids, lex_scores = top_positive(all_scores, req.n)
        if self.mode == "dense":  # dense candidates, with their BM25 scores as features
            assert dense is not None
            ids, scores, source = dense.item_idx, dense.score, dense.source
        elif dense is None:  # lexical mode
            if len(lex_ids) == 0:  # nothing matches a word: the dense side answers
                dense = self._retrieve_dense([req])[0]
                ids, scores, source = dense.item_idx, dense.score, dense.source
            else:
                ids, scores, source = lex_ids, lex_scores, "lexical"
        else:
            known = len(words) / max(len(analysed), 1)
            weights = [1.0 - (1.0 - self.config.dense_weight_covered) * known, known]
            ids, scores = reciprocal_rank_fusion(
                [dense.item_idx, lex_ids], req.n, self.config.rrf_k, weights
            )
            source = "hybrid"
        vec, hist = self.search_vector(req)
        found = self._candidates(req, ids, scores, vec, hist, source)
        found.lexical = (all_scores[found.item_idx] / ceiling).astype(np.float32)
        found.query_words = tuple(analysed)
        return found

    def _retrieve_dense(self, requests: list[RetrievalRequest]) -> list[Candidates]:
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


def reciprocal_rank_fusion(
    ranked: list[np.ndarray], n: int, k: float = 60.0, weights: list[float] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Fuse ranked id lists: ``score(item) = sum over lists of w / (k + rank)`` (rank from 1,
    ``w`` the list's weight, 1 by default).

    Returns the top ``n`` ids and their fused scores, best first; ties keep the order of the
    first list an item appears in (then item id), so the result is deterministic.
    """
    ids = np.concatenate([np.asarray(r, np.int64) for r in ranked])
    if len(ids) == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.float32)
    weights = weights if weights is not None else [1.0] * len(ranked)
    contrib = np.concatenate(
        [w / (k + np.arange(1, len(r) + 1)) for r, w in zip(ranked, weights, strict=True)]
    )
    uniq, inverse = np.unique(ids, return_inverse=True)
    fused = np.bincount(inverse, weights=contrib)
    first = np.full(len(uniq), len(ids))
    np.minimum.at(first, inverse, np.arange(len(ids)))
    order = np.lexsort((first, -fused))[:n]
    return uniq[order], fused[order].astype(np.float32)
