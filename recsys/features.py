"""Ranker features: per-item tables, shopper history vectors, and batch assembly.

The same functions build training rows offline and scoring rows online, so a served model sees
exactly the features it was trained on.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd
import torch

from recsys.ranker.model import DENSE_FEATURES


@dataclass(frozen=True)
class FeatureStats:
    """Standardisation constants of the per-item dense features (saved with the ranker)."""

    log_price_mean: float
    log_price_std: float
    rating_mean: float
    rating_std: float
    log_popularity_mean: float
    log_popularity_std: float

    @classmethod
    def fit(cls, items: pd.DataFrame) -> FeatureStats:
        lp = np.log1p(items["price"].to_numpy(np.float64))
        rt = items["rating"].to_numpy(np.float64)
        pop = np.log(items["popularity"].to_numpy(np.float64) + 1e-12)
        return cls(
            float(lp.mean()),
            float(lp.std() or 1.0),
            float(rt.mean()),
            float(rt.std() or 1.0),
            float(pop.mean()),
            float(pop.std() or 1.0),
        )

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


@dataclass(frozen=True)
class ItemFeatureTable:
    """Per-item sparse ids and standardised dense features, indexed by ``item_idx``."""

    leaf_idx: np.ndarray  # int64 (n,)
    brand_idx: np.ndarray  # int64 (n,)
    dense: np.ndarray  # float32 (n, 3): log_price_z, rating_z, log_popularity_z

    @classmethod
    def from_items(cls, items: pd.DataFrame, stats: FeatureStats) -> ItemFeatureTable:
        lp = (np.log1p(items["price"].to_numpy(np.float64)) - stats.log_price_mean) / (
            stats.log_price_std
        )
        rt = (items["rating"].to_numpy(np.float64) - stats.rating_mean) / stats.rating_std
        pop = (
            np.log(items["popularity"].to_numpy(np.float64) + 1e-12) - stats.log_popularity_mean
        ) / stats.log_popularity_std
        return cls(
            leaf_idx=items["leaf_idx"].to_numpy(np.int64),
            brand_idx=items["brand_idx"].to_numpy(np.int64),
            dense=np.stack([lp, rt, pop], axis=1).astype(np.float32),
        )

    def __len__(self) -> int:
        return len(self.leaf_idx)


@dataclass
class FeatureBatch:
    """Model inputs for a batch of (shopper, item) pairs."""

    sparse: np.ndarray  # int64 (n, 4): user, item, leaf, brand
    dense: np.ndarray  # float32 (n, len(DENSE_FEATURES))

    def __len__(self) -> int:
        return len(self.sparse)

    def tensors(self, device: str | torch.device = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
        return (
            torch.from_numpy(self.sparse).to(device),
            torch.from_numpy(self.dense).to(device),
        )


def assemble(
    table: ItemFeatureTable,
    user_idx: np.ndarray,
    item_idx: np.ndarray,
    query_cos: np.ndarray,
    history_cos: np.ndarray,
    has_query: np.ndarray,
    has_history: np.ndarray,
) -> FeatureBatch:
    """Rows of model input; every argument is a length-n array aligned with ``item_idx``."""
    n = len(item_idx)
    sparse = np.empty((n, 4), dtype=np.int64)
    sparse[:, 0] = user_idx
    sparse[:, 1] = item_idx
    sparse[:, 2] = table.leaf_idx[item_idx]
    sparse[:, 3] = table.brand_idx[item_idx]
    dense = np.empty((n, len(DENSE_FEATURES)), dtype=np.float32)
    dense[:, 0:3] = table.dense[item_idx]
    dense[:, 3] = query_cos * has_query
    dense[:, 4] = history_cos * has_history
    dense[:, 5] = has_query
    dense[:, 6] = has_history
    return FeatureBatch(sparse=sparse, dense=dense)


def history_vectors(
    user_idx: np.ndarray,
    item_idx: np.ndarray,
    label: np.ndarray,
    item_embeddings: np.ndarray,
    n_users: int,
    chunk: int = 200_000,
) -> tuple[np.ndarray, np.ndarray]:
    """Each shopper's taste as the label-weighted mean embedding of items they engaged with.

    Returns ``(vectors float32 (n_users, d), has_history bool (n_users,))``; vectors are unit
    length where a shopper has any click, zero elsewhere.
    """
    positive = label > 0
    users = torch.from_numpy(np.ascontiguousarray(user_idx[positive], dtype=np.int64))
    items = item_idx[positive]
    weights = label[positive].astype(np.float32)
    acc = torch.zeros((n_users, item_embeddings.shape[1]), dtype=torch.float32)
    for start in range(0, len(items), chunk):
        rows = torch.from_numpy(item_embeddings[items[start : start + chunk]])
        w = torch.from_numpy(weights[start : start + chunk]).unsqueeze(1)
        acc.index_add_(0, users[start : start + chunk], rows * w)
    norms = acc.norm(dim=1, keepdim=True)
    has = (norms.squeeze(1) > 0).numpy()
    vecs = (acc / norms.clamp(min=1e-12)).numpy().astype(np.float32)
    return vecs, has


def rowwise_cos(
    left: np.ndarray, left_idx: np.ndarray, right: np.ndarray, right_idx: np.ndarray
) -> np.ndarray:
    """``dot(left[left_idx[i]], right[right_idx[i]])`` for every i, in bounded chunks."""
    out = np.empty(len(left_idx), dtype=np.float32)
    step = 100_000
    for s in range(0, len(left_idx), step):
        a = left[left_idx[s : s + step]].astype(np.float32, copy=False)
        b = right[right_idx[s : s + step]].astype(np.float32, copy=False)
        out[s : s + step] = np.einsum("ij,ij->i", a, b)
    return out
