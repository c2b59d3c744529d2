"""Relevance training data: labelled queries as lists, with hard negatives from retrieval.

Each training query becomes one list: its judged items with their graded gains (ESCI: E 3,
S 2, C 1, I 0) plus *hard negatives*, items the served retriever returns for the query that
no judge saw. An unjudged item is not known to be irrelevant (a judged sample holds a fraction
of a broad query's matches), so only candidates outside every category the query's relevant
(E/S) judgments fall in are taken as negatives (gain 0): plausible-looking but wrong-category
items, exactly what a ranker over retrieval output must push down. Unjudged candidates inside
a relevant category are left out rather than guessed.

The loss is listwise softmax cross-entropy (ListNet with top-one probabilities): the target
distribution over a list is proportional to ``2**gain - 1``, so E outranks S outranks C, and
lists without any gain are skipped.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch


@dataclass(frozen=True)
class QueryLists:
    """Rows of (query, item, gain), grouped into contiguous lists by query."""

    query_id: np.ndarray  # int64 (rows,)
    item_idx: np.ndarray  # int64 (rows,)
    gain: np.ndarray  # float32 (rows,)
    offsets: np.ndarray  # int64 (lists + 1,): list j is rows offsets[j]:offsets[j+1]

    @property
    def n_lists(self) -> int:
        return len(self.offsets) - 1

    def __len__(self) -> int:
        return len(self.item_idx)

    @classmethod
    def empty(cls) -> QueryLists:
        z = np.zeros(0, np.int64)
        return cls(z, z, np.zeros(0, np.float32), np.zeros(1, np.int64))


def build_lists(
    qrels: pd.DataFrame,
    query_ids: np.ndarray,
    candidates: dict[int, np.ndarray],
    leaf_idx: np.ndarray,
    max_negatives: int = 60,
) -> QueryLists:
    """Lists for ``query_ids`` from ``qrels`` (query_id, item_idx, gain) and each query's
    retrieved ``candidates`` (hard-negative pool, best first)."""
    by_query = {int(q): g for q, g in qrels.groupby("query_id")}
    qs, items, gains, offsets = [], [], [], [0]
    for q in query_ids.tolist():
        judged = by_query.get(int(q))
        if judged is None or len(judged) == 0:
            continue
        j_items = judged["item_idx"].to_numpy(np.int64)
        j_gain = judged["gain"].to_numpy(np.float32)
        relevant_leaves = np.unique(leaf_idx[j_items[j_gain >= 2]])
        pool = candidates.get(int(q), np.zeros(0, np.int64))
        pool = pool[~np.isin(pool, j_items)]
        negatives = pool[~np.isin(leaf_idx[pool], relevant_leaves)][:max_negatives]
        row_items = np.concatenate([j_items, negatives])
        qs.append(np.full(len(row_items), q, np.int64))
        items.append(row_items)
        gains.append(np.concatenate([j_gain, np.zeros(len(negatives), np.float32)]))
        offsets.append(offsets[-1] + len(row_items))
    if not items:
        return QueryLists.empty()
    return QueryLists(
        np.concatenate(qs), np.concatenate(items), np.concatenate(gains), np.asarray(offsets)
    )


def listwise_loss(logits: torch.Tensor, gains: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Mean softmax cross-entropy over lists (``logits``/``gains`` flat, lists back to back)."""
    n_lists = len(lengths)
    width = int(lengths.max())
    owner = torch.repeat_interleave(torch.arange(n_lists), lengths)
    starts = torch.cumsum(lengths, 0) - lengths
    col = torch.arange(len(logits)) - starts[owner]
    scores = torch.full((n_lists, width), float("-inf"))
    scores[owner, col] = logits
    target = torch.zeros((n_lists, width))
    target[owner, col] = torch.pow(2.0, gains) - 1.0
    total = target.sum(dim=1)
    keep = total > 0
    if not bool(keep.any()):
        return logits.sum() * 0.0
    target = target[keep] / total[keep, None]
    log_p = torch.log_softmax(scores[keep], dim=1)
    log_p = torch.where(target > 0, log_p, torch.zeros_like(log_p))
    return -(target * log_p).sum(dim=1).mean()


def list_ndcg(scores: np.ndarray, lists: QueryLists, k: int = 10) -> float:
    """Mean nDCG@k of ``scores`` over the lists that have any gain (judged items only)."""
    out = []
    discount = 1.0 / np.log2(np.arange(2, k + 2))
    for j in range(lists.n_lists):
        a, b = lists.offsets[j], lists.offsets[j + 1]
        g = lists.gain[a:b]
        if g.max() <= 0:
            continue
        order = np.argsort(-scores[a:b], kind="stable")[:k]
        ideal = np.sort(g)[::-1][:k]
        dcg = ((2.0 ** g[order] - 1) * discount[: len(order)]).sum()
        out.append(dcg / ((2.0**ideal - 1) * discount[: len(ideal)]).sum())
    return float(np.mean(out)) if out else 0.0
