"""The HTTP API models are strict where JSON types matter: ``k`` and prices."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from recsys.config import AppConfig, IngressConfig
from recsys.types import RecommendRequest, SearchRequest


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"query": "a", "k": True}, "k"),
        ({"query": "a", "k": "5"}, "k"),
        ({"query": "a", "k": 5.0}, "k"),
        ({"query": "a", "filters": {"price_min": True}}, "filters.price_min"),
        ({"query": "a", "filters": {"price_max": "9.99"}}, "filters.price_max"),
        ({"query": "a", "user_id": 7}, "user_id"),
    ],
)
def test_mistyped_fields_are_refused_naming_the_field(body: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationError) as info:
        SearchRequest.model_validate(body)
    assert [".".join(map(str, e["loc"])) for e in info.value.errors()] == [field]


def test_well_typed_bodies_are_accepted() -> None:
    body = SearchRequest.model_validate(
        {"query": "boots", "k": 5, "filters": {"price_min": 10, "price_max": 99.5}}
    )
    assert body.k == 5 and body.filters is not None and body.filters.price_min == 10.0
    assert RecommendRequest.model_validate({"user_id": "U1", "k": 3}).k == 3
    with pytest.raises(ValidationError):
        RecommendRequest.model_validate({"user_id": "U1", "k": False})


def test_default_k_must_be_within_max_k() -> None:
    assert AppConfig(default_k=100).ingress.max_k == 100
    with pytest.raises(ValidationError, match=r"default_k \(101\) must be <= ingress.max_k"):
        AppConfig(default_k=101)
    assert AppConfig(default_k=500, ingress=IngressConfig(max_k=500)).default_k == 500
