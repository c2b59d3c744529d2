"""Request ids: validated wherever read, one per request, header and body agree under Serve's
own request-id middleware (composed exactly as Serve's HTTP server composes it)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest

from recsys.request_ids import (
    REQUEST_ID_PATTERN,
    RequestIdGuard,
    client_request_id,
    is_valid_request_id,
    pick_request_id,
    proxy_middlewares,
)

BAD_IDS: list[bytes] = [
    b"",
    b"a" * 65,
    b"x" * 10_000,
    b"<script>alert(1)</script>",
    b"id with space",
    "caf\u00e9".encode(),
    b"\xff\xfe",
    b"a/b",
]


@pytest.mark.parametrize("value", BAD_IDS, ids=range(len(BAD_IDS)))
def test_invalid_ids_are_refused(value: bytes) -> None:
    assert not is_valid_request_id(value)
    assert client_request_id([(b"x-request-id", value)]) is None


def test_valid_ids_are_kept_and_duplicates_are_not() -> None:
    assert is_valid_request_id("abc-123_X.y") and is_valid_request_id("a" * 64)
    assert client_request_id([(b"X-Request-ID", b"abc-123")]) == "abc-123"
    two = [(b"x-request-id", b"one"), (b"x-request-id", b"two")]
    assert client_request_id(two) is None


def test_pick_prefers_a_valid_context_id_then_the_header_then_a_fresh_one() -> None:
    assert pick_request_id("ctx-1", [(b"x-request-id", b"hdr-1")]) == "ctx-1"
    assert pick_request_id("<bad>", [(b"x-request-id", b"hdr-1")]) == "hdr-1"
    fresh = pick_request_id("x" * 100, [(b"x-request-id", b"<bad>")])
    assert REQUEST_ID_PATTERN.fullmatch(fresh) and fresh != "x" * 100
    assert pick_request_id(None, []) != pick_request_id(None, [])


async def _echo(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """An app that answers the request ids it sees: Serve's request context stands in as the
    header Serve's middleware leaves (what the proxy copies into the context)."""
    seen = [v.decode("latin-1") for k, v in scope["headers"] if k == b"x-request-id"]
    body = json.dumps({"seen": seen, "request_id": pick_request_id(None, scope["headers"])})
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"application/json")],
        }
    )
    await send({"type": "http.response.body", "body": body.encode()})


def _serve_stack() -> Any:
    """The echo app wrapped the way Serve 2.60's HTTP server wraps an app, with our callback."""
    from ray.serve._private.http_util import _apply_middlewares

    return _apply_middlewares(_echo, proxy_middlewares())


async def _call(app: Any, headers: list[tuple[bytes, bytes]]) -> httpx.Response:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        request = client.build_request("GET", "/")
        request.headers = httpx.Headers([*request.headers.raw, *headers])
        return await client.send(request)


@pytest.mark.parametrize(
    "headers",
    [
        [],
        [(b"x-request-id", b"ok-1")],
        [(b"x-request-id", b"one"), (b"x-request-id", b"two")],
        *([(b"x-request-id", bad)] for bad in BAD_IDS),
    ],
    ids=["none", "valid", "two", *(f"bad{i}" for i in range(len(BAD_IDS)))],
)
def test_under_serves_middleware_header_and_body_carry_one_valid_id(
    headers: list[tuple[bytes, bytes]],
) -> None:
    r = asyncio.run(_call(_serve_stack(), headers))
    body = r.json()
    returned = r.headers.get_list("x-request-id")
    assert len(returned) == 1 and returned[0] == body["request_id"]
    assert body["seen"] == [body["request_id"]]  # Serve and the app read the same single id
    assert REQUEST_ID_PATTERN.fullmatch(body["request_id"])
    if headers == [(b"x-request-id", b"ok-1")]:
        assert body["request_id"] == "ok-1"
    else:
        assert body["request_id"].encode() not in [v for _, v in headers]


def test_the_guard_leaves_other_headers_and_non_http_scopes_alone() -> None:
    seen: list[dict[str, Any]] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        seen.append(scope)

    guard = RequestIdGuard(app)
    asyncio.run(guard({"type": "lifespan"}, None, None))
    asyncio.run(guard({"type": "http", "headers": [(b"accept", b"*/*")]}, None, None))
    assert seen[0] == {"type": "lifespan"}
    assert (b"accept", b"*/*") in seen[1]["headers"]
    assert len([k for k, _ in seen[1]["headers"] if k == b"x-request-id"]) == 1
