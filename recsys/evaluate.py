"""``recsys eval``: retrieval and ranking quality of an artifact on held-out data.

* ``ann_recall_at_100_vs_exact``: the served ANN index against exact search, on the labelled
  queries' embeddings.
* ``retrieval_recall_at_100``: share of each query's *exact* (E) labelled items that the index
  retrieves in its top 100.
* ``ndcg_at_10``: on the test split's sessions (later in time than anything the ranker saw),
  re-ranking each session's impressions by: the ranker, retrieval order (cosine to the query,
  or to the shopper's history for recommendation sessions), popularity, and the oracle (the
  hidden noiseless utility; the ceiling). Gains are ``2**label - 1`` over the funnel labels.
* ``catalog_coverage``: share of the catalog in at least one top-10 list over all labelled
  queries and a sample of shoppers' recommendations.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from recsys import layout
from recsys.artifacts import Artifact
from recsys.config import RetrievalConfig
from recsys.data import loaders
from recsys.features import ShopperState
from recsys.index.build import exact_topk
from recsys.index.build import recall_at_k as index_recall
from recsys.metrics import catalog_coverage, ndcg_at_k, recall_at_k
from recsys.ranker.train import SearchContext, session_features
from recsys.ranking import CandidateRanker
from recsys.retrieval import Retriever
from recsys.search_eval import evaluate_search
from recsys.types import RankRequest, RetrievalRequest


def _test_session_scores(
    artifact: Artifact, ranker: CandidateRanker, retriever: Retriever, data_dir: Path
) -> tuple[pd.DataFrame, dict[str, np.ndarray]]:
    test = loaders.read_interactions(data_dir, "test")
    utility = loaders.read_ground_truth(data_dir, "test_utility")
    query_emb = np.load(artifact.path(layout.QUERY_EMBEDDINGS), allow_pickle=False)
    shoppers = ShopperState(
        retriever.history.astype(np.float32), retriever.has_history, ranker.profiles
    )
    query_texts = loaders.read_queries(data_dir)["query"].astype(str).tolist()
    search = SearchContext(query_texts, ranker.matcher, retriever.lexical)
    if ranker.spec is None or ranker.executor is None:
        raise ValueError("a retrieval-only artifact has no ranker to evaluate on sessions")
    batch = session_features(
        test,
        ranker.table,
        retriever.embeddings,
        query_emb,
        search,
        shoppers,
        ranker.spec.anonymous_user,
    )
    logits = np.concatenate(
        [
            ranker.executor.forward(batch.sparse[s : s + 65536], batch.dense[s : s + 65536])
            for s in range(0, len(batch), 65536)
        ]
    )
    has_query = test["query_id"].to_numpy() >= 0
    popularity = pd.read_parquet(artifact.path(layout.ITEMS), columns=["popularity"])
    scores = {
        "ranker": logits,
        "retrieval_order": np.where(has_query, batch.dense[:, 3], batch.dense[:, 4]),
        "popularity": popularity["popularity"].to_numpy()[test["item_idx"].to_numpy()],
        "oracle": utility["utility"].to_numpy(),
    }
    return test, scores


def evaluate(
    uri: str, cache_dir: str = ".cache/artifacts", coverage_users: int = 2000
) -> dict[str, Any]:
    """Compute the quality metrics of an artifact (see the module docstring)."""
    started = time.perf_counter()
    artifact = Artifact.open(uri, cache_dir)
    data_dir = artifact.root / layout.DATA_DIR
    artifact.verify([n for n in artifact.manifest.files if n.startswith(layout.DATA_DIR + "/")])
    retriever = Retriever.from_artifact(artifact, RetrievalConfig(), use_gpu="never")
    ranker = CandidateRanker.from_artifact(artifact)
    query_emb = np.load(artifact.path(layout.QUERY_EMBEDDINGS), allow_pickle=False)

    k = min(100, retriever.index.ntotal)
    _, ann_ids = retriever.index.search(query_emb, k)
    exact_ids = exact_topk(np.asarray(retriever.embeddings), query_emb, k)
    qrels = loaders.read_qrels(data_dir)
    queries = loaders.read_queries(data_dir)
    exact_items = qrels[qrels["label"] == "E"].groupby("query_id")["item_idx"].apply(np.asarray)
    relevant = [exact_items.get(q, np.zeros(0, np.int64)) for q in queries["query_id"]]

    search = evaluate_search(artifact, retriever, ranker)
    ndcg: dict[str, float] = {}
    n_sessions = 0
    if len(loaders.read_interactions(data_dir, "test", columns=["session_id"])):
        test, scores = _test_session_scores(artifact, ranker, retriever, data_dir)
        group, labels = test["session_id"].to_numpy(), test["label"].to_numpy()
        ndcg = {name: ndcg_at_k(group, labels, s, k=10) for name, s in scores.items()}
        n_sessions = int(test["session_id"].nunique())

    texts = queries["query"].astype(str).tolist()
    coverage_lists = _top10_lists(retriever, ranker, query_emb, texts, coverage_users)
    metrics: dict[str, Any] = {
        "artifact_version": artifact.version,
        "n_items": int(retriever.index.ntotal),
        "n_queries": len(queries),
        "n_test_sessions": n_sessions,
        "index": artifact.manifest.reports.get("index", {}).get("factory"),
        "ann_recall_at_100_vs_exact": round(index_recall(ann_ids, exact_ids), 4),
        "retrieval_recall_at_100": round(recall_at_k(list(ann_ids), relevant, 100), 4),
        "search": search,
        "ndcg_at_10": {name: round(v, 4) for name, v in ndcg.items()},
        "catalog_coverage": round(catalog_coverage(coverage_lists, retriever.index.ntotal), 4),
        "seconds": round(time.perf_counter() - started, 1),
    }
    return metrics


def _top10_lists(
    retriever: Retriever,
    ranker: CandidateRanker,
    query_emb: np.ndarray,
    texts: list[str],
    n_users: int,
) -> list[np.ndarray]:
    """Top-10 after ranking, for every labelled query and a sample of shoppers."""
    rng = np.random.default_rng(0)
    users = rng.choice(len(retriever.history), min(n_users, len(retriever.history)), replace=False)
    requests = [
        RetrievalRequest(n=200, query_vec=q, query=t) for q, t in zip(query_emb, texts, strict=True)
    ]
    requests += [RetrievalRequest(n=200, user_idx=int(u)) for u in users]
    out: list[np.ndarray] = []
    for s in range(0, len(requests), 256):
        chunk = requests[s : s + 256]
        cands = retriever.retrieve(chunk)
        ranks = ranker.score(
            [RankRequest(c, r.user_idx, query=r.query) for c, r in zip(cands, chunk, strict=True)]
        )
        out += [c.item_idx[np.argsort(-sc)[:10]] for c, sc in zip(cands, ranks, strict=True)]
    return out


def markdown_report(metrics: dict[str, Any], command: str) -> str:
    nd = metrics["ndcg_at_10"]
    rows = "\n".join(f"| {name} | {value:.4f} |" for name, value in nd.items())
    search = _search_table(metrics.get("search", {}))
    return f"""# Offline evaluation — artifact `{metrics["artifact_version"]}`

