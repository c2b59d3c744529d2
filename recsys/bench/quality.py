"""Offline experiments: what an optimisation does to speed *and* quality, without servers.

* :func:`encoder_precision`: int8 dynamic quantisation vs fp32: cosine of the two embeddings
  of every labelled query, retrieval overlap and recall@100 with each, encode speed, size.
* :func:`cache_replay`: hit ratio of the query-embedding LRU under the benchmark's long-tail
  query stream, by capacity and number of encoder replicas (each replica has its own cache).
* :func:`nprobe_sweep`: IVF nprobe vs recall@100 (against exact search and of the labelled
  exact matches) vs search time.
* :func:`candidates_sweep`: candidates N vs nDCG@10 of the ranked top 10 on the labelled
  queries (graded labels; labelled items that retrieval missed count in the ideal) and time.

All run in this process on one thread by default (what one Serve stage replica has).
"""

from __future__ import annotations

import io
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from recsys import layout
from recsys.artifacts import Artifact
from recsys.cache import EmbeddingCache, normalise_query
from recsys.config import EncoderConfig, RetrievalConfig
from recsys.data import loaders
from recsys.index.build import exact_topk
from recsys.index.build import recall_at_k as overlap_recall
from recsys.metrics import ndcg_at_k, recall_at_k
from recsys.ranking import CandidateRanker
from recsys.retrieval import Retriever
from recsys.types import RankRequest, RetrievalRequest


@dataclass
class EvalData:
    """The labelled queries of an artifact and the retriever over its index."""

    artifact: Artifact
    retriever: Retriever
    texts: list[str]
    query_ids: np.ndarray
    embeddings: np.ndarray
    """The artifact's fp32 embeddings of the labelled queries (row i: ``texts[i]``)."""
    qrels: pd.DataFrame
    """``query_id``, ``item_idx``, ``gain`` (0..3)."""

    @classmethod
    def load(cls, artifacts: str | Path, limit: int | None = None) -> EvalData:
        artifact = Artifact.open(str(artifacts))
        retriever = Retriever.from_artifact(artifact, RetrievalConfig(), use_gpu="never")
        data_dir = artifact.root / layout.DATA_DIR
        queries = loaders.read_queries(data_dir)
        emb = np.load(artifact.path(layout.QUERY_EMBEDDINGS), allow_pickle=False)
        if limit is not None and limit < len(queries):
            pick = np.random.default_rng(0).choice(len(queries), limit, replace=False)
            pick.sort()
            queries, emb = queries.iloc[pick].reset_index(drop=True), emb[pick]
        qrels = loaders.read_qrels(data_dir)[["query_id", "item_idx", "gain"]]
        return cls(
            artifact,
            retriever,
            queries["query"].astype(str).tolist(),
            queries["query_id"].to_numpy(np.int64),
            np.ascontiguousarray(emb, dtype=np.float32),
            qrels,
        )

    def exact_labels(self) -> list[np.ndarray]:
        """Per query, the items labelled exact (the highest gain)."""
        top = int(self.qrels["gain"].max())
        exact = self.qrels[self.qrels["gain"] == top].groupby("query_id")["item_idx"]
        groups = {int(k): np.asarray(v, np.int64) for k, v in exact}
        return [groups.get(int(q), np.zeros(0, np.int64)) for q in self.query_ids]


def _set_threads(threads: int) -> None:
    import faiss
    import torch

    torch.set_num_threads(threads)
    faiss.omp_set_num_threads(threads)


def _model_bytes(model: Any) -> int:
    import torch

    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    return buffer.getbuffer().nbytes


def _encode_speed(
    encoder: Any, texts: Sequence[str], n_single: int, batch: int
) -> dict[str, float]:
    singles = []
    for text in texts[:n_single]:
        started = time.perf_counter()
        encoder.encode([text])
        singles.append((time.perf_counter() - started) * 1000.0)
    chunk = list(texts[: batch * 16])
    started = time.perf_counter()
    for s in range(0, len(chunk), batch):
        encoder.encode(chunk[s : s + batch])
    wall = time.perf_counter() - started
    return {
        "batch1_p50_ms": float(np.median(singles)),
        f"batch{batch}_q_per_s": len(chunk) / wall,
    }


