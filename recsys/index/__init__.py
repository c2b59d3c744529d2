"""FAISS candidate index: build and tune, search, and merge top-k lists.

Names load on first use, so modules that only need the lexical analyzer or the merge (the
ranker's features, the ingress) do not import FAISS.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from recsys.index.build import IndexReport, build_index, exact_topk, recall_at_k
    from recsys.index.merge import merge_topk
    from recsys.index.vector_index import VectorIndex, faiss_gpu_count, resolve_kind

_HOME = {
    "IndexReport": "build",
    "build_index": "build",
    "exact_topk": "build",
    "recall_at_k": "build",
    "merge_topk": "merge",
    "VectorIndex": "vector_index",
    "faiss_gpu_count": "vector_index",
    "resolve_kind": "vector_index",
}

__all__ = [
    "IndexReport",
    "VectorIndex",
    "build_index",
    "exact_topk",
    "faiss_gpu_count",
    "merge_topk",
    "recall_at_k",
    "resolve_kind",
]


def __getattr__(name: str) -> Any:
    module = _HOME.get(name)
    if module is None:
        raise AttributeError(f"module 'recsys.index' has no attribute {name!r}")
    return getattr(import_module(f"recsys.index.{module}"), name)
