"""Search relevance on held-out labelled queries: every candidate order and the served answer.

For each test query (``query_split.parquet``: never trained on), the top of four orders:

* ``dense``: FAISS over MiniLM vectors; ``lexical``: BM25 (typo tolerant); ``hybrid``: the two
  fused by reciprocal rank: each candidate order on its own;
* ``ranked``: the served answer, the ranker over the artifact's retrieval mode's candidates
  (``RetrievalConfig().n_candidates`` of them), for an anonymous shopper.

Two views, neither hiding the other:

* ``complete``: where the artifact has the synthetic world's ground truth, *every* returned
  item is judged with the world's own relevance rule (``relevance_gain``), and the ideal list
  comes from the whole catalog; a labelled sample would cap what a perfect system can score.
* ``labelled``: only the judged pairs (unjudged items gain 0), what a real dataset allows.

Metrics: nDCG@10 with gains ``2**gain - 1``; recall@100 of exact items,
``|top 100 and exact| / min(100, |exact|)``; a breakdown of nDCG@10 by query kind.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from recsys import layout
from recsys.artifacts import Artifact
from recsys.config import RetrievalConfig
from recsys.data import loaders
from recsys.data import schema as S
from recsys.data.ground_truth import ItemTruth, QuerySpecs, relevance_gain
from recsys.ranking import CandidateRanker
from recsys.retrieval import Retriever
from recsys.types import RankRequest, RetrievalRequest

ORDERS = ("dense", "lexical", "hybrid")
DISCOUNT = 1.0 / np.log2(np.arange(2, 12))


def dcg(gains: np.ndarray) -> float:
    g = np.asarray(gains, np.float64)[:10]
    return float(((2.0**g - 1.0) * DISCOUNT[: len(g)]).sum())


def ndcg_at_10(gains: np.ndarray, ideal: np.ndarray) -> float:
    best = dcg(np.sort(np.asarray(ideal))[::-1])
    return dcg(gains) / best if best > 0 else 0.0


def recall_exact(top: np.ndarray, exact: np.ndarray, k: int = 100) -> float | None:
    """|top k and exact| / min(k, |exact|); None when the query has no exact item."""
    if len(exact) == 0:
        return None
    return len(np.intersect1d(top[:k], exact)) / min(k, len(exact))


@dataclass
class Judge:
    """Gains of (query, items) from the world's ground truth and/or the labels."""

    qrels: dict[int, dict[int, int]]
    truth: tuple[QuerySpecs, ItemTruth] | None
    n_items: int

    @classmethod
    def load(cls, data_dir: Path, n_items: int) -> Judge:
        labels = loaders.read_qrels(data_dir)
        qrels: dict[int, dict[int, int]] = {}
        for q, i, g in zip(labels["query_id"], labels["item_idx"], labels["gain"], strict=True):
            qrels.setdefault(int(q), {})[int(i)] = int(g)
        truth = None
        hidden = data_dir / S.GROUND_TRUTH_DIR
        if (hidden / S.QUERY_SPECS_FILE).is_file() and (hidden / S.ITEM_LATENT_FILE).is_file():
            items = pq.read_table(data_dir / S.ITEMS_FILE)
            latent = pq.read_table(hidden / S.ITEM_LATENT_FILE)
            specs = QuerySpecs.from_table(pq.read_table(hidden / S.QUERY_SPECS_FILE))
            truth = (specs, ItemTruth.from_tables(items, latent))
        return cls(qrels, truth, n_items)

    def complete(self, query_id: int) -> np.ndarray | None:
        """The gain of every catalog item for the query (None without ground truth)."""
        if self.truth is None:
            return None
        specs, items = self.truth
        rows = np.arange(self.n_items)
        return relevance_gain(specs, np.full(self.n_items, query_id), items, rows)

    def labelled(self, query_id: int, items: np.ndarray) -> np.ndarray:
        judged = self.qrels.get(query_id, {})
        return np.array([judged.get(int(i), 0) for i in items], np.int64)


