"""The HTTP API: routes, request and response models, error mapping, request ids, limits.

One FastAPI app per process, over a :class:`Backend` that answers the routes: the Serve
ingress (``deployments.ingress``: admission control, the orchestrator over its stages) and the
benchmark's naive baseline (``recsys.bench.naive_server``: the in-process pipeline per
request) serve the same routes, models and errors from here.

Every answer is JSON with a request id (also in the ``X-Request-ID`` header). Bad input is a
4xx naming the problem (400 malformed JSON, 413 body too large, 415 not JSON, 422 invalid
field, 404 unknown shopper or item); a stage that cannot answer is a 503 with
``Retry-After`` (``overloaded``, ``unavailable``, ``deadline_exceeded``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from fastapi import FastAPI, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from recsys import __version__
from recsys.access import AccessControl, AccessMiddleware
from recsys.catalog import UnknownFilterError, UnknownIdError
from recsys.orchestrator import StageError
from recsys.request import new_request_id
from recsys.request_ids import pick_request_id
from recsys.types import (
    MAX_K,
    ErrorResponse,
    RankedResponse,
    RecommendRequest,
    Route,
    SearchRequest,
)

DESCRIPTION = """E-commerce search and recommendations. Each answer lists ranked items, the
ranker variant that served it, whether it was `degraded` (ranker skipped: retrieval order),
per-stage timings in ms and a request id (also in the `X-Request-ID` header)."""


class Backend(Protocol):
    """What answers the routes."""

    async def answer(
        self, request: Request, route: Route, k: int | None, **ids: Any
    ) -> JSONResponse:
        """A search, recommendation or similar-items request (``ids``: ``prepare``'s)."""
        ...

    async def healthz(self) -> dict[str, Any]: ...

    async def readyz(self, request: Request) -> JSONResponse: ...

    async def version(self) -> dict[str, Any]: ...


def error_response(
    status: int, error: str, detail: Any, request_id: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    body = ErrorResponse(error=error, detail=detail, request_id=request_id).model_dump()
    return JSONResponse(body, status_code=status, headers=headers)


def invalid_field(field: str, problem: str, request_id: str) -> JSONResponse:
    return error_response(
        422, "invalid_request", [{"field": field, "problem": problem}], request_id
    )


def lookup_error(exc: UnknownIdError | UnknownFilterError, request_id: str) -> JSONResponse:
    """404 for an unknown shopper or item, 422 for a filter value no item has."""
    if isinstance(exc, UnknownIdError):
        return error_response(404, f"unknown_{exc.kind}", str(exc), request_id)
    return error_response(422, "unknown_filter_value", str(exc), request_id)


def stage_error_response(
    exc: StageError, request_id: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    """The 503 of a request a stage could not answer (``headers``: its retry headers)."""
    error = {"overloaded": "overloaded", "deadline": "deadline_exceeded"}.get(
        exc.reason, "unavailable"
    )
    return error_response(503, error, exc.detail, request_id, headers)


def plain_request_id(scope: Scope) -> str:
    """The client's single valid ``X-Request-ID``, else a fresh id (``recsys.request_ids``)."""
    return pick_request_id(None, scope.get("headers", []))


def request_id_of(request: Request) -> str:
    return str(getattr(request.state, "request_id", None) or new_request_id())


def field_name(loc: tuple[Any, ...] | list[Any]) -> str:
    """``("body", "filters", "category")`` -> ``filters.category``; the whole body -> ``body``."""
    parts = [str(p) for p in loc]
    if parts and parts[0] in ("body", "query", "path"):
        parts = parts[1:] or parts[:1]
    return ".".join(parts) or "body"


async def _invalid(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = exc.errors()
    if any(e.get("type") == "json_invalid" for e in errors):
        first = next(e for e in errors if e.get("type") == "json_invalid")
        detail = f"malformed JSON body: {first.get('ctx', {}).get('error', 'cannot parse')}"
        return error_response(400, "malformed_json", detail, request_id_of(request))
    problems = [{"field": field_name(e.get("loc", ())), "problem": e["msg"]} for e in errors]
    return error_response(422, "invalid_request", problems, request_id_of(request))


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    codes = {400: "bad_request", 404: "not_found", 405: "method_not_allowed"}
    detail = exc.detail
    if exc.status_code == 400:
        detail = "request body is not valid UTF-8 JSON"
    return error_response(
        exc.status_code, codes.get(exc.status_code, "http_error"), detail, request_id_of(request)
    )


class RequestContextMiddleware:
    """Records the request id and refuses oversized bodies (413) before anything parses them."""

    def __init__(
        self,
        app: ASGIApp,
        max_body_bytes: int,
        request_id: Callable[[Scope], str] = plain_request_id,
    ):
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.request_id = request_id

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = self.request_id(scope)
        scope.setdefault("state", {})["request_id"] = request_id
        limit = self.max_body_bytes
        length = next(
            (v.decode("latin-1") for k, v in scope["headers"] if k == b"content-length"), ""
        )
        if length.isdigit() and int(length) > limit:
            await self._too_large(scope, receive, send, request_id, limit)
            return
        ctype = next((v.decode("latin-1") for k, v in scope["headers"] if k == b"content-type"), "")
        if scope["method"] == "POST" and not ctype:  # no Content-Type: read the body as JSON
            scope["headers"] = [*scope["headers"], (b"content-type", b"application/json")]
        elif scope["method"] == "POST" and "json" not in ctype.lower():
            response = error_response(
                415,
                "unsupported_media_type",
                f"request body must be JSON (Content-Type: application/json), got {ctype!r}",
                request_id,
            )
            await response(scope, receive, send)
            return
        body = b""
        more = scope["method"] in ("POST", "PUT", "PATCH")
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
            if len(body) > limit:
                await self._too_large(scope, receive, send, request_id, limit)
                return
        if scope["method"] == "POST" and not body.strip():
            response = error_response(
                400, "malformed_json", "request body is empty: send a JSON object", request_id
            )
            await response(scope, receive, send)
            return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed and scope["method"] in ("POST", "PUT", "PATCH"):
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    @staticmethod
    async def _too_large(
        scope: Scope, receive: Receive, send: Send, request_id: str, limit: int
    ) -> None:
        response = error_response(
            413, "body_too_large", f"request body exceeds {limit} bytes", request_id
        )
        await response(scope, receive, send)


def create_api(
    backend: Backend,
    *,
    title: str = "recsys",
    max_body_bytes: int = 16_384,
    max_query_chars: int = 1000,
    max_k: int = MAX_K,
    access: AccessControl | None = None,
    request_id: Callable[[Scope], str] = plain_request_id,
) -> FastAPI:
    """The API over ``backend``: body limits and request ids first, then access control
    (API keys, rate limit; ``recsys.access``), then validation and the routes."""
    app = FastAPI(title=title, version=__version__, description=DESCRIPTION)
    control = access or AccessControl()
    # Starlette runs the last added outermost: request id and body limits, then access control.
    app.add_middleware(AccessMiddleware, control=lambda: control, respond=error_response)
    app.add_middleware(
        RequestContextMiddleware, max_body_bytes=max_body_bytes, request_id=request_id
    )
    app.add_exception_handler(RequestValidationError, _invalid)
    app.add_exception_handler(StarletteHTTPException, _http_error)

    def too_many(k: int | None, request: Request) -> JSONResponse | None:
        if k is None or k <= max_k:
            return None
        return invalid_field("k", f"must be <= {max_k}", request_id_of(request))

    @app.get("/healthz", summary="Liveness")
    async def healthz() -> dict[str, Any]:
        return await backend.healthz()

    @app.get(
        "/readyz",
        summary="Readiness: every stage warm, the artifact version loaded, the ranker gang "
        "complete; 503 when not",
        responses={503: {"model": ErrorResponse}},
    )
    async def readyz(request: Request) -> JSONResponse:
        return await backend.readyz(request)

    @app.get("/v1/version", summary="Artifact version and config hash being served")
    async def version() -> dict[str, Any]:
        return await backend.version()

    @app.post(
        "/v1/search",
        response_model=RankedResponse,
        responses={
            404: {"model": ErrorResponse},
            422: {"model": ErrorResponse},
            503: {"model": ErrorResponse},
        },
        summary="Search the catalog (personalised when user_id is a known shopper)",
    )
    async def search(body: SearchRequest, request: Request) -> JSONResponse:
        if len(body.query) > max_query_chars:
            problem = f"longer than {max_query_chars} characters"
            return invalid_field("query", problem, request_id_of(request))
        if refused := too_many(body.k, request):
            return refused
        return await backend.answer(
            request, "search", body.k, query=body.query, user_id=body.user_id, filters=body.filters
        )

    @app.post(
        "/v1/recommend",
        response_model=RankedResponse,
        responses={404: {"model": ErrorResponse}, 503: {"model": ErrorResponse}},
        summary="Recommendations for a known shopper from their history",
    )
    async def recommend(body: RecommendRequest, request: Request) -> JSONResponse:
        if refused := too_many(body.k, request):
            return refused
        return await backend.answer(request, "recommend", body.k, user_id=body.user_id)

    @app.get(
        "/v1/items/{item_id}/similar",
        response_model=RankedResponse,
        responses={404: {"model": ErrorResponse}, 503: {"model": ErrorResponse}},
        summary="Items similar to one item",
    )
    async def similar(
        request: Request,
        item_id: str = Path(min_length=1, max_length=64),
        k: int | None = Query(None, ge=1, le=MAX_K),
    ) -> JSONResponse:
        if refused := too_many(k, request):
            return refused
        return await backend.answer(request, "similar", k, item_id=item_id)

    return app
