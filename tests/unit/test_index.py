"""FAISS index kinds, build-time tuning against exact search, search semantics."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from recsys.config import IndexConfig
from recsys.index import VectorIndex, build_index, exact_topk, faiss_gpu_count, recall_at_k
from recsys.index.vector_index import resolve_kind


def clustered(n: int, d: int = 64, centers: int = 50, seed: int = 0) -> np.ndarray:
    """Unit vectors around a few centres, like real embeddings (random ones have no structure)."""
    rng = np.random.default_rng(seed)
    c = rng.normal(size=(centers, d))
    x = c[rng.integers(0, centers, n)] + 0.35 * rng.normal(size=(n, d))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


@pytest.mark.parametrize("kind", ["flat", "ivf_flat", "hnsw", "ivf_pq"])
def test_each_kind_reaches_the_recall_target_after_tuning(kind: str, tmp_path: Path) -> None:
    x = clustered(6000)
    queries = clustered(200, seed=1)
    cfg = IndexConfig(kind=kind, recall_target=0.9, tune_k=20, tune_queries=200, pq_m=16)
    index, report = build_index(x, cfg, tune_queries=queries, progress=False)
    assert report.kind == kind and report.ntotal == 6000
    assert report.target_reached, report
    truth = exact_topk(x, queries, 20)
    measured = recall_at_k(index.search(queries, 20)[1], truth)
    assert measured == pytest.approx(report.recall_at_k, abs=1e-9)
    if kind != "flat":
        assert report.param_name in ("nprobe", "efSearch") and report.curve
    path = tmp_path / "i.faiss"
    index.save(path)
    loaded = VectorIndex.load(path, report.kind, report.param_value, use_gpu="never")
    assert np.array_equal(loaded.search(queries, 20)[1], index.search(queries, 20)[1])


def test_tuning_stops_at_the_smallest_sufficient_nprobe() -> None:
    x = clustered(5000)
    _, report = build_index(
        x, IndexConfig(kind="ivf_flat", recall_target=0.5, tune_k=10), progress=False
    )
    values = [v for v, _ in report.curve]
    assert report.param_value == values[-1]
    assert all(r < 0.5 for _, r in report.curve[:-1])


def test_auto_kind_follows_catalog_size() -> None:
    assert resolve_kind("auto", 5_000) == "flat"
    assert resolve_kind("auto", 50_000) == "ivf_flat"
    assert resolve_kind("auto", 5_000_000) == "ivf_pq"
    assert resolve_kind("hnsw", 10) == "hnsw"


def test_search_validates_shape_and_pads_with_minus_one() -> None:
    x = clustered(30)
    index, _ = build_index(x, IndexConfig(kind="flat", tune_k=5), progress=False)
    with pytest.raises(ValueError, match="shape"):
        index.search(np.zeros((2, 3), np.float32), 5)
    scores, ids = index.search(x[:2], 100)  # more than ntotal: clipped
    assert ids.shape == (2, 30) and ids[0, 0] == 0


def test_pq_m_must_divide_dimension() -> None:
    with pytest.raises(ValueError, match="divide"):
        build_index(clustered(3000), IndexConfig(kind="ivf_pq", pq_m=7), progress=False)


@pytest.mark.gpu
@pytest.mark.skipif(faiss_gpu_count() == 0, reason="FAISS sees no GPU (CPU build or no device)")
def test_index_moves_to_gpu_and_matches_cpu() -> None:
    x = clustered(20000)
    gpu_index, report = build_index(x, IndexConfig(kind="ivf_flat"), progress=False)
    assert report.on_gpu
    cpu_index, _ = build_index(x, IndexConfig(kind="ivf_flat", use_gpu="never"), progress=False)
    q = clustered(50, seed=3)
    assert recall_at_k(gpu_index.search(q, 10)[1], cpu_index.search(q, 10)[1]) > 0.95
