"""Every endpoint over real HTTP against the composed app on a real local Ray instance."""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections import Counter
from pathlib import Path

import httpx
import pandas as pd
import pytest

from recsys.config import RoutingConfig, VariantConfig
from recsys.routing import RoutingPolicy
from tests.integration.conftest import ServeApp, app_config

pytestmark = pytest.mark.slow

ROUTING = RoutingConfig(
    deadline_ms=20_000,
    variants=[
        VariantConfig(name="control", weight=0.6),
        VariantConfig(name="treatment", weight=0.4),
    ],
)


@pytest.fixture(scope="module")
def app(serve_instance: ServeApp, tiny_artifact: Path) -> ServeApp:
    serve_instance.deploy(app_config(tiny_artifact, routing=ROUTING))
    return serve_instance


@pytest.fixture(scope="module")
def items(tiny_artifact: Path) -> pd.DataFrame:
    return pd.read_parquet(tiny_artifact / "data" / "items.parquet").set_index("item_id")


def check_ranked(body: dict, route: str, k: int) -> None:
    assert body["route"] == route
    assert body["degraded"] is False and body["degraded_reason"] is None
    assert len(body["items"]) == k
    assert set(body["items"][0]) == {"item_id", "title", "price", "score"}
    scores = [i["score"] for i in body["items"]]
    assert scores == sorted(scores, reverse=True)
    assert len({i["item_id"] for i in body["items"]}) == k
    for stage in ("retrieve", "rank", "total"):
        assert body["timings_ms"][stage] >= 0
    assert body["artifact_version"].startswith("v")


def test_search_returns_ranked_items_with_request_id_header(app: ServeApp, items) -> None:
    query = items["title"].iloc[7]
    r = app.search(query=query, k=5)
    assert r.status_code == 200, r.text
    body = r.json()
    check_ranked(body, "search", 5)
    assert "encode" in body["timings_ms"]
    assert r.headers["x-request-id"] == body["request_id"]
    assert body["variant"] == "control"  # anonymous
    returned = [i["item_id"] for i in body["items"]]
    assert items.index[7] in returned  # searching an item's own title finds it
    for it in body["items"]:
        assert it["title"] == items.loc[it["item_id"], "title"]


def test_client_request_id_is_kept(app: ServeApp) -> None:
    r = app.client.post("/v1/search", json={"query": "sofa"}, headers={"X-Request-ID": "abc-123"})
    assert r.status_code == 200 and r.json()["request_id"] == "abc-123"


def test_default_k_and_personalised_search(app: ServeApp) -> None:
    r = app.search(query="wireless headphones", user_id="U0000003")
    assert r.status_code == 200
    body = r.json()
    check_ranked(body, "search", 10)
    assert body["variant"] == RoutingPolicy(ROUTING).variant_for("U0000003")


def test_recommend_and_similar(app: ServeApp, items) -> None:
    r = app.client.post("/v1/recommend", json={"user_id": "U0000010", "k": 7})
    assert r.status_code == 200, r.text
    check_ranked(r.json(), "recommend", 7)
    seed = items.index[3]
    r = app.client.get(f"/v1/items/{seed}/similar", params={"k": 4})
    assert r.status_code == 200, r.text
    body = r.json()
    check_ranked(body, "similar", 4)
    assert seed not in [i["item_id"] for i in body["items"]]


def test_filters_are_respected(app: ServeApp, items) -> None:
    leaf = items["category_l3"].value_counts().index[0]
    r = app.search(query="best value", k=5, filters={"category": leaf.upper()})
    assert r.status_code == 200, r.text
    got = r.json()["items"]
    assert got and all(items.loc[i["item_id"], "category_l3"] == leaf for i in got)
    brand = items["brand"].value_counts().index[0]
    r = app.search(query="gift", k=5, filters={"brand": brand, "price_max": 1e6})
    assert all(items.loc[i["item_id"], "brand"] == brand for i in r.json()["items"])
    r = app.search(query="gift", k=20, filters={"price_min": 10, "price_max": 30})
    assert all(10 <= i["price"] <= 30 for i in r.json()["items"])


