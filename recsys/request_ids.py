"""Request ids: one per request, validated wherever one is read, the same in header and body.

A client may send ``X-Request-ID`` to correlate its logs with ours. Whatever it sends is
untrusted: an id is kept only when there is exactly one such header and its value matches
:data:`REQUEST_ID_PATTERN` (1..64 characters of ``[A-Za-z0-9._-]``); anything else (a 10 KB
value, markup, non-ASCII bytes, two headers) is replaced by a fresh id, never echoed.

Why a middleware in Serve's HTTP server and not only in the app: Serve's own
``RequestIdMiddleware`` (in the proxy and, with direct ingress, in the ingress replica) reads
the client's header into the request context and appends it to the response's
``X-Request-ID`` before the app sees anything, and a value that is not UTF-8 fails there with
a plain-text 500. :class:`RequestIdGuard` runs outside it (Serve applies the middlewares
returned by ``RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH`` around its own), so by the time
Serve reads the header it holds exactly one valid id, and the header Serve returns, the
request context, the body and the access log all agree. The app still validates what it
reads (:func:`pick_request_id`): an instance started without the callback never echoes junk,
it only loses the header/body agreement for invalid ids.

Set ``RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH=recsys.request_ids:proxy_middlewares`` in the
environment of every Ray node (``deployments.serve_main.LOCAL_SERVE_ENV`` does it locally, the
KubeRay manifest on every pod). Pure ASGI: no Ray import.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterable
from typing import Any

HEADER = b"x-request-id"
MAX_LENGTH = 64
REQUEST_ID_PATTERN = re.compile(rf"[A-Za-z0-9._-]{{1,{MAX_LENGTH}}}")
"""What a kept client id looks like (safe in headers, JSON, logs and HTML)."""


def new_request_id() -> str:
    """A fresh id: 16 hex digits."""
    return uuid.uuid4().hex[:16]


def is_valid_request_id(value: str | bytes | None) -> bool:
    """Whether ``value`` is an id we may keep and echo."""
    if isinstance(value, bytes):
        try:
            value = value.decode("ascii")
        except UnicodeDecodeError:
            return False
    return value is not None and REQUEST_ID_PATTERN.fullmatch(value) is not None


def client_request_id(headers: Iterable[tuple[bytes, bytes]]) -> str | None:
    """The client's id when it sent exactly one valid ``X-Request-ID`` header, else None."""
    values = [value for key, value in headers if key.lower() == HEADER]
    if len(values) == 1 and is_valid_request_id(values[0]):
        return values[0].decode("ascii")
    return None


def pick_request_id(context_id: str | None, headers: Iterable[tuple[bytes, bytes]]) -> str:
    """The request's id as the app sees it: Serve's request context when valid (it is the
    id Serve returns in the header), else the client's single valid header, else a fresh id."""
    if is_valid_request_id(context_id):
        assert context_id is not None
        return context_id
    return client_request_id(headers) or new_request_id()


class RequestIdGuard:
    """ASGI middleware: leaves exactly one valid ``X-Request-ID`` request header (the client's
    when it sent one valid id, a fresh one otherwise) for everything inside it to read."""

    def __init__(self, app: Any):
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope.get("type") in ("http", "websocket"):
            headers = list(scope.get("headers") or [])
            request_id = client_request_id(headers) or new_request_id()
            kept = [(k, v) for k, v in headers if k.lower() != HEADER]
            scope = {**scope, "headers": [*kept, (HEADER, request_id.encode("ascii"))]}
        await self.app(scope, receive, send)


def proxy_middlewares() -> list[Any]:
    """Serve's HTTP proxy callback (``RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH``): the
    middlewares Serve applies around its own request-id middleware."""
    from starlette.middleware import Middleware

    return [Middleware(RequestIdGuard)]
