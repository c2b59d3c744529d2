"""The served view of the catalog and shoppers: id maps, display fields, filter resolution."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from recsys import layout
from recsys.artifacts import Artifact
from recsys.types import Filters, ItemFilter


class UnknownIdError(KeyError):
    """An item or shopper id the catalog does not have."""

    def __init__(self, kind: str, value: str):
        super().__init__(value)
        self.kind = kind
        self.value = value

    def __str__(self) -> str:
        return f"unknown {self.kind} id {self.value!r}"


class UnknownFilterError(ValueError):
    """A filter names a category or brand that no item has."""


@dataclass
class Catalog:
    """Items and shoppers as the API sees them."""

    item_ids: np.ndarray  # object (n,)
    titles: np.ndarray  # object (n,)
    prices: np.ndarray  # float32 (n,)
    leaf_idx: np.ndarray  # int32 (n,)
    brand_idx: np.ndarray  # int32 (n,)
    item_index: dict[str, int]
    user_index: dict[str, int]
    category_leaves: dict[str, np.ndarray]  # lower-case name at any level -> leaf indexes
    brand_index: dict[str, int]  # lower-case brand -> brand_idx

    @classmethod
    def from_frames(cls, items: pd.DataFrame, shoppers: pd.DataFrame) -> Catalog:
        categories: dict[str, set[int]] = {}
        leaves = items[["category_l1", "category_l2", "category_l3", "leaf_idx"]].drop_duplicates()
        for row in leaves.itertuples(index=False):
            for name in row[:3]:
                categories.setdefault(str(name).lower(), set()).add(int(row[3]))
        brands = items[["brand", "brand_idx"]].drop_duplicates()
        return cls(
            item_ids=items["item_id"].to_numpy(object),
            titles=items["title"].to_numpy(object),
            prices=items["price"].to_numpy(np.float32),
            leaf_idx=items["leaf_idx"].to_numpy(np.int32),
            brand_idx=items["brand_idx"].to_numpy(np.int32),
            item_index={v: i for i, v in enumerate(items["item_id"].tolist())},
            user_index={v: i for i, v in enumerate(shoppers["user_id"].tolist())},
            category_leaves={k: np.array(sorted(v), np.int32) for k, v in categories.items()},
            brand_index={str(b).lower(): int(i) for b, i in brands.itertuples(index=False)},
        )

    @classmethod
    def from_artifact(cls, artifact: Artifact) -> Catalog:
        items = pd.read_parquet(
            artifact.path(layout.ITEMS),
            columns=[
                "item_id",
                "title",
                "price",
                "category_l1",
                "category_l2",
                "category_l3",
                "leaf_idx",
                "brand",
                "brand_idx",
            ],
        )
        shoppers = pd.read_parquet(artifact.path(layout.SHOPPERS), columns=["user_id"])
        return cls.from_frames(items, shoppers)

    def __len__(self) -> int:
        return len(self.item_ids)

    @property
    def n_users(self) -> int:
        return len(self.user_index)

    def item(self, item_id: str) -> int:
        idx = self.item_index.get(item_id)
        if idx is None:
            raise UnknownIdError("item", item_id)
        return idx

    def user(self, user_id: str) -> int:
        idx = self.user_index.get(user_id)
        if idx is None:
            raise UnknownIdError("user", user_id)
        return idx

    def resolve_filter(self, filters: Filters | None) -> ItemFilter | None:
        if filters is None or filters.is_empty():
            return None
        out = ItemFilter(price_min=filters.price_min, price_max=filters.price_max)
        if filters.category is not None:
            leaves = self.category_leaves.get(filters.category.strip().lower())
            if leaves is None:
                raise UnknownFilterError(f"no category named {filters.category!r}")
            out.leaves = leaves
        if filters.brand is not None:
            brand = self.brand_index.get(filters.brand.strip().lower())
            if brand is None:
                raise UnknownFilterError(f"no brand named {filters.brand!r}")
            out.brands = np.array([brand], np.int32)
        return out