def test_health_version_and_openapi(app: ServeApp, tiny_artifact: Path) -> None:
    assert app.client.get("/healthz").json()["status"] == "ok"
    v = app.client.get("/v1/version").json()
    assert v["artifact_version"].startswith("v") and v["variants"] == ["control", "treatment"]
    assert len(v["config_hash"]) == 12
    spec = app.client.get("/openapi.json").json()
    assert {"/v1/search", "/v1/recommend", "/v1/items/{item_id}/similar"} <= set(spec["paths"])
    assert app.client.get("/docs").status_code == 200


def test_variants_split_close_to_weights_and_follow_the_policy(app: ServeApp) -> None:
    policy = RoutingPolicy(ROUTING)
    users = [f"U{i:07d}" for i in range(0, 400, 2)]
    seen = {}
    for u in users:
        r = app.client.post("/v1/recommend", json={"user_id": u, "k": 1})
        assert r.status_code == 200
        seen[u] = r.json()["variant"]
    assert all(seen[u] == policy.variant_for(u) for u in users)
    share = Counter(seen.values())["treatment"] / len(users)
    assert 0.3 <= share <= 0.5  # weight 0.4, 200 shoppers


def test_concurrent_requests_share_groups_and_each_gets_its_own_answer(
    app: ServeApp, items
) -> None:
    """A burst of mixed routes and variants goes down the chain in groups; every answer is
    the one the same request gets on its own."""
    calls: list[tuple[str, str, dict | None, dict | None]] = []
    for i in range(8):
        calls.append(("post", "/v1/search", {"query": items["title"].iloc[i * 5], "k": 5}, None))
        calls.append(("post", "/v1/recommend", {"user_id": f"U{i * 3:07d}", "k": 5}, None))
    for i in range(4):
        user = f"U{i + 40:07d}"
        calls.append(("post", "/v1/search", {"query": "garden", "user_id": user, "k": 5}, None))
        calls.append(("get", f"/v1/items/{items.index[i + 11]}/similar", None, {"k": 5}))

    async def burst() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=app.base, timeout=60) as client:
            return await asyncio.gather(
                *(
                    client.request(method, path, json=body, params=params)
                    for method, path, body, params in calls
                )
            )

    together = asyncio.run(burst())
    alone = [app.client.request(m, path, json=b, params=p) for m, path, b, p in calls]
    policy = RoutingPolicy(ROUTING)
    for (_, path, body, _), a, b in zip(calls, together, alone, strict=True):
        assert a.status_code == 200 and b.status_code == 200, (a.text, b.text)
        ja, jb = a.json(), b.json()
        assert ja["route"] == jb["route"] and not ja["degraded"]
        assert a.headers["x-request-id"] == ja["request_id"] != jb["request_id"]
        assert [i["item_id"] for i in ja["items"]] == [i["item_id"] for i in jb["items"]], path
        assert [i["score"] for i in ja["items"]] == pytest.approx(
            [i["score"] for i in jb["items"]], abs=1e-4
        )
        user = (body or {}).get("user_id")
        assert ja["variant"] == policy.variant_for(user)
    assert {r.json()["variant"] for r in together} == {"control", "treatment"}
    assert max(r.json()["timings_ms"]["group_size"] for r in together) > 1
    assert max(r.json()["timings_ms"]["group_size"] for r in alone) == 1


def test_a_repeated_query_skips_the_encoder_with_the_same_answer(app: ServeApp) -> None:
    """The ingress keeps query vectors from the encoder's answers: the same query again (in any
    case and spacing) goes straight to retrieval and ranks the same items."""
    first = app.search(query="Velvet  Armchair in green", k=5).json()
    assert "encode" in first["timings_ms"]  # a miss: the encoder ran
    again = None
    for _ in range(20):  # the ingress stores the vectors just after answering
        time.sleep(0.1)
        again = app.search(query="velvet armchair IN GREEN", k=5).json()
        if "encode" not in again["timings_ms"]:
            break
    assert again is not None and "encode" not in again["timings_ms"]
    assert [i["item_id"] for i in again["items"]] == [i["item_id"] for i in first["items"]]


