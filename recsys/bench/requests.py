"""Schedule rows -> library requests, for the systems that do not speak HTTP to the schedule.

The traffic schedule (``recsys.traffic.schedule``) holds each request as method, path and JSON
body. The in-process batcher and the naive server turn them into the same ``prepare(...)``
call the Serve ingress makes, so every system does the same work per request.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from urllib.parse import parse_qs, unquote, urlsplit

from recsys.catalog import Catalog
from recsys.pipeline import PreparedRequest, prepare
from recsys.routing import RoutingPolicy
from recsys.types import Filters, Route

SIMILAR_PREFIX = "/v1/items/"
SIMILAR_SUFFIX = "/similar"


@dataclass(frozen=True)
class BenchRequest:
    """One request's content, independent of transport."""

    route: Route
    k: int | None = None
    query: str | None = None
    user_id: str | None = None
    item_id: str | None = None
    filters: Filters | None = None

    def prepare(
        self, catalog: Catalog, policy: RoutingPolicy, default_k: int, request_id: str
    ) -> PreparedRequest:
        """The ingress's ``prepare`` (raises ``UnknownIdError`` / ``UnknownFilterError``)."""
        return prepare(
            self.route,
            catalog,
            policy,
            self.k or default_k,
            query=self.query,
            user_id=self.user_id,
            item_id=self.item_id,
            filters=self.filters,
            request_id=request_id,
        )


def from_schedule_row(route: str, path: str, body: str | None) -> BenchRequest:
    """Parse one schedule row (``route``, ``path``, ``body``) into a :class:`BenchRequest`."""
    if route == "similar":
        parts = urlsplit(path)
        if not (parts.path.startswith(SIMILAR_PREFIX) and parts.path.endswith(SIMILAR_SUFFIX)):
            raise ValueError(f"not a similar-items path: {path!r}")
        item = unquote(parts.path[len(SIMILAR_PREFIX) : -len(SIMILAR_SUFFIX)])
        k = parse_qs(parts.query).get("k", [None])[0]
        return BenchRequest("similar", k=int(k) if k else None, item_id=item)
    data = json.loads(body) if body else {}
    if route == "search":
        filters = data.get("filters")
        return BenchRequest(
            "search",
            k=data.get("k"),
            query=str(data["query"]),
            user_id=data.get("user_id"),
            filters=Filters.model_validate(filters) if filters else None,
        )
    if route == "recommend":
        return BenchRequest("recommend", k=data.get("k"), user_id=str(data["user_id"]))
    raise ValueError(f"unknown route {route!r}")
