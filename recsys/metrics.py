"""Offline quality metrics and latency summaries."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import pandas as pd


def ndcg_at_k(
    group: np.ndarray, labels: np.ndarray, scores: np.ndarray, k: int = 10, seed: int = 0
) -> float:
    """Mean nDCG@k over groups (sessions) that have at least one positive label.

    Gains are ``2**label - 1``. Ties in ``scores`` are broken by a seeded random order, so a
    constant scorer gets the expected value of a random ranking, not an order-dependent one.
    """
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(
        {
            "g": group,
            "gain": np.power(2.0, labels.astype(np.float64)) - 1.0,
            "s": scores.astype(np.float64),
            "tie": rng.random(len(group)),
        }
    )
    discount = 1.0 / np.log2(np.arange(2, k + 2))

    def dcg(sorted_frame: pd.DataFrame) -> pd.Series:
        pos = sorted_frame.groupby("g", sort=False).cumcount().to_numpy()
        top = pos < k
        contrib = np.zeros(len(sorted_frame))
        contrib[top] = sorted_frame["gain"].to_numpy()[top] * discount[pos[top]]
        return pd.Series(contrib, index=sorted_frame["g"].to_numpy()).groupby(level=0).sum()

    got = dcg(frame.sort_values(["g", "s", "tie"], ascending=[True, False, True]))
    ideal = dcg(frame.sort_values(["g", "gain"], ascending=[True, False]))
    valid = ideal > 0
    if not valid.any():
        return float("nan")
    return float((got[valid] / ideal[valid]).mean())


def recall_at_k(retrieved: Sequence[np.ndarray], relevant: Sequence[np.ndarray], k: int) -> float:
    """Mean over queries with any relevant item of |top-k ∩ relevant| / |relevant|."""
    values = [
        len(np.intersect1d(r[:k], rel)) / len(rel)
        for r, rel in zip(retrieved, relevant, strict=True)
        if len(rel)
    ]
    return float(np.mean(values)) if values else float("nan")


def catalog_coverage(recommended: Iterable[np.ndarray], n_items: int) -> float:
    """Share of the catalog that appears in at least one result list."""
    seen = np.zeros(n_items, dtype=bool)
    for ids in recommended:
        seen[np.asarray(ids, dtype=np.int64)] = True
    return float(seen.mean())


def latency_summary(latencies_ms: np.ndarray) -> dict[str, float]:
    """Count, mean and the percentiles a serving dashboard shows."""
    x = np.asarray(latencies_ms, dtype=np.float64)
    if len(x) == 0:
        return {"count": 0}
    p50, p90, p99, p999 = np.percentile(x, [50, 90, 99, 99.9])
    return {
        "count": int(len(x)),
        "mean": float(x.mean()),
        "p50": float(p50),
        "p90": float(p90),
        "p99": float(p99),
        "p99.9": float(p999),
        "max": float(x.max()),
    }
