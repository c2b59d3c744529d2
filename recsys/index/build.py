"""Building and tuning the candidate index.

After training, the search parameter (nprobe for IVF, efSearch for HNSW) is raised step by step
until recall@k against exact search, measured on held-out query vectors, reaches the configured
target. The chosen value and the reached recall go into the artifact manifest.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import faiss
import numpy as np

from recsys.config import IndexConfig
from recsys.index.vector_index import (
    ConcreteKind,
    SearchParam,
    VectorIndex,
    maybe_to_gpu,
    resolve_kind,
)


@dataclass
class IndexReport:
    """What was built and how well it searches (written to the manifest)."""

    kind: ConcreteKind
    ntotal: int
    dim: int
    factory: str
    param_name: str | None
    param_value: int | None
    recall_at_k: float
    k: int
    recall_target: float
    target_reached: bool
    build_seconds: float
    on_gpu: bool
    curve: list[tuple[int, float]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def default_nlist(n: int) -> int:
    """About 4 sqrt(n) IVF cells, with at least 39 training points per cell."""
    return max(1, min(int(4 * math.sqrt(n)), n // 39))


def factory_string(kind: ConcreteKind, n: int, dim: int, config: IndexConfig) -> str:
    nlist = config.nlist or default_nlist(n)
    if kind == "flat":
        return "Flat"
    if kind == "ivf_flat":
        return f"IVF{nlist},Flat"
    if kind == "ivf_pq":
        if dim % config.pq_m:
            raise ValueError(f"index.pq_m={config.pq_m} must divide the dimension {dim}")
        return f"IVF{nlist},PQ{config.pq_m}x{config.pq_bits},RFlat"
    if kind == "hnsw":
        return f"HNSW{config.hnsw_m},Flat"
    raise ValueError(f"unknown index kind {kind!r}")


def exact_topk(vectors: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    """Exact inner-product top-k ids (the ground truth for tuning and evaluation)."""
    flat = faiss.IndexFlatIP(vectors.shape[1])
    flat.add(vectors)
    _, ids = flat.search(np.ascontiguousarray(queries, dtype=np.float32), k)
    return ids


def recall_at_k(found: np.ndarray, truth: np.ndarray) -> float:
    """Mean over queries of |found ∩ truth| / |truth| (both (nq, k) id arrays)."""
    hits = [
        len(np.intersect1d(f[f >= 0], t[t >= 0])) / max(1, (t >= 0).sum())
        for f, t in zip(found, truth, strict=True)
    ]
    return float(np.mean(hits))


def candidate_values(kind: ConcreteKind, nlist: int, k: int) -> list[int]:
    if kind in ("ivf_flat", "ivf_pq"):
        values, v = [], 1
        while v < nlist:
            values.append(v)
            v *= 2
        return [*values, nlist]
    if kind == "hnsw":
        return [v for v in (16, 32, 64, 128, 256, 512, 1024) if v >= min(k, 512)] or [k]
    return []


def build_index(
    vectors: np.ndarray,
    config: IndexConfig,
    tune_queries: np.ndarray | None = None,
    progress: bool = True,
) -> tuple[VectorIndex, IndexReport]:
    """Build, train and tune an index over unit vectors ``(n, d)`` float32."""
    from tqdm.auto import tqdm

    started = time.perf_counter()
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    n, dim = vectors.shape
    kind = resolve_kind(config.kind, n)
    factory = factory_string(kind, n, dim, config)
    index = faiss.index_factory(dim, factory, faiss.METRIC_INNER_PRODUCT)
    concrete: Any = faiss.downcast_index(index)
    if kind == "hnsw":
        concrete.hnsw.efConstruction = config.hnsw_ef_construction
    if kind == "ivf_pq":
        concrete.k_factor = 4  # re-rank 4k PQ candidates with the exact vectors
    if not index.is_trained:
        sample = vectors
        if n > 256 * 1024:
            sample = vectors[np.random.default_rng(0).choice(n, 256 * 1024, replace=False)]
        index.train(sample)
    step = 50_000
    with tqdm(total=n, desc=f"indexing ({factory})", unit="vec", disable=not progress) as bar:
        for s in range(0, n, step):
            index.add(vectors[s : s + step])
            bar.update(min(step, n - s))
    index, on_gpu = maybe_to_gpu(index, kind, config.use_gpu)
    vindex = VectorIndex(index, kind, SearchParam(SearchParam.for_kind(kind), None), on_gpu)

    k = min(config.tune_k, n)
    queries = tune_queries if tune_queries is not None else _proxy_queries(vectors, config)
    queries = queries[: config.tune_queries]
    truth = exact_topk(vectors, queries, k)
    curve: list[tuple[int, float]] = []
    values = candidate_values(kind, config.nlist or default_nlist(n), k)
    if not values:
        recall = recall_at_k(vindex.search(queries, k)[1], truth)
    for value in values:
        vindex.set_param(value)
        recall = recall_at_k(vindex.search(queries, k)[1], truth)
        curve.append((value, recall))
        if recall >= config.recall_target:
            break
    report = IndexReport(
        kind=kind,
        ntotal=vindex.ntotal,
        dim=dim,
        factory=factory,
        param_name=vindex.param.name,
        param_value=vindex.param.value,
        recall_at_k=recall,
        k=k,
        recall_target=config.recall_target,
        target_reached=recall >= config.recall_target,
        build_seconds=time.perf_counter() - started,
        on_gpu=on_gpu,
        curve=curve,
    )
    return vindex, report


def _proxy_queries(vectors: np.ndarray, config: IndexConfig) -> np.ndarray:
    """Without real queries: perturbed catalog vectors, renormalised."""
    rng = np.random.default_rng(1)
    pick = rng.choice(len(vectors), min(config.tune_queries, len(vectors)), replace=False)
    q = vectors[pick] + rng.normal(0, 0.05, size=(len(pick), vectors.shape[1])).astype(np.float32)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    return q.astype(np.float32)