def test_direct_ingress_port_serves_the_same_api(app: ServeApp, items) -> None:
    """The local default serves HTTP from the ingress replica itself (direct ingress) besides
    Serve's proxy: same answers, same request ids, same 4xx errors, no proxy hop."""
    from deployments.serve_main import direct_ingress_port

    port = direct_ingress_port("recsys", app.port)
    assert port is not None and port != app.port
    query = items["title"].iloc[2]
    via_proxy = app.search(query=query, k=4).json()
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as direct:
        r = direct.post(
            "/v1/search", json={"query": query, "k": 4}, headers={"X-Request-ID": "d-1"}
        )
        assert r.status_code == 200, r.text
        body = r.json()
        check_ranked(body, "search", 4)
        assert body["request_id"] == r.headers["x-request-id"] == "d-1"
        assert [i["item_id"] for i in body["items"]] == [i["item_id"] for i in via_proxy["items"]]
        bad = direct.post(
            "/v1/search", content=b"{not json", headers={"content-type": "application/json"}
        )
        assert bad.status_code == 400 and bad.json()["error"] == "malformed_json"
        unknown = direct.post("/v1/recommend", json={"user_id": "U9999999"})
        assert unknown.status_code == 404 and unknown.json()["error"] == "unknown_user"
        assert direct.get("/healthz").json()["status"] == "ok"


BAD_INPUTS = [
    ("malformed json", "post", "/v1/search", {"content": b"{not json"}, 400, "malformed_json"),
    ("non utf-8", "post", "/v1/search", {"content": b'{"query": "\xff\xfe"}'}, 400, "bad_request"),
    ("missing query", "post", "/v1/search", {"json": {"k": 3}}, 422, "invalid_request"),
    ("query wrong type", "post", "/v1/search", {"json": {"query": 5}}, 422, "invalid_request"),
    ("empty query", "post", "/v1/search", {"json": {"query": ""}}, 422, "invalid_request"),
    ("blank query", "post", "/v1/search", {"json": {"query": "   "}}, 422, "invalid_request"),
    ("long query", "post", "/v1/search", {"json": {"query": "a" * 1001}}, 422, "invalid_request"),
    ("k zero", "post", "/v1/search", {"json": {"query": "a", "k": 0}}, 422, "invalid_request"),
    (
        "k too big",
        "post",
        "/v1/search",
        {"json": {"query": "a", "k": 1001}},
        422,
        "invalid_request",
    ),
    (
        "k string",
        "post",
        "/v1/search",
        {"json": {"query": "a", "k": "ten"}},
        422,
        "invalid_request",
    ),
    (
        "unknown field",
        "post",
        "/v1/search",
        {"json": {"query": "a", "kk": 1}},
        422,
        "invalid_request",
    ),
    ("array body", "post", "/v1/search", {"json": [1, 2]}, 422, "invalid_request"),
    (
        "price order",
        "post",
        "/v1/search",
        {"json": {"query": "a", "filters": {"price_min": 9, "price_max": 1}}},
        422,
        "invalid_request",
    ),
    (
        "unknown category",
        "post",
        "/v1/search",
        {"json": {"query": "a", "filters": {"category": "Spaceships"}}},
        422,
        "unknown_filter_value",
    ),
    (
        "unknown user search",
        "post",
        "/v1/search",
        {"json": {"query": "a", "user_id": "U9"}},
        404,
        "unknown_user",
    ),
    ("unknown user", "post", "/v1/recommend", {"json": {"user_id": "nobody"}}, 404, "unknown_user"),
    ("missing user", "post", "/v1/recommend", {"json": {}}, 422, "invalid_request"),
    ("unknown item", "get", "/v1/items/NOPE/similar", {}, 404, "unknown_item"),
    ("similar k", "get", "/v1/items/I0000001/similar?k=0", {}, 422, "invalid_request"),
    (
        "form body",
        "post",
        "/v1/search",
        {"content": b"query=a", "headers": {"content-type": "application/x-www-form-urlencoded"}},
        415,
        "unsupported_media_type",
    ),
    (
        "oversized body",
        "post",
        "/v1/search",
        {"json": {"query": "a", "pad": "x" * 40_000}},
        413,
        "body_too_large",
    ),
    ("empty body", "post", "/v1/search", {"content": b""}, 400, "malformed_json"),
    ("k true", "post", "/v1/search", {"json": {"query": "a", "k": True}}, 422, "invalid_request"),
    (
        "k numeric string",
        "post",
        "/v1/recommend",
        {"json": {"user_id": "U1", "k": "5"}},
        422,
        "invalid_request",
    ),
    (
        "price true",
        "post",
        "/v1/search",
        {"json": {"query": "a", "filters": {"price_min": True}}},
        422,
        "invalid_request",
    ),
    (
        "k above max_k",
        "post",
        "/v1/search",
        {"json": {"query": "a", "k": 101}},
        422,
        "invalid_request",
    ),
    (
        "similar k above max_k",
        "get",
        "/v1/items/I0000001/similar?k=500",
        {},
        422,
        "invalid_request",
    ),
    ("unknown route", "get", "/v2/nothing", {}, 404, "not_found"),
    ("wrong method", "get", "/v1/search", {}, 405, "method_not_allowed"),
]


