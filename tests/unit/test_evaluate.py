"""Offline evaluation on the tiny artifact: every metric present and sane."""

from pathlib import Path

import pytest

from recsys.evaluate import evaluate, markdown_report


@pytest.fixture(scope="module")
def metrics(tiny_artifact: Path) -> dict:
    return evaluate(str(tiny_artifact), coverage_users=100)


def test_eval_reports_every_metric(metrics: dict) -> None:
    for key in ("ann_recall_at_100_vs_exact", "retrieval_recall_at_100", "catalog_coverage"):
        assert 0.0 <= metrics[key] <= 1.0
    assert set(metrics["ndcg_at_10"]) == {"ranker", "retrieval_order", "popularity", "oracle"}
    assert metrics["ann_recall_at_100_vs_exact"] >= 0.95


def test_oracle_is_the_ceiling_and_the_ranker_learns_something(metrics: dict) -> None:
    nd = metrics["ndcg_at_10"]
    assert nd["oracle"] >= max(nd["ranker"], nd["retrieval_order"], nd["popularity"])
    assert nd["ranker"] > nd["popularity"]


def test_markdown_report_has_the_numbers(metrics: dict) -> None:
    text = markdown_report(metrics, "recsys eval --artifacts X")
    assert "nDCG@10" in text and f"{metrics['ndcg_at_10']['ranker']:.4f}" in text
    assert "recsys eval --artifacts X" in text
