"""Report tables and the offline metrics."""

import numpy as np
import pytest

from recsys.metrics import catalog_coverage, latency_summary, ndcg_at_k, recall_at_k
from recsys.reporting import markdown_table


def test_markdown_table() -> None:
    text = markdown_table([{"a": 1, "b": 2.5}, {"a": "x|y", "c": 1234.5}])
    lines = text.strip().split("\n")
    assert lines[0] == "| a | b | c |" and lines[1] == "| --- | --- | --- |"
    assert lines[2] == "| 1 | 2.5 |  |" and "x\\|y" in lines[3] and "1,234" in lines[3]


def test_ndcg_perfect_reversed_and_random() -> None:
    group = np.repeat([0, 1], 5)
    labels = np.array([3, 2, 0, 0, 1, 0, 0, 1, 0, 0])
    assert ndcg_at_k(group, labels, labels.astype(float), k=5) == pytest.approx(1.0)
    worse = ndcg_at_k(group, labels, -labels.astype(float), k=5)
    assert worse < 0.7
    constant = ndcg_at_k(group, labels, np.zeros(10), k=5)
    assert worse < constant < 1.0
    assert np.isnan(ndcg_at_k(group, np.zeros(10), np.zeros(10)))


def test_recall_coverage_latency() -> None:
    assert recall_at_k([np.array([1, 2, 3])], [np.array([3, 4])], k=3) == 0.5
    assert recall_at_k([np.array([1, 2, 3])], [np.array([3, 4])], k=2) == 0.0
    assert catalog_coverage([np.array([0, 1]), np.array([1, 3])], 8) == 3 / 8
    s = latency_summary(np.arange(1, 101, dtype=float))
    assert s["count"] == 100 and s["p50"] == pytest.approx(50.5) and s["max"] == 100