def encoder_precision(
    data: EvalData, threads: int = 1, n_single: int = 200, batch: int = 16
) -> dict[str, Any]:
    """int8 vs fp32 query encoder: embedding agreement, retrieval quality, speed, size."""
    from recsys.encoder import QueryEncoder

    _set_threads(threads)
    out: dict[str, Any] = {"threads": threads, "n_queries": len(data.texts)}
    embeddings: dict[str, np.ndarray] = {}
    for precision in ("fp32", "int8"):
        encoder = QueryEncoder(EncoderConfig(precision=precision, num_threads=threads))
        encoder.encode(["warm up"])
        embeddings[precision] = encoder.encode_all(data.texts, progress=False)
        out[precision] = {
            **_encode_speed(encoder, data.texts, n_single, batch),
            "model_mb": _model_bytes(encoder.model) / 1e6,
        }
    fp32, int8 = embeddings["fp32"], embeddings["int8"]
    cos = np.sum(fp32 * int8, axis=1)
    out["cosine_int8_fp32"] = {
        "mean": float(cos.mean()),
        "p1": float(np.percentile(cos, 1)),
        "min": float(cos.min()),
    }
    out["cosine_fp32_vs_artifact_mean"] = float(np.sum(fp32 * data.embeddings, axis=1).mean())
    k = min(100, data.retriever.index.ntotal)
    _, ids32 = data.retriever.index.search(fp32, k)
    _, ids8 = data.retriever.index.search(int8, k)
    exact = data.exact_labels()
    out["retrieval_overlap_at_100"] = overlap_recall(ids8, ids32)
    out["label_recall_at_100"] = {
        "fp32": recall_at_k(list(ids32), exact, k),
        "int8": recall_at_k(list(ids8), exact, k),
    }
    return out


def cache_replay(
    queries: Sequence[str],
    capacities: Sequence[int],
    replicas: Sequence[int] = (1, 2),
    seed: int = 0,
) -> list[dict[str, Any]]:
    """Hit ratio of the LRU over ``queries`` (in arrival order), cold start, per capacity and
    number of replicas (queries assigned to replicas at random, each with its own cache)."""
    dim = 1
    zeros = np.zeros((1, dim), np.float32)

    def fake_encode(texts: list[str]) -> np.ndarray:
        return np.repeat(zeros, len(texts), axis=0)

    rng = np.random.default_rng(seed)
    rows = []
    distinct = len({normalise_query(q) for q in queries})
    for n_rep in replicas:
        owner = rng.integers(0, n_rep, size=len(queries))
        for capacity in capacities:
            caches = [EmbeddingCache(capacity) for _ in range(n_rep)]
            for q, r in zip(queries, owner, strict=True):
                caches[int(r)].encode_through([q], fake_encode, dim)
            hits = sum(c.hits for c in caches)
            lookups = sum(c.lookups for c in caches)
            rows.append(
                {
                    "capacity": int(capacity),
                    "replicas": int(n_rep),
                    "lookups": int(lookups),
                    "distinct_queries": distinct,
                    "hit_ratio": hits / lookups if lookups else 0.0,
                }
            )
    return rows


def nprobe_sweep(
    data: EvalData, nprobes: Sequence[int], threads: int = 1, k: int = 100, n_single: int = 300
) -> list[dict[str, Any]]:
    """nprobe vs recall@k (vs exact search; of labelled exact items) vs search time."""
    _set_threads(threads)
    index = data.retriever.index
    original = index.param.value
    if index.param.name != "nprobe":
        return []
    k = min(k, index.ntotal)
    truth = exact_topk(np.asarray(data.retriever.embeddings), data.embeddings, k)
    exact = data.exact_labels()
    rows = []
    try:
        for nprobe in nprobes:
            index.set_param(int(nprobe))
            _, ids = index.search(data.embeddings, k)
            singles = []
            for q in data.embeddings[:n_single]:
                started = time.perf_counter()
                index.search(q[None, :], k)
                singles.append((time.perf_counter() - started) * 1000.0)
            started = time.perf_counter()
            batches = 0
            for s in range(0, min(len(data.embeddings), 512), 16):
                index.search(data.embeddings[s : s + 16], k)
                batches += 1
            rows.append(
                {
                    "nprobe": int(nprobe),
                    "recall_at_100_vs_exact": overlap_recall(ids, truth),
                    "label_recall_at_100": recall_at_k(list(ids), exact, k),
                    "batch1_p50_ms": float(np.median(singles)),
                    "batch16_ms": (time.perf_counter() - started) / batches * 1000.0,
                    "served_default": int(nprobe) == original,
                }
            )
    finally:
        index.set_param(original)
    return rows


