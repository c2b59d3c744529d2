"""The schedule of a run: every request's send time, route and body, drawn in advance.

Contents follow the artifact's data with the long tails of real traffic: search queries by
their ``frequency`` column, shoppers by a Zipf law over a seeded permutation of their ids (a
few very active shoppers, many occasional ones), seed items of similar-items requests by the
catalog's ``popularity`` (or Zipf over ids). The same config and seed always give the same
schedule.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import numpy as np
import pandas as pd

from recsys import layout
from recsys.data.loaders import read_items, read_queries, read_shoppers
from recsys.traffic.config import SamplingConfig, TrafficConfig
from recsys.traffic.shapes import arrival_times

ROUTES = ("search", "recommend", "similar")
SCHEDULE_COLUMNS = ["id", "scheduled_s", "route", "method", "path", "body"]


def zipf_probabilities(n: int, exponent: float, rng: np.random.Generator) -> np.ndarray:
    """Zipf weights ``1 / rank**exponent`` over ``n`` ids, ranks assigned by a random
    permutation (so the popular head is not simply the first ids)."""
    if n <= 0:
        raise ValueError("zipf over an empty set")
    weights = 1.0 / np.arange(1, n + 1, dtype=np.float64) ** exponent
    probs = np.empty(n, dtype=np.float64)
    probs[rng.permutation(n)] = weights / weights.sum()
    return probs


def _normalised(values: np.ndarray, what: str) -> np.ndarray:
    values = np.asarray(values, dtype=np.float64)
    values = np.where(np.isfinite(values) & (values > 0), values, 0.0)
    total = values.sum()
    if total <= 0:
        raise ValueError(f"{what}: no positive weights")
    return values / total


@dataclass
class Workload:
    """What requests may contain, with a draw probability for each value."""

    queries: np.ndarray
    query_p: np.ndarray
    shoppers: np.ndarray
    shopper_p: np.ndarray
    items: np.ndarray
    item_p: np.ndarray

    @classmethod
    def from_frames(
        cls,
        queries: pd.DataFrame,
        shoppers: pd.DataFrame,
        items: pd.DataFrame,
        sampling: SamplingConfig,
        seed: int = 0,
    ) -> Workload:
        """From the artifact's tables: ``queries`` (``query``, ``frequency``), ``shoppers``
        (``user_id``) and ``items`` (``item_id``, and ``popularity`` for popularity sampling)."""
        rng = np.random.default_rng([seed, 0x5EED])
        if sampling.item_sampling == "popularity":
            item_p = _normalised(items["popularity"].to_numpy(), "items.popularity")
        else:
            item_p = zipf_probabilities(len(items), sampling.item_zipf, rng)
        return cls(
            queries=queries["query"].astype(str).to_numpy(),
            query_p=_normalised(queries["frequency"].to_numpy(), "queries.frequency"),
            shoppers=shoppers["user_id"].astype(str).to_numpy(),
            shopper_p=zipf_probabilities(len(shoppers), sampling.shopper_zipf, rng),
            items=items["item_id"].astype(str).to_numpy(),
            item_p=item_p,
        )

    @classmethod
    def from_artifact(
        cls, artifact_dir: str | Path, sampling: SamplingConfig, seed: int = 0
    ) -> Workload:
        """From a local artifact directory (its ``data/`` tables)."""
        data = Path(artifact_dir) / layout.DATA_DIR
        if not data.is_dir():
            raise FileNotFoundError(
                f"no artifact data at {data}; build one with `recsys build --out {artifact_dir}`"
            )
        return cls.from_frames(
            read_queries(data),
            read_shoppers(data),
            read_items(data, columns=["item_id", "popularity"]),
            sampling,
            seed,
        )


def build_schedule(config: TrafficConfig, workload: Workload) -> pd.DataFrame:
    """Every request of the run, sorted by send time (:data:`SCHEDULE_COLUMNS`)."""
    rng = np.random.default_rng([config.seed, 0xA77])
    times = arrival_times(config.shape, config.duration_s, rng, config.max_requests)
    n = len(times)
    probs = config.mix.probabilities()
    routes = rng.choice(np.array(ROUTES), size=n, p=[probs[r] for r in ROUTES])
    sampling = config.sampling
    k = sampling.k
    query_idx = rng.choice(len(workload.queries), size=n, p=workload.query_p)
    shopper_idx = rng.choice(len(workload.shoppers), size=n, p=workload.shopper_p)
    item_idx = rng.choice(len(workload.items), size=n, p=workload.item_p)
    personalised = rng.uniform(size=n) < sampling.personalised_search_share
    methods: list[str] = []
    paths: list[str] = []
    bodies: list[str | None] = []
    for i in range(n):
        route = routes[i]
        if route == "search":
            body: dict[str, object] = {"query": str(workload.queries[query_idx[i]]), "k": k}
            if personalised[i]:
                body["user_id"] = str(workload.shoppers[shopper_idx[i]])
            methods.append("POST")
            paths.append("/v1/search")
            bodies.append(json.dumps(body))
        elif route == "recommend":
            methods.append("POST")
            paths.append("/v1/recommend")
            bodies.append(json.dumps({"user_id": str(workload.shoppers[shopper_idx[i]]), "k": k}))
        else:
            item = quote(str(workload.items[item_idx[i]]), safe="")
            methods.append("GET")
            paths.append(f"/v1/items/{item}/similar?k={k}")
            bodies.append(None)
    return pd.DataFrame(
        {
            "id": np.arange(n, dtype=np.int64),
            "scheduled_s": times.astype(np.float64),
            "route": pd.array(routes, dtype="string"),
            "method": pd.array(methods, dtype="string"),
            "path": pd.array(paths, dtype="string"),
            "body": pd.array(bodies, dtype="string"),
        },
        columns=SCHEDULE_COLUMNS,
    )
