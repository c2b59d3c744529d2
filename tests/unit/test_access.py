"""API keys and per-caller rate limits (recsys.access), without Ray."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.responses import JSONResponse

from recsys.access import (
    AccessConfigError,
    AccessControl,
    AccessMiddleware,
    ApiKeys,
    RateLimiter,
    access_control,
    presented_key,
)
from recsys.config import IngressConfig


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_keys_from_env_and_file(tmp_path: Path) -> None:
    keys_file = tmp_path / "keys"
    keys_file.write_text("# rotated 2026-11\nfile-key-1\n\n  file-key-2  \n")
    keys = ApiKeys.load({"RECSYS_API_KEYS": "env-a, env-b,,"}, keys_file=keys_file)
    assert len(keys) == 4
    for good in ("env-a", "env-b", "file-key-1", "file-key-2"):
        assert keys.match(good) is not None
    for bad in ("env-a ", "ENV-A", "env", "", "# rotated 2026-11", None):
        assert keys.match(bad) is None
    assert keys.match("env-a") != keys.match("env-b")  # one id per key, for per-key limits
    assert "env-a" not in str(keys.match("env-a"))


def test_keys_file_named_by_env_and_failures_are_loud(tmp_path: Path) -> None:
    named = tmp_path / "named"
    named.write_text("k1\n")
    assert ApiKeys.load({"RECSYS_API_KEYS_FILE": str(named)}).match("k1")
    assert not ApiKeys.load({}).enabled  # nothing configured: open API
    with pytest.raises(AccessConfigError, match="cannot read"):
        ApiKeys.load({}, keys_file=tmp_path / "absent")
    (tmp_path / "empty").write_text("# no keys yet\n")
    with pytest.raises(AccessConfigError, match="holds no key"):
        ApiKeys.load({}, keys_file=tmp_path / "empty")
    assert not ApiKeys.load({"RECSYS_API_KEYS": "x"}, env_var=None).enabled


def test_presented_key_from_bearer_or_x_api_key() -> None:
    assert presented_key([(b"authorization", b"Bearer  abc ")]) == "abc"
    assert presented_key([(b"Authorization", b"bearer abc")]) == "abc"
    assert presented_key([(b"x-api-key", b"xyz")]) == "xyz"
    assert presented_key([(b"authorization", b"Basic dXNlcjpwdw==")]) is None
    assert presented_key([(b"authorization", b"Bearer ")]) is None
    assert presented_key([]) is None


def test_token_bucket_allows_burst_then_rate() -> None:
    clock = Clock()
    limiter = RateLimiter(2.0, burst=3, clock=clock)
    assert [limiter.check("a") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert limiter.check("a") == pytest.approx(0.5)  # empty: one token every 0.5 s
    assert limiter.check("b") == 0.0  # another caller has its own bucket
    clock.now += 0.5
    assert limiter.check("a") == 0.0
    assert limiter.check("a") > 0
    clock.now += 10  # refills up to the burst, not beyond
    assert [limiter.check("a") for _ in range(4)][-1] > 0
    assert RateLimiter(None, 1).check("a") == 0.0


def test_idle_buckets_are_forgotten_when_many_callers() -> None:
    clock = Clock()
    limiter = RateLimiter(1.0, burst=1, clock=clock, max_callers=10)
    for i in range(10):
        limiter.check(f"c{i}")
    clock.now += 5  # every bucket has refilled
    limiter.check("new")
    assert len(limiter._buckets) == 1


def _control(rate: float | None = None, keys: tuple[str, ...] = ("k1", "k2")) -> AccessControl:
    return AccessControl(ApiKeys(keys), RateLimiter(rate, burst=2, clock=Clock()))


def test_decisions_keys_open_paths_and_rate_limit() -> None:
    control = _control(rate=1.0)
    assert control.decide("/healthz", [], "1.2.3.4") is None
    assert control.decide("/readyz", [], None) is None
    refusal = control.decide("/v1/search", [], "1.2.3.4")
    assert refusal is not None and (refusal.status, refusal.error) == (401, "unauthorized")
    wrong = control.decide("/v1/search", [(b"x-api-key", b"k3")], None)
    assert wrong is not None and wrong.status == 401
    k1 = [(b"authorization", b"Bearer k1")]
    assert control.decide("/v1/search", k1, "a") is None
    assert control.decide("/v1/search", k1, "b") is None  # same key, other address: same bucket
    limited = control.decide("/v1/search", k1, "c")
    assert limited is not None and (limited.status, limited.error) == (429, "rate_limited")
    assert limited.headers == {"Retry-After": "1"}
    assert control.decide("/v1/search", [(b"x-api-key", b"k2")], "a") is None  # own bucket


def test_without_keys_the_limit_is_per_client_address() -> None:
    control = _control(rate=1.0, keys=())
    assert control.decide("/v1/search", [], "a") is None
    assert control.decide("/v1/search", [], "a") is None
    assert control.decide("/v1/search", [], "a") is not None
    assert control.decide("/v1/search", [], "b") is None


def test_access_control_from_ingress_config(tmp_path: Path) -> None:
    config = IngressConfig(api_keys_env="MY_KEYS", rate_limit_per_key_rps=5.0)
    control = access_control(config, env={"MY_KEYS": "s3cret", "RECSYS_API_KEYS": "other"})
    assert control.keys.match("s3cret") and not control.keys.match("other")
    assert control.limiter.rate_per_s == 5.0 and control.limiter.burst == 20
    assert not access_control(IngressConfig(), env={}).keys.enabled


def _respond(
    status: int, error: str, detail: Any, request_id: str, headers: dict[str, str]
) -> JSONResponse:
    body = {"error": error, "detail": detail, "request_id": request_id}
    return JSONResponse(body, status_code=status, headers=headers)


async def _ok(scope: dict[str, Any], receive: Any, send: Any) -> None:
    await JSONResponse({"ok": True})(scope, receive, send)


def _get(app: Any, path: str, headers: dict[str, str] | None = None) -> httpx.Response:
    async def go() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            return await client.get(path, headers=headers)

    return asyncio.run(go())


def test_middleware_answers_json_401_and_429_and_passes_the_rest() -> None:
    control = _control(rate=0.5)
    app = AccessMiddleware(_ok, control=lambda: control, respond=_respond)
    r = _get(app, "/v1/version")
    assert r.status_code == 401 and r.json()["error"] == "unauthorized"
    assert r.headers["www-authenticate"] == "Bearer"
    assert _get(app, "/healthz").json() == {"ok": True}
    key = {"X-API-Key": "k1"}
    assert [_get(app, "/v1/version", key).status_code for _ in range(3)] == [200, 200, 429]
    limited = _get(app, "/v1/version", key)
    assert limited.json()["error"] == "rate_limited" and limited.headers["retry-after"] == "2"