def candidates_sweep(
    data: EvalData, ns: Sequence[int], threads: int = 1, batch: int = 16
) -> list[dict[str, Any]]:
    """Candidates N vs nDCG@10 (ranker order and retrieval order) vs time per request.

    Anonymous searches with the artifact's query embeddings; gains are the labels' 0..3;
    labelled items retrieval did not return are kept (score -inf) so the ideal DCG counts
    them: a smaller N can only lose."""
    _set_threads(threads)
    ranker = CandidateRanker.from_artifact(data.artifact)
    labels = data.qrels.set_index(["query_id", "item_idx"])["gain"]
    rows = []
    for n in ns:
        groups: list[np.ndarray] = []
        items: list[np.ndarray] = []
        ranked: list[np.ndarray] = []
        retrieved: list[np.ndarray] = []
        retrieve_s = rank_s = 0.0
        for s in range(0, len(data.texts), batch):
            reqs = [RetrievalRequest(n=int(n), query_vec=v) for v in data.embeddings[s : s + batch]]
            t0 = time.perf_counter()
            cands = data.retriever.retrieve(reqs)
            t1 = time.perf_counter()
            scores = ranker.score(
                [RankRequest(c, None, query=data.texts[s + j]) for j, c in enumerate(cands)]
            )
            t2 = time.perf_counter()
            retrieve_s += t1 - t0
            rank_s += t2 - t1
            for j, (c, sc) in enumerate(zip(cands, scores, strict=True)):
                groups.append(np.full(len(c), data.query_ids[s + j]))
                items.append(c.item_idx)
                ranked.append(sc)
                retrieved.append(c.score)
        frame = pd.DataFrame(
            {
                "query_id": np.concatenate(groups),
                "item_idx": np.concatenate(items),
                "ranker": np.concatenate(ranked),
                "retrieval": np.concatenate(retrieved),
            }
        )
        frame["gain"] = (
            labels.reindex(pd.MultiIndex.from_arrays([frame["query_id"], frame["item_idx"]]))
            .fillna(0)
            .to_numpy()
        )
        missed = data.qrels[data.qrels["query_id"].isin(data.query_ids)].merge(
            frame[["query_id", "item_idx"]], how="left", indicator=True
        )
        missed = missed[missed["_merge"] == "left_only"]
        extra = pd.DataFrame(
            {
                "query_id": missed["query_id"].to_numpy(),
                "item_idx": missed["item_idx"].to_numpy(),
                "ranker": -np.inf,
                "retrieval": -np.inf,
                "gain": missed["gain"].to_numpy(),
            }
        )
        full = pd.concat([frame, extra], ignore_index=True)
        group = full["query_id"].to_numpy()
        gain = full["gain"].to_numpy(np.float64)
        n_req = len(data.texts)
        rows.append(
            {
                "n_candidates": int(n),
                "ndcg_at_10_ranker": ndcg_at_k(group, gain, full["ranker"].to_numpy(), k=10),
                "ndcg_at_10_retrieval": ndcg_at_k(group, gain, full["retrieval"].to_numpy(), k=10),
                "label_recall_at_n": recall_at_k(
                    [np.asarray(x) for x in _split(frame, data.query_ids)],
                    data.exact_labels(),
                    int(n),
                ),
                "retrieve_ms_per_req": retrieve_s / n_req * 1000.0,
                "rank_ms_per_req": rank_s / n_req * 1000.0,
                "rank_ms_per_batch16": rank_s / max(1, -(-n_req // batch)) * 1000.0,
            }
        )
    return rows


def _split(frame: pd.DataFrame, query_ids: np.ndarray) -> list[np.ndarray]:
    """Retrieved item ids per query, in ``query_ids`` order."""
    by = {int(q): g["item_idx"].to_numpy() for q, g in frame.groupby("query_id", sort=False)}
    return [by.get(int(q), np.zeros(0, np.int64)) for q in query_ids]