@pytest.mark.parametrize(
    ("name", "method", "path", "kwargs", "status", "error"),
    BAD_INPUTS,
    ids=[b[0] for b in BAD_INPUTS],
)
def test_bad_input_gets_a_clear_4xx_json_error(
    app: ServeApp, name: str, method: str, path: str, kwargs: dict, status: int, error: str
) -> None:
    r = app.client.request(method.upper(), path, **kwargs)
    assert r.status_code == status, r.text
    body = r.json()
    assert body["error"] == error
    assert body["detail"] and body["request_id"] == r.headers["x-request-id"]
    if name in (
        "k true",
        "k numeric string",
        "price true",
        "k above max_k",
        "similar k above max_k",
    ):
        assert body["detail"][0]["field"] in ("k", "filters.price_min"), body


HOSTILE_IDS: list[tuple[str, list[tuple[bytes, bytes]]]] = [
    ("10 KB", [(b"x-request-id", b"a" * 10_000)]),
    ("markup", [(b"x-request-id", b"<script>alert(1)</script>")]),
    ("utf-8 non-ascii", [(b"x-request-id", "caf\u00e9-1".encode())]),
    ("not utf-8", [(b"x-request-id", b"\xff\xfe")]),
    ("two headers", [(b"x-request-id", b"first-id"), (b"x-request-id", b"second-id")]),
]


@pytest.mark.parametrize("headers", [h for _, h in HOSTILE_IDS], ids=[n for n, _ in HOSTILE_IDS])
def test_hostile_request_ids_are_replaced_and_header_and_body_agree(
    app: ServeApp, headers: list[tuple[bytes, bytes]]
) -> None:
    for method, path, body in (
        ("POST", "/v1/search", {"query": "sofa", "k": 2}),
        ("POST", "/v1/search", {"query": "sofa", "k": True}),  # an error answer too
    ):
        request = app.client.build_request(method, path, json=body)
        request.headers = httpx.Headers([*request.headers.raw, *headers])
        r = app.client.send(request)
        assert r.headers["content-type"] == "application/json", r.text
        returned = r.headers.get_list("x-request-id")
        assert returned == [r.json()["request_id"]], (returned, r.text)
        assert re.fullmatch(r"[A-Za-z0-9._-]{1,64}", returned[0])
        assert returned[0].encode() not in [v for _, v in headers]


