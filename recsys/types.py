"""Request, response and stage-to-stage types.

The HTTP API models (``SearchRequest`` ... ``RankedResponse``) are pydantic models that FastAPI
validates and documents; the stage types (``RetrievalRequest``, ``Candidates``, ``RankRequest``)
are small dataclasses of numpy arrays, compact to pass between Serve replicas.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

MAX_K = 1000
"""Schema ceiling of ``k``; the served limit is ``ingress.max_k`` (default 100)."""
MAX_QUERY_CHARS = 1000

StrictK = Annotated[int, Field(strict=True, ge=1, le=MAX_K)]
"""``k`` in a JSON body: an integer, never ``true`` or ``"5"``."""
StrictPrice = Annotated[float, Field(strict=True, ge=0)]
"""A price in a JSON body: a number (integers too), never ``true`` or ``"9.99"``."""

Route = Literal["search", "recommend", "similar"]


class ApiModel(BaseModel):
    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)


class Filters(ApiModel):
    """Restrict results to a category, a brand and/or a price range."""

    category: str | None = Field(None, min_length=1, max_length=100)
    """Category name at any level (department, category or leaf), case-insensitive."""
    brand: str | None = Field(None, min_length=1, max_length=100)
    """Brand name, case-insensitive."""
    price_min: StrictPrice | None = None
    price_max: StrictPrice | None = None

    @model_validator(mode="after")
    def _price_order(self) -> Filters:
        if (
            self.price_min is not None
            and self.price_max is not None
            and self.price_min > self.price_max
        ):
            raise ValueError("filters.price_min must be <= filters.price_max")
        return self

    def is_empty(self) -> bool:
        return all(v is None for v in (self.category, self.brand, self.price_min, self.price_max))


class SearchRequest(ApiModel):
    """Free-text product search, personalised when a known shopper is named."""

    query: str = Field(min_length=1, max_length=MAX_QUERY_CHARS)
    """The shopper's query text (1..1000 characters, not only whitespace)."""
    user_id: str | None = Field(None, min_length=1, max_length=64)
    """Known shopper id for personalisation; omit for an anonymous search."""
    k: StrictK | None = None
    """Number of items to return (1..``ingress.max_k``, default 100)."""
    filters: Filters | None = None

    @field_validator("query")
    @classmethod
    def _not_blank(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("query must not be empty or only whitespace")
        return v


class RecommendRequest(ApiModel):
    """Personal recommendations from a shopper's history, no query."""

    user_id: str = Field(min_length=1, max_length=64)
    k: StrictK | None = None
    """Number of items to return (1..``ingress.max_k``)."""


class Item(ApiModel):
    item_id: str
    title: str
    price: float
    score: float
    """Ranker score (or retrieval similarity when ``degraded``)."""


class RankedResponse(ApiModel):
    request_id: str
    route: Route
    variant: str
    degraded: bool
    """True when the ranker was skipped (late or overloaded): items are in retrieval order."""
    degraded_reason: str | None = None
    items: list[Item]
    timings_ms: dict[str, float]
    """Per-stage wall time in milliseconds (encode, retrieve, rank, total...)."""
    artifact_version: str


class ErrorResponse(ApiModel):
    error: str
    """Machine-readable error code, e.g. ``invalid_request``, ``unknown_user``, ``overloaded``."""
    detail: str | list[dict[str, object]]
    """What was wrong, in words (or one entry per invalid field)."""
    request_id: str


# ---- stage to stage --------------------------------------------------------------------------


@dataclass
class ItemFilter:
    """Resolved filters: sets of leaf / brand indexes and a price range (None: no limit)."""

    leaves: np.ndarray | None = None
    brands: np.ndarray | None = None
    price_min: float | None = None
    price_max: float | None = None

    def is_empty(self) -> bool:
        return (
            self.leaves is None
            and self.brands is None
            and self.price_min is None
            and self.price_max is None
        )


@dataclass
class RetrievalRequest:
    """What to retrieve candidates for. At least one of query vector, user or seed item."""

    n: int
    query_vec: np.ndarray | None = None  # (d,) float32, unit length
    user_idx: int | None = None  # known shopper: personalise with their history vector
    seed_item: int | None = None  # similar-items: the item's own embedding is the query
    item_filter: ItemFilter | None = None
    query: str | None = None  # the search text (lexical side of hybrid retrieval)


@dataclass
class Candidates:
    """Retrieved items with the similarities the ranker uses as features."""

    item_idx: np.ndarray  # int64 (m,)
    score: np.ndarray  # float32 (m,) retrieval score (descending)
    query_cos: np.ndarray  # float32 (m,) cosine to the query vector (0 without a query)
    history_cos: np.ndarray  # float32 (m,) cosine to the shopper's history (0 without one)
    has_query: bool = False
    has_history: bool = False
    source: str = "ann"  # dense | lexical | hybrid (+ "+filtered"/"exact") | popular
    lexical: np.ndarray | None = None  # float32 (m,) BM25 / the query's ceiling, in [0, 1]
    query_words: tuple[str, ...] = ()  # the query's analysed words, misspellings corrected

    def lexical_scores(self) -> np.ndarray:
        """Normalised BM25 of each candidate (zeros without a lexical side)."""
        if self.lexical is None:
            return np.zeros(len(self.item_idx), np.float32)
        return self.lexical

    def __len__(self) -> int:
        return len(self.item_idx)


@dataclass(frozen=True)
class RankQuery:
    """What the ranker needs besides the candidates (sent ahead of them in the Serve DAG)."""

    user_idx: int | None = None  # None: anonymous
    query: str | None = None  # the search text (term-coverage feature)
    seed_item: int | None = None  # similar-items: the seed's title plays the query


@dataclass
class RankRequest:
    candidates: Candidates
    user_idx: int | None = None  # None: anonymous
    query: str | None = None  # the search text (term-coverage feature)
    seed_item: int | None = None  # similar-items: the seed's title plays the query

    @classmethod
    def of(cls, q: RankQuery, candidates: Candidates) -> RankRequest:
        return cls(candidates, q.user_idx, q.query, q.seed_item)


@dataclass
class StageTimings:
    values: dict[str, float] = field(default_factory=dict)

    def add(self, name: str, ms: float) -> None:
        self.values[name] = round(self.values.get(name, 0.0) + ms, 3)
