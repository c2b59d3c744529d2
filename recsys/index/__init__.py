"""FAISS candidate index: build and tune, search, and merge top-k lists."""

from recsys.index.build import IndexReport, build_index, exact_topk, recall_at_k
from recsys.index.merge import merge_topk
from recsys.index.vector_index import VectorIndex, faiss_gpu_count, resolve_kind

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
