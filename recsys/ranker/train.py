"""Training the ranker on the interaction log.

The train split is cut in two by time: impressions of the last ``train_window_days`` become
training rows; clicks before that form the shoppers' history vectors. Targets are the funnel
step scaled to [0, 1] (impression 0, click 1/3, cart 2/3, purchase 1) with a binary
cross-entropy loss, so the model learns to put purchases above clicks above impressions.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch

from recsys.config import RankerConfig
from recsys.features import (
    FeatureBatch,
    FeatureStats,
    ItemFeatureTable,
    ShopperState,
    assemble,
    rowwise_cos,
)
from recsys.ranker.model import RankerModel, RankerSpec


@dataclass
class TrainReport:
    rows: int
    history_rows: int
    epochs: int
    seconds: float
    loss_per_epoch: list[float] = field(default_factory=list)


@dataclass
class TrainedRanker:
    model: RankerModel
    spec: RankerSpec
    stats: FeatureStats
    report: TrainReport


def session_features(
    frame: pd.DataFrame,
    table: ItemFeatureTable,
    item_embeddings: np.ndarray,
    query_embeddings: np.ndarray,
    query_texts: Sequence[str],
    shoppers: ShopperState,
    anonymous_user: int,
    anonymous: np.ndarray | None = None,
) -> FeatureBatch:
    """Model inputs for impressions ``frame`` (columns user_idx, item_idx, query_id); query
    ids index ``query_embeddings`` and ``query_texts``.

    ``anonymous`` (bool per row) hides the shopper: the anonymous user row, no history.
    """
    items = frame["item_idx"].to_numpy(np.int64)
    users = frame["user_idx"].to_numpy(np.int64)
    qid = frame["query_id"].to_numpy(np.int64)
    has_query = qid >= 0
    query_cos = rowwise_cos(query_embeddings, np.where(has_query, qid, 0), item_embeddings, items)
    hist_cos = rowwise_cos(shoppers.history, users, item_embeddings, items)
    coverage = np.zeros(len(items), np.float32)
    for qid_value, rows in pd.Series(np.arange(len(qid))[has_query]).groupby(qid[has_query]):
        picked = rows.to_numpy()
        coverage[picked] = table.titles.coverage(query_texts[int(qid_value)], items[picked])
    has_hist = shoppers.has_history[users].copy()
    if anonymous is not None:
        users = np.where(anonymous, anonymous_user, users)
        has_hist &= ~anonymous
    return assemble(
        table,
        shoppers.profiles,
        users,
        items,
        query_cos,
        hist_cos,
        has_query.astype(np.float32),
        has_hist.astype(np.float32),
        coverage,
    )


def train_ranker(
    items: pd.DataFrame,
    train: pd.DataFrame,
    item_embeddings: np.ndarray,
    query_embeddings: np.ndarray,
    query_texts: Sequence[str],
    n_users: int,
    config: RankerConfig,
    progress: bool = True,
) -> TrainedRanker:
    """Fit a ranker on the train split of the interaction log."""
    from tqdm.auto import tqdm

    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    cutoff = int(train["day"].max()) + 1 - config.train_window_days
    past, window = train[train["day"] < cutoff], train[train["day"] >= cutoff]
    if len(window) == 0 or len(past) == 0:
        raise ValueError(
            f"train_window_days={config.train_window_days} leaves no history or no training "
            f"rows in a train split of days {int(train['day'].min())}..{int(train['day'].max())}"
        )
    if config.max_train_rows is not None and len(window) > config.max_train_rows:
        window = window.iloc[-config.max_train_rows :]
    stats = FeatureStats.fit(items)
    table = ItemFeatureTable.from_items(items, stats)
    shoppers = ShopperState.from_log(past, item_embeddings, table, n_users)
    spec = RankerSpec(
        n_users=n_users + 1,
        n_items=len(items),
        n_leaves=int(items["leaf_idx"].max()) + 1,
        n_brands=int(items["brand_idx"].max()) + 1,
        emb_dim=config.emb_dim,
        cross_layers=config.cross_layers,
        hidden=config.hidden,
        hidden2=config.hidden2,
    )
    sessions = window["session_id"].to_numpy()
    uniq, inverse = np.unique(sessions, return_inverse=True)
    anonymous = (rng.random(len(uniq)) < config.anonymous_share)[inverse]
    batch = session_features(
        window,
        table,
        item_embeddings,
        query_embeddings,
        query_texts,
        shoppers,
        spec.anonymous_user,
        anonymous,
    )
    target = torch.from_numpy(window["label"].to_numpy(np.float32) / 3.0)
    sparse, dense = batch.tensors()

    model = RankerModel(spec)
    optim = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    loss_fn = torch.nn.BCEWithLogitsLoss()
    report = TrainReport(rows=len(window), history_rows=len(past), epochs=config.epochs, seconds=0)
    started = time.perf_counter()
    n = len(target)
    steps = (n + config.batch_size - 1) // config.batch_size
    with tqdm(total=steps * config.epochs, desc="training ranker", disable=not progress) as bar:
        for epoch in range(config.epochs):
            order = torch.from_numpy(rng.permutation(n))
            total = 0.0
            model.train()
            for s in range(0, n, config.batch_size):
                idx = order[s : s + config.batch_size]
                loss = loss_fn(model(sparse[idx], dense[idx]), target[idx])
                optim.zero_grad(set_to_none=True)
                loss.backward()
                optim.step()
                total += float(loss.detach()) * len(idx)
                bar.update(1)
            report.loss_per_epoch.append(total / n)
            bar.set_postfix(epoch=epoch + 1, loss=f"{total / n:.4f}")
    model.eval()
    report.seconds = time.perf_counter() - started
    return TrainedRanker(model=model, spec=spec, stats=stats, report=report)
