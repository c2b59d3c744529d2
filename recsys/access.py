"""Who may call the API and how often: optional API keys and a per-key token bucket.

API keys are off unless some are configured (``ingress.api_keys_env``, default
``RECSYS_API_KEYS``: comma-separated; ``ingress.api_keys_file`` or the file named by
``RECSYS_API_KEYS_FILE``: one per line, ``#`` comments). A client sends one as
``Authorization: Bearer KEY`` or ``X-API-Key: KEY``; every configured key is compared in
constant time (``hmac.compare_digest`` on their SHA-256 digests, so neither a key's content nor
its length leaks through timing). Without a valid key the answer is 401; the liveness and
readiness probes (:data:`OPEN_PATHS`) stay open so orchestrators need no key.

The rate limit is a token bucket per caller (per key when keys are on, per client address
otherwise): ``rate_per_s`` tokens a second, at most ``burst`` saved up; a request takes one
token or is answered 429 with ``Retry-After`` (the seconds until a token is back). Buckets live
in each ingress replica, so the service-wide limit is the per-replica one times the replicas;
idle buckets are dropped after they refill, so memory follows active callers.

Trade-off: keys are static shared secrets rotated by redeploying with a changed Secret (list
old and new together during a rotation); per-user scopes or expiry belong to a gateway.
Pure and Ray-free; ``AccessMiddleware`` is the ASGI wiring the ingress adds.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import os
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

OPEN_PATHS = frozenset({"/healthz", "/readyz"})
"""Paths answered without a key (liveness and readiness probes)."""
KEYS_FILE_ENV = "RECSYS_API_KEYS_FILE"
"""Environment variable naming a keys file when ``ingress.api_keys_file`` is not set."""


class AccessConfigError(ValueError):
    """API keys were asked for but cannot be read (a missing file or an empty one)."""


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


class ApiKeys:
    """A set of API keys, held as SHA-256 digests and compared in constant time."""

    def __init__(self, keys: Iterable[str]):
        cleaned = {k.strip() for k in keys if k.strip()}
        self._digests = [_digest(k) for k in sorted(cleaned)]

    @property
    def enabled(self) -> bool:
        return bool(self._digests)

    def __len__(self) -> int:
        return len(self._digests)

    def match(self, presented: str | None) -> str | None:
        """An id of the matching key (the first 12 hex digits of its digest, safe to log and
        to key rate limits on), or None. Checks every key, whatever matched first."""
        if presented is None:
            return None
        candidate = _digest(presented)
        found: bytes | None = None
        for digest in self._digests:
            if hmac.compare_digest(candidate, digest):
                found = digest
        return None if found is None else found.hex()[:12]

    @classmethod
    def load(
        cls,
        env: Mapping[str, str],
        env_var: str | None = "RECSYS_API_KEYS",
        keys_file: str | os.PathLike[str] | None = None,
    ) -> ApiKeys:
        """Keys from ``env[env_var]`` (comma-separated) plus a keys file (``keys_file``, else
        the file ``env[RECSYS_API_KEYS_FILE]`` names). A named file that cannot be read or
        holds no key is an error: asking for keys and silently serving without is not an
        option."""
        keys = (env.get(env_var, "") if env_var else "").split(",")
        path = keys_file or env.get(KEYS_FILE_ENV) or None
        if path is not None:
            try:
                lines = Path(path).read_text().splitlines()
            except OSError as exc:
                raise AccessConfigError(f"cannot read API keys file {path}: {exc}") from None
            from_file = [ln.strip() for ln in lines if ln.strip() and not ln.startswith("#")]
            if not from_file:
                raise AccessConfigError(f"API keys file {path} holds no key")
            keys += from_file
        return cls(keys)


def presented_key(headers: Iterable[tuple[bytes, bytes]]) -> str | None:
    """The key a request presents: ``Authorization: Bearer KEY`` or ``X-API-Key: KEY``."""
    for name, value in headers:
        lowered = name.lower()
        text = value.decode("latin-1").strip()
        if lowered == b"authorization":
            scheme, _, token = text.partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                return token.strip()
        elif lowered == b"x-api-key" and text:
            return text
    return None


@dataclass
class TokenBucket:
    """``rate_per_s`` tokens a second up to ``burst``; starts full."""

    rate_per_s: float
    burst: float
    tokens: float = field(default=-1.0)
    updated: float = 0.0

    def __post_init__(self) -> None:
        if self.tokens < 0:
            self.tokens = self.burst

    def take(self, now: float) -> float:
        """0.0 when a token was taken, else the seconds until one is available."""
        self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.rate_per_s)
        self.updated = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return 0.0
        return (1.0 - self.tokens) / self.rate_per_s


class RateLimiter:
    """One :class:`TokenBucket` per caller; ``rate_per_s`` None: no limit."""

    def __init__(
        self,
        rate_per_s: float | None,
        burst: int,
        clock: Callable[[], float] = time.monotonic,
        max_callers: int = 100_000,
    ):
        self.rate_per_s = rate_per_s
        self.burst = float(burst)
        self.clock = clock
        self.max_callers = max_callers
        self._buckets: dict[str, TokenBucket] = {}

    @property
    def enabled(self) -> bool:
        return self.rate_per_s is not None

    def check(self, caller: str) -> float:
        """0.0 when ``caller`` may go ahead, else the seconds it should wait."""
        if self.rate_per_s is None:
            return 0.0
        now = self.clock()
        bucket = self._buckets.get(caller)
        if bucket is None:
            if len(self._buckets) >= self.max_callers:
                self._forget_full(now)
            bucket = self._buckets[caller] = TokenBucket(self.rate_per_s, self.burst, updated=now)
        return bucket.take(now)

    def _forget_full(self, now: float) -> None:
        """Drop buckets that have refilled (they behave exactly like new ones)."""
        assert self.rate_per_s is not None
        refill_s = self.burst / self.rate_per_s
        self._buckets = {c: b for c, b in self._buckets.items() if now - b.updated < refill_s}


@dataclass(frozen=True)
class Refusal:
    """Why a request may not go ahead: HTTP status, error code, words, extra headers."""

    status: int
    error: str
    detail: str
    headers: dict[str, str] = field(default_factory=dict)


class AccessControl:
    """API keys plus rate limit, decided per request from its path, headers and client."""

    def __init__(self, keys: ApiKeys | None = None, limiter: RateLimiter | None = None):
        self.keys = keys or ApiKeys(())
        self.limiter = limiter or RateLimiter(None, 1)

    def decide(
        self, path: str, headers: Iterable[tuple[bytes, bytes]], client: str | None
    ) -> Refusal | None:
        """None to let the request through, else the refusal to answer."""
        if path in OPEN_PATHS:
            return None
        caller = f"addr:{client or '-'}"
        if self.keys.enabled:
            key_id = self.keys.match(presented_key(headers))
            if key_id is None:
                return Refusal(
                    401,
                    "unauthorized",
                    "a valid API key is required: send `Authorization: Bearer KEY` or "
                    "`X-API-Key: KEY`",
                    {"WWW-Authenticate": "Bearer"},
                )
            caller = f"key:{key_id}"
        wait_s = self.limiter.check(caller)
        if wait_s > 0:
            retry = max(1, math.ceil(wait_s))
            return Refusal(
                429,
                "rate_limited",
                f"rate limit of {self.limiter.rate_per_s:g} requests/s "
                f"(burst {self.limiter.burst:g}) exceeded; retry in {retry} s",
                {"Retry-After": str(retry)},
            )
        return None


class AccessMiddleware:
    """ASGI middleware: refuses requests :class:`AccessControl` says no to, with the JSON error
    ``respond(status, error, detail, request_id, headers)`` builds. ``control`` is read per
    request, so the ingress can configure it after the app is built."""

    def __init__(
        self,
        app: Any,
        control: Callable[[], AccessControl],
        respond: Callable[..., Any],
    ):
        self.app = app
        self.control = control
        self.respond = respond

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        client = scope.get("client")
        path, root = scope.get("path", ""), scope.get("root_path", "")
        if root and path.startswith(root):  # an app mounted under a route prefix
            path = path[len(root) :] or "/"
        refusal = self.control().decide(
            path, scope.get("headers") or [], client[0] if client else None
        )
        if refusal is None:
            await self.app(scope, receive, send)
            return
        request_id = (scope.get("state") or {}).get("request_id", "-")
        response = self.respond(
            refusal.status, refusal.error, refusal.detail, request_id, refusal.headers
        )
        await response(scope, receive, send)


def access_control(ingress: Any, env: Mapping[str, str] | None = None) -> AccessControl:
    """The access control an ingress config (``recsys.config.IngressConfig``) asks for, with
    keys read from ``env`` (default: this process's environment)."""
    keys = ApiKeys.load(
        os.environ if env is None else env, ingress.api_keys_env, ingress.api_keys_file
    )
    limiter = RateLimiter(ingress.rate_limit_per_key_rps, ingress.rate_limit_burst)
    return AccessControl(keys, limiter)
