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


def test_search_view_has_every_order_and_both_judgments(metrics: dict) -> None:
    search = metrics["search"]
    assert search["judgments"] == "complete" and search["held_out_queries"] is True
    for view in (search, search["labelled"]):
        assert set(view["ndcg_at_10"]) == {"ranked", "dense", "lexical", "hybrid"}
        assert set(view["recall_at_100_exact"]) == {"dense", "lexical", "hybrid"}
        assert all(0.0 <= v <= 1.0 for v in view["ndcg_at_10"].values())
    assert sum(k["n"] for k in search["by_kind"].values()) == search["n_queries"] > 0


def test_complete_judgments_agree_with_every_label(tiny_artifact: Path) -> None:
    from recsys.data import loaders
    from recsys.search_eval import Judge

    data = tiny_artifact / "data"
    n_items = len(loaders.read_items(data, columns=["item_idx"]))
    judge = Judge.load(data, n_items)
    qrels = loaders.read_qrels(data)
    for q, part in list(qrels.groupby("query_id"))[:30]:
        gains = judge.complete(int(q))
        assert gains is not None
        assert (gains[part["item_idx"].to_numpy()] == part["gain"].to_numpy()).all()
