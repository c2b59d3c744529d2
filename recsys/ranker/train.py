"""Training the ranker on behaviour (the interaction log) and relevance (labelled queries).

Behaviour: the train split is cut in two by time: impressions of the last
``train_window_days`` become training rows; clicks before that form the shoppers' history
vectors. Targets are the funnel step scaled to [0, 1] (impression 0, click 1/3, cart 2/3,
purchase 1) with a binary cross-entropy loss, so the model learns to put purchases above
clicks above impressions.

Relevance: the labelled training queries as lists of judged items plus hard negatives from
the retriever (``recsys.ranker.listwise``), shown as an anonymous shopper, with a listwise
softmax loss. Both losses train one model, one batch of each per step (``relevance_weight``
scales the second); the epoch whose validation queries rank best (nDCG@10 over their judged
lists, plus the behaviour validation when only sessions exist) is kept. Either half may be
missing (no labels, no log); the report says which were used.

Search sessions whose query is a held-out test query are never trained on.
"""

from __future__ import annotations

import copy
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
from recsys.index.lexical import LexicalIndex, analyze
from recsys.matching import MATCH_FEATURES, QueryMatcher
from recsys.ranker.listwise import QueryLists, list_ndcg, listwise_loss
from recsys.ranker.model import RankerModel, RankerSpec


@dataclass
class TrainReport:
    rows: int
    history_rows: int
    epochs: int
    seconds: float
    loss_per_epoch: list[float] = field(default_factory=list)
    relevance_lists: int = 0
    relevance_rows: int = 0
    validation_ndcg_per_epoch: list[float] = field(default_factory=list)
    best_epoch: int = 0
    trained_on: list[str] = field(default_factory=list)
    """"behaviour" and/or "relevance": what the model learned from."""


@dataclass
class TrainedRanker:
    model: RankerModel
    spec: RankerSpec
    stats: FeatureStats
    report: TrainReport


@dataclass
class SearchContext:
    """Turns labelled query ids into the ranker's query-item match features."""

    texts: Sequence[str]
    matcher: QueryMatcher
    lexical: LexicalIndex | None = None

    def words(self, query_id: int) -> list[str]:
        text = self.texts[query_id]
        return self.lexical.analyze_query(text) if self.lexical is not None else analyze(text)

    def match(self, query_id: int, items: np.ndarray) -> np.ndarray:
        words = self.words(query_id)
        lexical = None
        if self.lexical is not None:
            scores = self.lexical.scores(words)
            lexical = scores[items] / max(self.lexical.ceiling(words), 1e-6)
        return self.matcher.features(words, items, lexical)


def session_features(
    frame: pd.DataFrame,
    table: ItemFeatureTable,
    item_embeddings: np.ndarray,
    query_embeddings: np.ndarray,
    search: SearchContext,
    shoppers: ShopperState,
    anonymous_user: int,
    anonymous: np.ndarray | None = None,
) -> FeatureBatch:
    """Model inputs for impressions ``frame`` (columns user_idx, item_idx, query_id); query
    ids index ``query_embeddings`` and ``search.texts``.

    ``anonymous`` (bool per row) hides the shopper: the anonymous user row, no history.
    """
    items = frame["item_idx"].to_numpy(np.int64)
    users = frame["user_idx"].to_numpy(np.int64)
    qid = frame["query_id"].to_numpy(np.int64)
    has_query = qid >= 0
    query_cos = rowwise_cos(query_embeddings, np.where(has_query, qid, 0), item_embeddings, items)
    known = users < len(shoppers.history)  # a catalog without a log has no shoppers
    if anonymous is not None:
        known &= ~anonymous
    hist_cos = np.zeros(len(items), np.float32)
    if known.any():
        hist_cos[known] = rowwise_cos(shoppers.history, users[known], item_embeddings, items[known])
    match = np.zeros((len(items), len(MATCH_FEATURES)), np.float32)
    for qid_value, rows in pd.Series(np.arange(len(qid))[has_query]).groupby(qid[has_query]):
        picked = rows.to_numpy()
        match[picked] = search.match(int(qid_value), items[picked])
    has_hist = np.zeros(len(items), bool)
    has_hist[known] = shoppers.has_history[users[known]]
    if anonymous is not None:
        users = np.where(anonymous, anonymous_user, users)
    return assemble(
        table,
        shoppers.profiles,
        users,
        items,
        query_cos,
        hist_cos,
        has_query.astype(np.float32),
        has_hist.astype(np.float32),
        match,
    )


def list_features(
    lists: QueryLists,
    table: ItemFeatureTable,
    item_embeddings: np.ndarray,
    query_embeddings: np.ndarray,
    search: SearchContext,
    shoppers: ShopperState,
    anonymous_user: int,
) -> FeatureBatch:
    """Model inputs for relevance lists: every row an anonymous search for its query."""
    frame = pd.DataFrame(
        {
            "item_idx": lists.item_idx,
            "user_idx": np.zeros(len(lists), np.int64),
            "query_id": lists.query_id,
        }
    )
    return session_features(
        frame,
        table,
        item_embeddings,
        query_embeddings,
        search,
        shoppers,
        anonymous_user,
        anonymous=np.ones(len(lists), bool),
    )


