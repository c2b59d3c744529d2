"""The one HTTP API (``recsys.api``) over the naive baseline's backend: the same routes,
models and error mapping the Serve ingress serves (``tests/integration/test_api.py`` checks
them there through Serve), here in-process with FastAPI's test client and a real pipeline."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from recsys.bench.naive_server import create_app
from recsys.config import AppConfig
from recsys.pipeline import Pipeline
from tests.integration.test_api import BAD_INPUTS


@pytest.fixture(scope="module")
def client(tiny_artifact: Path) -> TestClient:
    pipeline = Pipeline.load(AppConfig(artifacts=str(tiny_artifact)))
    return TestClient(create_app(pipeline))


@pytest.mark.parametrize(
    ("name", "method", "path", "kwargs", "status", "error"),
    BAD_INPUTS,
    ids=[b[0] for b in BAD_INPUTS],
)
def test_bad_input_gets_the_ingress_4xx_json_error(
    client: TestClient,
    name: str,
    method: str,
    path: str,
    kwargs: dict[str, Any],
    status: int,
    error: str,
) -> None:
    r = client.request(method.upper(), path, **kwargs)
    assert r.status_code == status, r.text
    body = r.json()
    assert body["error"] == error and body["detail"] and body["request_id"]


def test_search_recommend_similar_answer_ranked_items(client: TestClient) -> None:
    r = client.post("/v1/search", json={"query": "desk lamp", "k": 4})
    assert r.status_code == 200, r.text
    body = r.json()
    assert len(body["items"]) == 4 and body["degraded"] is False
    assert {"encode", "retrieve", "rank", "compute", "queue", "total"} <= set(body["timings_ms"])
    r = client.post("/v1/recommend", json={"user_id": "U0000001", "k": 3})
    assert r.status_code == 200 and len(r.json()["items"]) == 3
    r = client.get("/v1/items/I0000001/similar", params={"k": 2})
    assert r.status_code == 200 and len(r.json()["items"]) == 2


def test_client_request_id_is_kept_and_health_answers(client: TestClient) -> None:
    r = client.post("/v1/search", json={"query": "lamp"}, headers={"X-Request-ID": "abc-123"})
    assert r.json()["request_id"] == "abc-123"
    assert client.get("/healthz").json()["status"] == "ok"
    assert client.get("/readyz").status_code == 200
    assert client.get("/v1/version").json()["variants"] == ["control"]
