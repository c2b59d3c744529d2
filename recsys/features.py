"""Ranker features: per-item tables, shopper history vectors, and batch assembly.

The same functions build training rows offline and scoring rows online, so a served model sees
exactly the features it was trained on.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

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


_WORD = re.compile(r"[a-z0-9]+")


def tokenize(text: str) -> list[str]:
    """Lower-case alphanumeric words."""
    return _WORD.findall(text.lower())


@dataclass(frozen=True)
class TitleTokens:
    """The distinct words of every item title, for the query-term coverage feature."""

    vocab: dict[str, int]
    indptr: np.ndarray  # int64 (n + 1,)
    tokens: np.ndarray  # int32, item i's distinct word ids at tokens[indptr[i]:indptr[i+1]]

    @classmethod
    def from_titles(cls, titles: Sequence[str]) -> TitleTokens:
        vocab: dict[str, int] = {}
        ids: list[int] = []
        indptr = np.zeros(len(titles) + 1, np.int64)
        for i, title in enumerate(titles):
            words = {vocab.setdefault(w, len(vocab)) for w in tokenize(title)}
            ids.extend(sorted(words))
            indptr[i + 1] = len(ids)
        return cls(vocab, indptr, np.asarray(ids, np.int32))

    def coverage(self, text: str, items: np.ndarray) -> np.ndarray:
        """Share of the text's distinct words that each item's title contains (float32)."""
        words = set(tokenize(text))
        known = np.array([self.vocab[w] for w in words if w in self.vocab], np.int32)
        return self._coverage(known, len(words), items)

    def same_words(self, text: str, items: np.ndarray) -> np.ndarray:
        """True where an item's title has exactly the text's set of words (an exact title)."""
        words = set(tokenize(text))
        if not words or len(items) == 0 or any(w not in self.vocab for w in words):
            return np.zeros(len(items), bool)
        sizes = self.indptr[items + 1] - self.indptr[items]
        return (sizes == len(words)) & (self.coverage(text, items) == 1.0)

    def item_coverage(self, seed: int, items: np.ndarray) -> np.ndarray:
        """Share of the seed item's title words that each item's title contains."""
        known = self.tokens[self.indptr[seed] : self.indptr[seed + 1]]
        return self._coverage(known, len(known), items)

    def _coverage(self, known: np.ndarray, n_words: int, items: np.ndarray) -> np.ndarray:
        if n_words == 0 or len(items) == 0:
            return np.zeros(len(items), np.float32)
        starts, stops = self.indptr[items], self.indptr[items + 1]
        lengths = stops - starts
        flat = np.concatenate([self.tokens[a:b] for a, b in zip(starts, stops, strict=True)])
        owner = np.repeat(np.arange(len(items)), lengths)
        hits = np.bincount(owner[np.isin(flat, known)], minlength=len(items))
        return (hits / n_words).astype(np.float32)


@dataclass(frozen=True)
class ItemFeatureTable:
    """Per-item sparse ids and standardised dense features, indexed by ``item_idx``."""

    leaf_idx: np.ndarray  # int64 (n,)
    brand_idx: np.ndarray  # int64 (n,)
    dense: np.ndarray  # float32 (n, 3): log_price_z, rating_z, log_popularity_z
    relative_log_price: np.ndarray  # float32 (n,): log price minus its leaf's median log price
    titles: TitleTokens

    @classmethod
    def from_items(cls, items: pd.DataFrame, stats: FeatureStats) -> ItemFeatureTable:
        lp = (np.log1p(items["price"].to_numpy(np.float64)) - stats.log_price_mean) / (
            stats.log_price_std
        )
        rt = (items["rating"].to_numpy(np.float64) - stats.rating_mean) / stats.rating_std
        pop = (
            np.log(items["popularity"].to_numpy(np.float64) + 1e-12) - stats.log_popularity_mean
        ) / stats.log_popularity_std
        log_price = pd.Series(np.log(items["price"].to_numpy(np.float64) + 1e-3))
        leaf_median = log_price.groupby(items["leaf_idx"].to_numpy()).transform("median")
        return cls(
            leaf_idx=items["leaf_idx"].to_numpy(np.int64),
            brand_idx=items["brand_idx"].to_numpy(np.int64),
            dense=np.stack([lp, rt, pop], axis=1).astype(np.float32),
            relative_log_price=(log_price - leaf_median).to_numpy(np.float32),
            titles=TitleTokens.from_titles(items["title"].tolist()),
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
    profiles: ShopperProfiles,
    user_idx: np.ndarray,
    item_idx: np.ndarray,
    query_cos: np.ndarray,
    history_cos: np.ndarray,
    has_query: np.ndarray,
    has_history: np.ndarray,
    match: np.ndarray,
) -> FeatureBatch:
    """Rows of model input; every array is length n, aligned with ``item_idx``; ``match`` is
    (n, len(recsys.matching.MATCH_FEATURES)), zero rows without a query.

    ``user_idx`` may hold the model's anonymous row (>= the profiles' shopper count): such
    rows get no personal features, like rows with ``has_history`` 0.
    """
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
    leaf_aff, brand_aff, price_gap = profiles.lookup(
        user_idx,
        table.leaf_idx[item_idx],
        table.brand_idx[item_idx],
        table.relative_log_price[item_idx],
    )
    dense[:, 7] = leaf_aff * has_history
    dense[:, 8] = brand_aff * has_history
    dense[:, 9] = price_gap * has_history
    dense[:, 10:] = match * has_query[:, None]
    return FeatureBatch(sparse=sparse, dense=dense)


@dataclass(frozen=True)
class ShopperProfiles:
    """What a shopper's past engagement says about leaves, brands and price level.

    Shares are label-weighted (click 1, cart 2, purchase 3) fractions of a shopper's engagement
    that fell in a leaf / on a brand; stored sparsely as sorted ``user * n + j`` keys so
    lookups stay vectorised and memory grows with engagement, not shoppers x leaves.
    """

    n_users: int
    n_leaves: int
    n_brands: int
    leaf_keys: np.ndarray  # int64 sorted
    leaf_share: np.ndarray  # float32
    brand_keys: np.ndarray  # int64 sorted
    brand_share: np.ndarray  # float32
    price_level: np.ndarray  # float32 (n_users,): mean relative log price engaged with
    has_profile: np.ndarray  # bool (n_users,)

    @classmethod
    def from_interactions(
        cls,
        user_idx: np.ndarray,
        item_idx: np.ndarray,
        label: np.ndarray,
        table: ItemFeatureTable,
        n_users: int,
    ) -> ShopperProfiles:
        pos = label > 0
        users = user_idx[pos].astype(np.int64)
        items = item_idx[pos].astype(np.int64)
        w = label[pos].astype(np.float64)
        n_leaves = int(table.leaf_idx.max()) + 1
        n_brands = int(table.brand_idx.max()) + 1
        total = np.bincount(users, weights=w, minlength=n_users)
        level = np.bincount(users, weights=w * table.relative_log_price[items], minlength=n_users)
        has = total > 0

        leaf_keys, leaf_sum = _sum_by_key(users * n_leaves + table.leaf_idx[items], w)
        brand_keys, brand_sum = _sum_by_key(users * n_brands + table.brand_idx[items], w)
        return cls(
            n_users=n_users,
            n_leaves=n_leaves,
            n_brands=n_brands,
            leaf_keys=leaf_keys,
            leaf_share=(leaf_sum / total[leaf_keys // n_leaves]).astype(np.float32),
            brand_keys=brand_keys,
            brand_share=(brand_sum / total[brand_keys // n_brands]).astype(np.float32),
            price_level=np.divide(level, total, out=np.zeros(n_users), where=has).astype(
                np.float32
            ),
            has_profile=has,
        )

    def lookup(
        self, user_idx: np.ndarray, leaf: np.ndarray, brand: np.ndarray, relative_price: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(leaf share, brand share, |item price level - shopper price level|) per row."""
        known = (user_idx >= 0) & (user_idx < self.n_users)
        if self.n_users == 0:  # a catalog without a log: nobody has a profile
            zeros = np.zeros(len(user_idx), np.float32)
            return zeros, zeros, zeros
        users = np.where(known, user_idx, 0).astype(np.int64)
        leaf_aff = _lookup(self.leaf_keys, self.leaf_share, users * self.n_leaves + leaf)
        brand_aff = _lookup(self.brand_keys, self.brand_share, users * self.n_brands + brand)
        has = known & self.has_profile[users]
        gap = np.abs(relative_price - self.price_level[users])
        return (
            np.where(known, leaf_aff, 0).astype(np.float32),
            np.where(known, brand_aff, 0).astype(np.float32),
            np.where(has, gap, 0).astype(np.float32),
        )

    def save(self, path: Path) -> None:
        np.savez(
            path,
            shape=np.array([self.n_users, self.n_leaves, self.n_brands], np.int64),
            leaf_keys=self.leaf_keys,
            leaf_share=self.leaf_share,
            brand_keys=self.brand_keys,
            brand_share=self.brand_share,
            price_level=self.price_level,
            has_profile=self.has_profile,
        )

    @classmethod
    def load(cls, path: Path) -> ShopperProfiles:
        with np.load(path, allow_pickle=False) as z:
            n_users, n_leaves, n_brands = (int(x) for x in z["shape"])
            return cls(
                n_users=n_users,
                n_leaves=n_leaves,
                n_brands=n_brands,
                leaf_keys=z["leaf_keys"],
                leaf_share=z["leaf_share"],
                brand_keys=z["brand_keys"],
                brand_share=z["brand_share"],
                price_level=z["price_level"],
                has_profile=z["has_profile"],
            )


