"""The ranker: a DCN-v2 style model over sparse ids and dense features.

    x0 = [e_user | e_item | e_leaf | e_brand | dense]
    x_{l+1} = x0 * (W_l x_l + b_l) + x_l                 (cross layers, replicated)
    h1 = relu(fc1(x_L))                                  (column-parallel when sharded)
    h2 = relu(fc2(h1))                                   (row-parallel: partial sums + all-reduce)
    logit = head(h2)

The forward pass is split into ``embed`` and ``interact`` so that the sharded execution in
``recsys.ranker.sharded`` can replace the lookup and the two big dense layers while reusing the
rest. Parameter names are the contract with the safetensors file and the sharding plan.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

from recsys.matching import MATCH_FEATURES

SPARSE_FEATURES = ("user", "item", "leaf", "brand")
DENSE_FEATURES = (
    "log_price_z",
    "rating_z",
    "log_popularity_z",
    "query_cos",
    "history_cos",
    "has_query",
    "has_history",
    "leaf_affinity",
    "brand_affinity",
    "price_gap",
    *MATCH_FEATURES,
)


@dataclass(frozen=True)
class RankerSpec:
    """Shape of a ranker model: table sizes and layer widths (saved beside the weights)."""

    n_users: int  # rows of the user table; the last row is the anonymous shopper
    n_items: int
    n_leaves: int
    n_brands: int
    emb_dim: int
    cross_layers: int
    hidden: int
    hidden2: int
    n_dense: int = len(DENSE_FEATURES)

    @property
    def anonymous_user(self) -> int:
        return self.n_users - 1

    @property
    def table_rows(self) -> dict[str, int]:
        return {
            "user": self.n_users,
            "item": self.n_items,
            "leaf": self.n_leaves,
            "brand": self.n_brands,
        }

    @property
    def input_dim(self) -> int:
        return len(SPARSE_FEATURES) * self.emb_dim + self.n_dense

    def to_dict(self) -> dict[str, int]:
        return asdict(self)


class CrossNetwork(nn.Module):
    """DCN-v2 full-rank cross layers."""

    def __init__(self, dim: int, layers: int):
        super().__init__()
        self.layers = nn.ModuleList(nn.Linear(dim, dim) for _ in range(layers))

    def forward(self, x0: torch.Tensor) -> torch.Tensor:
        x = x0
        for layer in self.layers:
            x = x0 * layer(x) + x
        return x


class RankerModel(nn.Module):
    """Single-device ranker; ``forward(sparse, dense) -> logits``."""

    def __init__(self, spec: RankerSpec):
        super().__init__()
        self.spec = spec
        tables = {name: nn.Embedding(rows, spec.emb_dim) for name, rows in spec.table_rows.items()}
        for table in tables.values():
            nn.init.normal_(table.weight, std=0.05)
        self.tables = nn.ModuleDict(tables)
        d = spec.input_dim
        self.cross = CrossNetwork(d, spec.cross_layers)
        self.fc1 = nn.Linear(d, spec.hidden)
        self.fc2 = nn.Linear(spec.hidden, spec.hidden2)
        self.head = nn.Linear(spec.hidden2, 1)

    def embed(self, sparse: torch.Tensor) -> torch.Tensor:
        """Look up the sparse ids (n, 4) -> (n, 4 * emb_dim)."""
        parts = [self.tables[name](sparse[:, i]) for i, name in enumerate(SPARSE_FEATURES)]
        return torch.cat(parts, dim=1)

    def interact(self, embedded: torch.Tensor, dense: torch.Tensor) -> torch.Tensor:
        x = self.cross(torch.cat([embedded, dense], dim=1))
        h = torch.relu(self.fc2(torch.relu(self.fc1(x))))
        return self.head(h).squeeze(-1)

    def forward(self, sparse: torch.Tensor, dense: torch.Tensor) -> torch.Tensor:
        return self.interact(self.embed(sparse), dense)