def evaluate_search(
    artifact: Artifact,
    retriever: Retriever,
    ranker: CandidateRanker,
    n_candidates: int | None = None,
    limit: int | None = None,
) -> dict[str, Any]:
    """The ``search`` object of ``recsys eval`` (see the module docstring)."""
    data_dir = artifact.root / layout.DATA_DIR
    queries = loaders.read_queries(data_dir)
    if layout.QUERY_SPLIT in artifact.manifest.files:
        split = pd.read_parquet(artifact.path(layout.QUERY_SPLIT))
        test_ids = split.loc[split["split"] == "test", "query_id"].to_numpy()
    else:  # an artifact from before the split: every query (say so in the output)
        test_ids = queries["query_id"].to_numpy()
    if limit is not None:
        test_ids = test_ids[:limit]
    if len(test_ids) == 0:
        return {"n_queries": 0, "judgments": "none", "note": "no labelled test queries"}
    judge = Judge.load(data_dir, int(retriever.index.ntotal))
    query_emb = np.load(artifact.path(layout.QUERY_EMBEDDINGS), allow_pickle=False)
    texts = queries["query"].astype(str).to_numpy()
    kinds = queries["kind"].astype(str).to_numpy()
    n = n_candidates or RetrievalConfig().n_candidates
    orders = {m: _with_mode(retriever, m) for m in ORDERS if retriever.lexical or m == "dense"}

    rows: list[dict[str, Any]] = []
    for s in range(0, len(test_ids), 64):
        chunk = [int(q) for q in test_ids[s : s + 64]]
        reqs = [RetrievalRequest(n=n, query_vec=query_emb[q], query=texts[q]) for q in chunk]
        found = {m: r.retrieve(reqs) for m, r in orders.items()}
        tops = {m: [c.item_idx for c in cands] for m, cands in found.items()}
        # the served candidates are one of the orders' (the artifact's mode): not searched twice
        served = found[retriever.mode] if retriever.mode in found else retriever.retrieve(reqs)
        scores = ranker.score(
            [RankRequest(c, None, query=texts[q]) for c, q in zip(served, chunk, strict=True)]
        )
        tops["ranked"] = [
            c.item_idx[np.argsort(-sc, kind="stable")] for c, sc in zip(served, scores, strict=True)
        ]
        for j, q in enumerate(chunk):
            rows.append(_judge_query(judge, q, kinds[q], {m: t[j] for m, t in tops.items()}))
    return _summarise(
        rows, list(orders), judge.truth is not None, layout.QUERY_SPLIT in artifact.manifest.files
    )


def _with_mode(retriever: Retriever, mode: str) -> Retriever:
    config = retriever.config.model_copy(update={"mode": mode})
    return Retriever(
        retriever.index,
        retriever.embeddings,
        retriever.history,
        retriever.attributes,
        config,
        retriever.lexical,
        mode,
    )


def _judge_query(judge: Judge, q: int, kind: str, tops: dict[str, np.ndarray]) -> dict[str, Any]:
    row: dict[str, Any] = {"query_id": q, "kind": kind}
    gains = judge.complete(q)
    judged = judge.qrels.get(q, {})
    label_ideal = np.array(list(judged.values()), np.int64)
    label_exact = np.array([i for i, g in judged.items() if g == 3], np.int64)
    exact = np.flatnonzero(gains == 3) if gains is not None else None
    for name, top in tops.items():
        if gains is not None and exact is not None:
            row[f"complete_ndcg_{name}"] = ndcg_at_10(gains[top[:10]], np.sort(gains)[::-1][:10])
            row[f"complete_recall_{name}"] = recall_exact(top, exact)
        row[f"labelled_ndcg_{name}"] = ndcg_at_10(judge.labelled(q, top[:10]), label_ideal)
        row[f"labelled_recall_{name}"] = recall_exact(top, label_exact)
    return row


def _summarise(
    rows: list[dict[str, Any]], orders: list[str], complete: bool, held_out: bool
) -> dict[str, Any]:
    frame = pd.DataFrame(rows)
    names = ["ranked", *orders]

    def view(prefix: str) -> dict[str, Any]:
        return {
            "ndcg_at_10": {m: round(float(frame[f"{prefix}_ndcg_{m}"].mean()), 4) for m in names},
            "recall_at_100_exact": {
                m: round(float(frame[f"{prefix}_recall_{m}"].dropna().mean()), 4) for m in orders
            },
        }

    main = "complete" if complete else "labelled"
    out: dict[str, Any] = {
        "n_queries": len(frame),
        "judgments": main,
        "held_out_queries": held_out,
        **view(main),
        "labelled": view("labelled"),
        "by_kind": {
            kind: {
                "n": int(len(part)),
                **{m: round(float(part[f"{main}_ndcg_{m}"].mean()), 4) for m in names},
            }
            for kind, part in frame.groupby("kind")
        },
    }
    return out
