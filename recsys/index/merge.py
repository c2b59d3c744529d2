"""Merging top-k lists: the pure reduce step of sharded or multi-source retrieval."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def merge_topk(
    results: Sequence[tuple[np.ndarray, np.ndarray]], k: int
) -> tuple[np.ndarray, np.ndarray]:
    """Merge per-shard ``(scores, ids)`` arrays of shape (nq, k_i) into the global top-k.

    Higher scores are better (inner product). Ids of -1 (FAISS padding) are dropped; an id that
    appears in several shards keeps its best score once. Rows with fewer than k results are
    padded with ``-inf`` / ``-1`` as FAISS does.
    """
    if not results:
        raise ValueError("merge_topk needs at least one result list")
    nq = results[0][0].shape[0]
    if any(s.shape[0] != nq or i.shape != s.shape for s, i in results):
        raise ValueError("all result lists must have the same number of rows and matching shapes")
    scores = np.concatenate([s for s, _ in results], axis=1).astype(np.float32, copy=False)
    ids = np.concatenate([i for _, i in results], axis=1).astype(np.int64, copy=False)
    out_s = np.full((nq, k), -np.inf, dtype=np.float32)
    out_i = np.full((nq, k), -1, dtype=np.int64)
    for row in range(nq):
        valid = ids[row] >= 0
        s, i = scores[row, valid], ids[row, valid]
        order = np.argsort(-s, kind="stable")
        s, i = s[order], i[order]
        _, first = np.unique(i, return_index=True)  # best score of each id (sorted desc)
        keep = np.sort(first)[:k]
        out_s[row, : len(keep)] = s[keep]
        out_i[row, : len(keep)] = i[keep]
    return out_s, out_i