def _sum_by_key(keys: np.ndarray, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    uniq, inverse = np.unique(keys, return_inverse=True)
    return uniq, np.bincount(inverse, weights=weights)


def _lookup(keys: np.ndarray, values: np.ndarray, query: np.ndarray) -> np.ndarray:
    if len(keys) == 0:
        return np.zeros(len(query), np.float32)
    pos = np.clip(np.searchsorted(keys, query), 0, len(keys) - 1)
    return np.where(keys[pos] == query, values[pos], 0.0)


@dataclass(frozen=True)
class ShopperState:
    """Everything known about shoppers from an interaction log: taste vectors and profiles."""

    history: np.ndarray  # float32 (n_users, d), unit rows or zeros
    has_history: np.ndarray  # bool (n_users,)
    profiles: ShopperProfiles

    @classmethod
    def from_log(
        cls,
        log: pd.DataFrame,
        item_embeddings: np.ndarray,
        table: ItemFeatureTable,
        n_users: int,
    ) -> ShopperState:
        users = log["user_idx"].to_numpy()
        items = log["item_idx"].to_numpy()
        labels = log["label"].to_numpy()
        history, has = history_vectors(users, items, labels, item_embeddings, n_users)
        profiles = ShopperProfiles.from_interactions(users, items, labels, table, n_users)
        return cls(history, has, profiles)


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