Search relevance on held-out labelled queries (`ranked`: the served answer; the others: each
candidate order alone):

{search}

Catalog: {metrics["n_items"]:,} items, index `{metrics["index"]}`; {metrics["n_queries"]:,} labelled
queries; {metrics["n_test_sessions"]:,} held-out test sessions (later in time than training).

| metric | value |
| --- | --- |
| ANN recall@100 vs exact search | {metrics["ann_recall_at_100_vs_exact"]:.4f} |
| retrieval recall@100 of exact-match (E) labels | {metrics["retrieval_recall_at_100"]:.4f} |
| catalog coverage of top-10 lists | {metrics["catalog_coverage"]:.4f} |

nDCG@10 on test sessions (re-ranking each session's impressions):

| ordering | nDCG@10 |
| --- | --- |
{rows}

`oracle` ranks by the generator's hidden noiseless utility: the ceiling for any model.

Reproduce: `{command}`

```json
{json.dumps(metrics, indent=2)}
```
"""


def _search_table(search: dict[str, Any]) -> str:
    if not search.get("n_queries"):
        return "(no labelled test queries)"
    lines = [
        f"{search['n_queries']} queries, main view: {search['judgments']} judgments.",
        "",
        "| view | metric | " + " | ".join(search["ndcg_at_10"]) + " |",
        "|" + " --- |" * (2 + len(search["ndcg_at_10"])),
    ]
    views = [(search["judgments"], search), ("labelled", search["labelled"])]
    for view, values in views:
        for metric in ("ndcg_at_10", "recall_at_100_exact"):
            cells = [values[metric].get(name) for name in search["ndcg_at_10"]]
            text = " | ".join("-" if c is None else f"{c:.4f}" for c in cells)
            lines.append(f"| {view} | {metric} | {text} |")
    return "\n".join(lines)
