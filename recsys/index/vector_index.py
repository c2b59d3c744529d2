"""A FAISS index with its search parameter, on CPU or GPU, saved without pickle."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from recsys.config import IndexKind

ConcreteKind = str  # one of flat, ivf_flat, ivf_pq, hnsw


def faiss_gpu_count() -> int:
    """GPUs visible to FAISS (0 with the CPU build)."""
    get = getattr(faiss, "get_num_gpus", None)
    return int(get()) if get is not None else 0


@dataclass(frozen=True)
class SearchParam:
    """The accuracy/speed knob of an index kind: nprobe (IVF) or efSearch (HNSW)."""

    name: str | None
    value: int | None

    @staticmethod
    def for_kind(kind: ConcreteKind) -> str | None:
        return {"ivf_flat": "nprobe", "ivf_pq": "nprobe", "hnsw": "efSearch"}.get(kind)


class VectorIndex:
    """Inner-product search over unit vectors (cosine similarity)."""

    def __init__(self, index: Any, kind: ConcreteKind, param: SearchParam, on_gpu: bool = False):
        self.index = index
        self.kind = kind
        self.param = param
        self.on_gpu = on_gpu
        self.set_param(param.value)

    @property
    def ntotal(self) -> int:
        return int(self.index.ntotal)

    @property
    def dim(self) -> int:
        return int(self.index.d)

    def set_param(self, value: int | None) -> None:
        """Set nprobe / efSearch (a no-op for flat indexes)."""
        if self.param.name is None or value is None:
            return
        if self.on_gpu:
            faiss.GpuParameterSpace().set_index_parameter(self.index, self.param.name, value)
        elif self.param.name == "nprobe":
            faiss.extract_index_ivf(self.index).nprobe = int(value)
        else:
            hnsw: Any = faiss.downcast_index(self.index)
            hnsw.hnsw.efSearch = int(value)
        self.param = SearchParam(self.param.name, int(value))

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-k (scores, ids) per query row; missing results are -inf / -1."""
        q = np.ascontiguousarray(queries, dtype=np.float32)
        if q.ndim != 2 or q.shape[1] != self.dim:
            raise ValueError(f"queries must have shape (n, {self.dim}), got {q.shape}")
        k = min(k, self.ntotal)
        scores, ids = self.index.search(q, k)
        scores = np.where(ids < 0, -np.inf, scores).astype(np.float32)
        return scores, ids.astype(np.int64)

    def save(self, path: Path) -> None:
        cpu = faiss.index_gpu_to_cpu(self.index) if self.on_gpu else self.index
        faiss.write_index(cpu, str(path))

    @classmethod
    def load(
        cls, path: Path, kind: ConcreteKind, param_value: int | None, use_gpu: str = "auto"
    ) -> VectorIndex:
        index = faiss.read_index(str(path))
        index, on_gpu = maybe_to_gpu(index, kind, use_gpu)
        return cls(index, kind, SearchParam(SearchParam.for_kind(kind), param_value), on_gpu)


def maybe_to_gpu(index: Any, kind: ConcreteKind, use_gpu: str) -> tuple[Any, bool]:
    """Move an index to all visible GPUs when allowed and supported (HNSW stays on CPU)."""
    if use_gpu == "never" or kind == "hnsw" or faiss_gpu_count() == 0:
        return index, False
    return faiss.index_cpu_to_all_gpus(index), True


def resolve_kind(kind: IndexKind, n: int) -> ConcreteKind:
    """``auto``: exact search for small catalogs, IVF-Flat up to 2M items, IVF-PQ beyond."""
    if kind != "auto":
        return kind
    if n < 20_000:
        return "flat"
    return "ivf_flat" if n < 2_000_000 else "ivf_pq"
