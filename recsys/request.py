"""A request between the HTTP front and the stages: prepared before, answered after.

``prepare`` resolves ids and filters and decides the route; ``ranked_items`` turns a ranked
(or retrieval-ordered) candidate list into the response's items. Both are pure and light (numpy,
the catalog, the routing policy; no model stack), so the Serve ingress imports them without
torch, transformers or faiss; :class:`recsys.pipeline.Pipeline` runs the same steps around
in-process stage objects.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import numpy as np

from recsys.catalog import Catalog
from recsys.routing import RouteDecision, RoutingPolicy
from recsys.types import (
    Candidates,
    Filters,
    Item,
    ItemFilter,
    RankQuery,
    RankRequest,
    RetrievalRequest,
    Route,
)


@dataclass
class PreparedRequest:
    """A validated request with ids resolved, ready for the stages."""

    request_id: str
    route: Route
    decision: RouteDecision
    k: int
    query: str | None = None
    user_idx: int | None = None
    seed_item: int | None = None
    item_filter: ItemFilter | None = None

    def retrieval(self, n: int, query_vec: np.ndarray | None = None) -> RetrievalRequest:
        return RetrievalRequest(
            n=max(n, self.k),
            query_vec=query_vec,
            user_idx=self.user_idx if self.decision.personalised else None,
            seed_item=self.seed_item,
            item_filter=self.item_filter,
            query=self.query,
        )

    def rank_query(self) -> RankQuery:
        return RankQuery(
            self.user_idx if self.decision.personalised else None,
            query=self.query,
            seed_item=self.seed_item,
        )

    def rank(self, candidates: Candidates) -> RankRequest:
        return RankRequest.of(self.rank_query(), candidates)


def new_request_id() -> str:
    return uuid.uuid4().hex[:16]


def prepare(
    route: Route,
    catalog: Catalog,
    policy: RoutingPolicy,
    k: int,
    *,
    query: str | None = None,
    user_id: str | None = None,
    item_id: str | None = None,
    filters: Filters | None = None,
    request_id: str | None = None,
) -> PreparedRequest:
    """Resolve ids and filters and decide the route.

    Raises ``UnknownIdError`` for an unknown shopper or item and ``UnknownFilterError`` for a
    filter value no item has.
    """
    user_idx = catalog.user(user_id) if user_id is not None else None
    seed = catalog.item(item_id) if item_id is not None else None
    return PreparedRequest(
        request_id=request_id or new_request_id(),
        route=route,
        decision=policy.decide(route, user_id, user_known=user_idx is not None),
        k=k,
        query=query,
        user_idx=user_idx,
        seed_item=seed,
        item_filter=catalog.resolve_filter(filters),
    )


def ranked_items(
    catalog: Catalog, candidates: Candidates, scores: np.ndarray | None, k: int
) -> list[Item]:
    """Top-k by ranker score; in retrieval order with retrieval scores when ``scores`` is None."""
    if scores is None:
        order = np.arange(min(k, len(candidates)))
        values = candidates.score
    else:
        order = np.argsort(-scores, kind="stable")[:k]
        values = scores
    return [
        Item(
            item_id=str(catalog.item_ids[i]),
            title=str(catalog.titles[i]),
            price=round(float(catalog.prices[i]), 2),
            score=round(float(values[j]), 6),
        )
        for j, i in zip(order, candidates.item_idx[order], strict=True)
    ]