def test_head_requests_get_json_errors(app: ServeApp) -> None:
    for path in ("/v1/search", "/healthz", "/nothing"):
        r = app.client.head(path)
        assert r.status_code in (404, 405), (path, r.status_code)
        assert r.headers["content-type"] == "application/json", path
        assert r.headers["x-request-id"]


def test_version_names_no_artifact_uri(app: ServeApp, tiny_artifact: Path) -> None:
    v = app.client.get("/v1/version").json()
    assert "artifacts" not in v
    assert str(tiny_artifact) not in json.dumps(v) and "://" not in json.dumps(v)


def test_api_keys_when_configured(
    serve_instance: ServeApp, tiny_artifact: Path, tmp_path: Path
) -> None:
    """A second app whose ingress reads keys from a file (``ingress.api_keys_file``): 401
    without a valid key, 200 with one (either header), probes open; a per-key rate limit
    answers 429 + Retry-After."""
    from ray import serve

    from deployments.app import build_app
    from recsys.config import IngressConfig

    keys = tmp_path / "keys"
    keys.write_text("# test keys\nkey-one\nkey-two\n")
    ingress = IngressConfig(
        group_max_size=8,
        groups_in_flight=2,
        api_keys_file=str(keys),
        rate_limit_per_key_rps=0.2,
        rate_limit_burst=3,
    )
    serve.run(
        build_app(app_config(tiny_artifact, ingress=ingress)),
        name="keyed",
        route_prefix="/keyed",
        blocking=False,
    )
    client = serve_instance.client
    try:
        deadline = time.monotonic() + 240
        while client.get("/keyed/healthz").status_code != 200:
            assert time.monotonic() < deadline, "keyed app did not start"
            time.sleep(1)
        assert client.get("/keyed/readyz").status_code in (200, 503)  # open either way
        denied = client.post("/keyed/v1/search", json={"query": "sofa"})
        assert denied.status_code == 401 and denied.json()["error"] == "unauthorized"
        assert denied.json()["request_id"] == denied.headers["x-request-id"]
        wrong = client.post(
            "/keyed/v1/search", json={"query": "sofa"}, headers={"X-API-Key": "key-three"}
        )
        assert wrong.status_code == 401
        bearer = {"Authorization": "Bearer key-one"}
        ok = client.post("/keyed/v1/search", json={"query": "sofa", "k": 2}, headers=bearer)
        assert ok.status_code == 200, ok.text
        assert client.get("/keyed/v1/version", headers={"X-API-Key": "key-two"}).status_code == 200
        answers = [
            client.get("/keyed/v1/version", headers=bearer) for _ in range(3)
        ]  # burst 3, one token already spent
        limited = answers[-1]
        assert limited.status_code == 429 and limited.json()["error"] == "rate_limited"
        assert int(limited.headers["retry-after"]) >= 1
        assert client.get("/keyed/v1/version", headers={"X-API-Key": "key-two"}).status_code == 200
    finally:
        serve.delete("keyed")


def test_project_metrics_reach_rays_prometheus_endpoint(app: ServeApp) -> None:
    """Stage latency, batch sizes, cache, per-variant and rejection metrics are exported beside
    Serve's own serve_* metrics (export is periodic: poll)."""
    import time

    import httpx

    for _ in range(5):
        app.search(query="metrics probe", k=3)  # the second and later are cache hits
    wanted = [
        "ray_recsys_stage_latency_ms_bucket",
        "ray_recsys_batch_size_bucket",
        "ray_recsys_cache_hits_total",
        "ray_recsys_cache_lookups_total",
        "ray_recsys_requests_total{",
        "ray_serve_num_http_requests",
    ]
    deadline = time.monotonic() + 90
    text = ""
    while time.monotonic() < deadline:
        try:
            text = httpx.get(app.metrics_url, timeout=10).text
        except httpx.HTTPError:
            text = ""
        if all(w in text for w in wanted):
            break
        time.sleep(3)
    missing = [w for w in wanted if w not in text]
    assert not missing, f"not exported: {missing}"
    assert 'variant="control"' in text and 'stage="encode"' in text