def train_ranker(
    items: pd.DataFrame,
    train: pd.DataFrame,
    item_embeddings: np.ndarray,
    query_embeddings: np.ndarray,
    search: SearchContext,
    n_users: int,
    config: RankerConfig,
    relevance: QueryLists | None = None,
    validation: QueryLists | None = None,
    progress: bool = True,
) -> TrainedRanker:
    """Fit a ranker on the train split of the interaction log and/or relevance lists."""
    from tqdm.auto import tqdm

    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    relevance = relevance if relevance is not None and len(relevance) else None
    past, window = _behaviour_window(train, config)
    if window is None and relevance is None:
        raise ValueError("nothing to train the ranker on: no interactions and no labelled queries")
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
    features = (item_embeddings, query_embeddings, search, shoppers, spec.anonymous_user)
    sessions: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None
    if window is not None:
        uniq, inverse = np.unique(window["session_id"].to_numpy(), return_inverse=True)
        share = config.anonymous_share
        if share is None:
            share = 0.0 if relevance is not None else 0.1
        anonymous = (rng.random(len(uniq)) < share)[inverse]
        batch = session_features(
            window, table, *features[:2], search, shoppers, spec.anonymous_user, anonymous
        )
        target = torch.from_numpy(window["label"].to_numpy(np.float32) / 3.0)
        sessions = (*batch.tensors(), target)
    lists = None
    if relevance is not None:
        lists = (relevance, list_features(relevance, table, *features))
    held_out = None
    if validation is not None and len(validation):
        held_out = (validation, list_features(validation, table, *features))

    model = RankerModel(spec)
    optim = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    bce = torch.nn.BCEWithLogitsLoss()
    report = TrainReport(
        rows=0 if window is None else len(window),
        history_rows=len(past),
        epochs=config.epochs,
        seconds=0,
        relevance_lists=0 if relevance is None else relevance.n_lists,
        relevance_rows=0 if relevance is None else len(relevance),
        trained_on=[name for name, part in (("behaviour", sessions), ("relevance", lists)) if part],
    )
    n_rows = 0 if sessions is None else len(sessions[2])
    steps = max(
        (n_rows + config.batch_size - 1) // config.batch_size,
        0
        if relevance is None
        else (relevance.n_lists + config.lists_per_batch - 1) // config.lists_per_batch,
    )
    best: tuple[float, int, dict[str, torch.Tensor]] | None = None
    started = time.perf_counter()
    with tqdm(total=steps * config.epochs, desc="training ranker", disable=not progress) as bar:
        for epoch in range(config.epochs):
            order = rng.permutation(n_rows) if n_rows else np.zeros(0, np.int64)
            list_order = rng.permutation(relevance.n_lists) if relevance is not None else None
            total = 0.0
            model.train()
            for step in range(steps):
                loss = torch.zeros(())
                if sessions is not None:
                    a = (step * config.batch_size) % n_rows
                    idx = torch.from_numpy(order[a : a + config.batch_size])
                    sparse, dense, target = sessions
                    loss = loss + bce(model(sparse[idx], dense[idx]), target[idx])
                if lists is not None and list_order is not None:
                    pick = list_order[(step * config.lists_per_batch) % len(list_order) :][
                        : config.lists_per_batch
                    ]
                    loss = loss + config.relevance_weight * _list_step(model, *lists, pick)
                optim.zero_grad(set_to_none=True)
                loss.backward()
                optim.step()
                total += float(loss.detach())
                bar.update(1)
            report.loss_per_epoch.append(total / max(steps, 1))
            model.eval()
            if held_out is not None:
                score = list_ndcg(_scores(model, held_out[1]), held_out[0])
                report.validation_ndcg_per_epoch.append(round(score, 4))
                if best is None or score > best[0]:
                    best = (score, epoch, copy.deepcopy(model.state_dict()))
            bar.set_postfix(epoch=epoch + 1, loss=f"{report.loss_per_epoch[-1]:.4f}")
    if best is not None:
        model.load_state_dict(best[2])
        report.best_epoch = best[1] + 1
    else:
        report.best_epoch = config.epochs
    model.eval()
    report.seconds = time.perf_counter() - started
    return TrainedRanker(model=model, spec=spec, stats=stats, report=report)


def _behaviour_window(
    train: pd.DataFrame, config: RankerConfig
) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    """(history rows, training rows) of the log; (all, None) when it cannot train."""
    if len(train) == 0:
        return train, None
    cutoff = int(train["day"].max()) + 1 - config.train_window_days
    past, window = train[train["day"] < cutoff], train[train["day"] >= cutoff]
    if len(window) == 0 or len(past) == 0 or window["label"].nunique() < 2:
        return train, None
    if config.max_train_rows is not None and len(window) > config.max_train_rows:
        window = window.iloc[-config.max_train_rows :]
    return past, window


def _list_step(
    model: RankerModel, lists: QueryLists, batch: FeatureBatch, pick: np.ndarray
) -> torch.Tensor:
    rows = np.concatenate([np.arange(lists.offsets[j], lists.offsets[j + 1]) for j in pick])
    lengths = torch.from_numpy(np.diff(lists.offsets)[pick])
    idx = torch.from_numpy(rows)
    sparse, dense = batch.tensors()
    logits = model(sparse[idx], dense[idx])
    return listwise_loss(logits, torch.from_numpy(lists.gain[rows]), lengths)


def _scores(model: RankerModel, batch: FeatureBatch) -> np.ndarray:
    with torch.no_grad():
        sparse, dense = batch.tensors()
        return np.concatenate(
            [
                model(sparse[s : s + 65536], dense[s : s + 65536]).numpy()
                for s in range(0, len(batch), 65536)
            ]
        )
