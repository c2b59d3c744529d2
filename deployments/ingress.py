"""The HTTP ingress: validation, routing, deadlines, degradation, errors, logs and metrics.

Request path (search), for a group of concurrent requests (``recsys.coalesce``; the local
profile coalesces up to 16, the GPU profile sends each request on its own)::

    encoder.encode(queries) ──(response passed straight on)──> retriever.retrieve(...)
        ──(passed straight on)──> ranker[variant].rank(...) within the deadline's share
        -> top-k per request, or retrieval order with ``degraded: true`` when the ranker
           is late, overloaded or failing.

Every answer is JSON with a request id (also in the ``X-Request-ID`` header and the access
log). Bad input is a 4xx naming the problem; overload and blown deadlines are 503 with
``Retry-After``.

Ready means ready: the replica's (async) constructor waits until every stage answers and
sends one request per route and ranker variant through the whole chain, so Serve routes
nothing to it, and the app is not RUNNING, before the chain is warm (``recsys.warmup``).
``/healthz`` says the ingress is alive; ``/readyz`` asks every stage whether it is warm,
serves the expected artifact version and (ranker) has its whole gang, and answers 503 when
one is not.
"""

import asyncio
import json
import logging
import sys
import time
from typing import Any

import numpy as np
from fastapi import FastAPI, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from ray import serve
from ray.exceptions import RayActorError
from ray.serve.exceptions import BackPressureError, DeploymentUnavailableError
from ray.serve.handle import DeploymentHandle
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from deployments.metrics import stage_metrics
from deployments.payloads import Ranked, Retrieved
from deployments.readiness import deployment_name, finish_cold_start, replica_id
from recsys import __version__
from recsys.access import AccessControl, AccessMiddleware, access_control
from recsys.admission import (
    QUEUE_PRESSURE_HEADER,
    AdmissionPolicy,
    CircuitBreaker,
    QueueState,
    Rejection,
    arrival_monotonic,
    queue_pressure,
)
from recsys.artifacts import Artifact
from recsys.cache import EmbeddingCache, normalise_query
from recsys.catalog import Catalog, UnknownFilterError, UnknownIdError
from recsys.coalesce import Coalescer, QueueFull
from recsys.config import AppConfig
from recsys.request import PreparedRequest, new_request_id, prepare, ranked_items
from recsys.request_ids import pick_request_id
from recsys.routing import Deadline, RoutingPolicy
from recsys.types import (
    MAX_K,
    ErrorResponse,
    RankedResponse,
    RecommendRequest,
    Route,
    SearchRequest,
)
from recsys.warmup import (
    ARTIFACT_OPEN,
    LOAD,
    STAGES_WAIT,
    WARMUP,
    ColdStart,
    chain_calls,
    readiness,
    stage_report,
)

access_log = logging.getLogger("recsys.access")
if not access_log.handlers:
    _handler = logging.StreamHandler(sys.stderr)
    _handler.setFormatter(logging.Formatter("%(message)s"))
    access_log.addHandler(_handler)
    access_log.setLevel(logging.INFO)
    access_log.propagate = False

Job = tuple[PreparedRequest, Deadline]
"""One request waiting for its group: what to compute and its own deadline."""

# Set by the ingress replica from its config (one ingress per process).
LIMITS = {"max_body_bytes": 16_384}
ACCESS = {"control": AccessControl()}
"""API keys and rate limit (``recsys.access``), configured by the ingress replica."""

WARMUP_TIMEOUT_S = 1800.0
"""How long a starting ingress waits for the stages to come up and answer its warm-up chain
(a remote artifact download or a new GPU node can take minutes); past it the replica fails
and Serve starts another."""
WARMUP_DEADLINE_MS = 120_000.0
"""Deadline of one warm-up attempt through the chain (a cold stage may be slow once)."""
READINESS_TIMEOUT_S = 2.0
"""How long ``/readyz`` waits for each stage's answer."""


class StageError(Exception):
    """A stage could not answer in time or at all: the request gets a 503."""

    def __init__(
        self,
        stage: str,
        reason: str,
        detail: str,
        *,
        down: bool = False,
        headers: dict[str, str] | None = None,
    ):
        super().__init__(detail)
        self.stage, self.reason, self.detail = stage, reason, detail
        self.down = down
        """The stage's replica was reported dead or the deployment unavailable."""
        self.headers = headers
        """Retry headers of the answer (default: the configured ``Retry-After``)."""


DOWN_ERRORS = ("ActorDiedError", "RayActorError", "ActorUnavailableError", "AioRpcError")
"""Handle errors that mean the replica itself is gone (its stage's breaker opens at once)."""


def error_response(
    status: int, error: str, detail: Any, request_id: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    body = ErrorResponse(error=error, detail=detail, request_id=request_id).model_dump()
    return JSONResponse(body, status_code=status, headers=headers)


def serve_request_id(scope: Scope) -> str:
    """Serve's id of the current request (the one its proxy returns in ``X-Request-ID``), the
    client's single valid header outside Serve, else a fresh one; never an invalid value
    (``recsys.request_ids``)."""
    from ray.serve.context import _get_serve_request_context

    rid = _get_serve_request_context().request_id
    return pick_request_id(str(rid) if rid else None, scope.get("headers", []))


class RequestContextMiddleware:
    """Records the request id and refuses oversized bodies (413) before anything parses them."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = serve_request_id(scope)
        scope.setdefault("state", {})["request_id"] = request_id
        limit = LIMITS["max_body_bytes"]
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


DESCRIPTION = """E-commerce search and recommendations. Each answer lists ranked items, the
ranker variant that served it, whether it was `degraded` (ranker skipped: retrieval order),
per-stage timings in ms and a request id (also in the `X-Request-ID` header)."""

app = FastAPI(title="recsys", version=__version__, description=DESCRIPTION)
# Starlette runs the last added outermost: request id and body limits, then access control.
app.add_middleware(AccessMiddleware, control=lambda: ACCESS["control"], respond=error_response)
app.add_middleware(RequestContextMiddleware)


def _request_id(request: Request) -> str:
    return str(getattr(request.state, "request_id", None) or new_request_id())


def _field_name(loc: tuple[Any, ...] | list[Any]) -> str:
    """``("body", "filters", "category")`` -> ``filters.category``; the whole body -> ``body``."""
    parts = [str(p) for p in loc]
    if parts and parts[0] in ("body", "query", "path"):
        parts = parts[1:] or parts[:1]
    return ".".join(parts) or "body"


@app.exception_handler(RequestValidationError)
async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
    errors = exc.errors()
    if any(e.get("type") == "json_invalid" for e in errors):
        first = next(e for e in errors if e.get("type") == "json_invalid")
        detail = f"malformed JSON body: {first.get('ctx', {}).get('error', 'cannot parse')}"
        return error_response(400, "malformed_json", detail, _request_id(request))
    problems = [{"field": _field_name(e.get("loc", ())), "problem": e["msg"]} for e in errors]
    return error_response(422, "invalid_request", problems, _request_id(request))


@app.exception_handler(StarletteHTTPException)
async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    codes = {400: "bad_request", 404: "not_found", 405: "method_not_allowed"}
    detail = exc.detail
    if exc.status_code == 400:
        detail = "request body is not valid UTF-8 JSON"
    return error_response(
        exc.status_code, codes.get(exc.status_code, "http_error"), detail, _request_id(request)
    )


@serve.deployment
@serve.ingress(app)
class Ingress:
    """FastAPI ingress over the encoder, retriever and one ranker handle per variant."""

    async def __init__(  # type: ignore[misc]  # Serve awaits an async constructor
        self,
        config: AppConfig,
        encoder: DeploymentHandle,
        retriever: DeploymentHandle,
        rankers: dict[str, DeploymentHandle],
    ):
        self.cold = ColdStart(deployment_name("Ingress"))
        self.warm = False
        self.served = 0
        self.config = config
        LIMITS["max_body_bytes"] = config.ingress.max_body_bytes
        ACCESS["control"] = access_control(config.ingress)
        with self.cold.phase(ARTIFACT_OPEN):
            self.artifact = Artifact.open(config.artifacts, config.cache_dir)
        with self.cold.phase(LOAD):
            self.catalog = Catalog.from_artifact(self.artifact)
        self.policy = RoutingPolicy(config.routing)
        self.encoder = encoder
        self.retriever = retriever
        self.rankers = rankers
        self.metrics = stage_metrics()
        self.retry_after = {"Retry-After": str(config.routing.retry_after_s)}
        self.query_cache = EmbeddingCache(config.ingress.query_cache_size)
        self._background: set[asyncio.Task[None]] = set()
        admission = config.ingress.admission
        self.admission = AdmissionPolicy(
            admission.max_queue_ms,
            retry_after_min_ms=admission.retry_after_min_ms,
            enabled=admission.enabled,
            brownout_queue_ms=admission.brownout_queue_ms,
        )
        self.breakers = {
            stage: CircuitBreaker(stage, admission.breaker_failures, admission.breaker_open_s)
            for stage in ("encode", "retrieve", *(f"rank:{v}" for v in rankers))
        }
        self.coalescer: Coalescer[Job, tuple[dict, dict]] = Coalescer(
            self._run_group,
            max_batch_size=config.ingress.group_max_size,
            max_in_flight=config.ingress.groups_in_flight,
            max_queued=config.ingress.group_queue_limit,
            on_dispatch=self._shed_if_late,
        )
        self.stages = {h.deployment_name: h for h in (encoder, retriever, *rankers.values())}
        own_ranker = {v.name for v in config.routing.variants if v.artifacts is None}
        self.expected_versions = {
            retriever.deployment_name: self.artifact.version,
            **{rankers[v].deployment_name: self.artifact.version for v in own_ranker},
        }
        await self._warm_up()

    async def _warm_up(self) -> None:
        """Wait for every stage, then send one request per route and variant through the
        chain until all come back ranked; only then does Serve route to this replica."""
        started = time.monotonic()
        with self.cold.phase(STAGES_WAIT):  # a handle's call waits for a running replica

            async def answer(handle: DeploymentHandle) -> Any:
                return await handle.readiness.remote()

            waits = (answer(h) for h in self.stages.values())
            await asyncio.wait_for(asyncio.gather(*waits), timeout=WARMUP_TIMEOUT_S)
        calls = chain_calls(
            list(self.catalog.user_index),
            list(self.catalog.item_ids[:1]),
            list(self.catalog.titles[:32]),
            self.policy.variant_for,
            self.policy.variants,
        )
        log = logging.getLogger("ray.serve")
        with self.cold.phase(WARMUP):
            while True:
                jobs = [
                    (
                        prepare(c.route, self.catalog, self.policy, self.config.default_k, **c.ids),
                        Deadline.starting_now(WARMUP_DEADLINE_MS),
                    )
                    for c in calls
                ]
                answers = await self._run_group(jobs)
                missed = [
                    a.detail if isinstance(a, StageError) else a[0]["degraded_reason"]
                    for a in answers
                    if isinstance(a, StageError) or a[0]["degraded"]
                ]
                if not missed:
                    break
                if time.monotonic() - started > WARMUP_TIMEOUT_S:
                    raise RuntimeError(f"warm-up through the chain kept failing: {missed}")
                log.warning("warm-up through the chain not answered yet (%s); retrying", missed)
                await asyncio.sleep(1.0)
        # the warm-up's queries are not the shoppers': start with an empty query cache, and
        # with no group times from cold stages in the admission's estimate
        self.query_cache = EmbeddingCache(self.config.ingress.query_cache_size)
        self.admission.forget_groups()
        self.warm = True
        finish_cold_start(self.cold)

    # ---- endpoints ---------------------------------------------------------------------------

    @app.get("/healthz", summary="Liveness of the ingress")
    async def healthz(self) -> dict[str, Any]:
        return {"status": "ok", "items": len(self.catalog), "version": self.artifact.version}

    @app.get(
        "/readyz",
        summary="Readiness: every stage warm, the artifact version loaded, the ranker gang "
        "complete; 503 when not",
        responses={503: {"model": ErrorResponse}},
    )
    async def readyz(self, request: Request) -> JSONResponse:
        reports: dict[str, dict[str, Any] | str] = {
            self.cold.stage: stage_report(
                self.cold.stage,
                self.cold,
                warm=self.warm,
                version=self.artifact.version,
                served=self.served,
                replica=replica_id(),
            ),
            **await self._stage_reports(READINESS_TIMEOUT_S),
        }
        ready, body = readiness(reports, self.expected_versions)
        body["version"] = self.artifact.version
        if ready:
            return JSONResponse(body)
        error = ErrorResponse(
            error="not_ready", detail="; ".join(body["problems"]), request_id=_request_id(request)
        )
        return JSONResponse(
            {**error.model_dump(), **body}, status_code=503, headers=self.retry_after
        )

    async def _stage_reports(self, timeout_s: float) -> dict[str, dict[str, Any] | str]:
        """Each stage's ``readiness()`` answer (from one of its replicas), or why none came."""

        async def ask(handle: DeploymentHandle) -> dict[str, Any] | str:
            response = handle.readiness.remote()
            try:
                return dict(await asyncio.wait_for(response, timeout=timeout_s))
            except TimeoutError:
                response.cancel()
                return f"no answer within {timeout_s:g} s"
            except BackPressureError:
                return "overloaded: its queue is full"
            except Exception as exc:  # unavailable, or its replica failed
                return f"unavailable ({type(exc).__name__}: {exc})"

        answers = await asyncio.gather(*(ask(h) for h in self.stages.values()))
        return dict(zip(self.stages, answers, strict=True))

    @app.get("/v1/version", summary="Artifact version and config hash being served")
    async def version(self) -> dict[str, Any]:
        quality = self.artifact.quality()
        if self.config.retrieval.mode != "auto":
            quality["retrieval_mode"] = self.config.retrieval.mode
        return {
            "artifact_version": self.artifact.version,
            "config_hash": self.config.config_hash(),
            "variants": self.policy.variants,
            "tp": self.config.topology.tp,
            "recsys_version": __version__,
            **quality,
        }

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
    async def search(self, body: SearchRequest, request: Request) -> JSONResponse:
        if len(body.query) > self.config.ingress.max_query_chars:
            return error_response(
                422,
                "invalid_request",
                [
                    {
                        "field": "query",
                        "problem": f"longer than {self.config.ingress.max_query_chars} characters",
                    }
                ],
                _request_id(request),
            )
        return await self._handle(
            request,
            "search",
            body.k,
            query=body.query,
            user_id=body.user_id,
            filters=body.filters,
        )

    @app.post(
        "/v1/recommend",
        response_model=RankedResponse,
        responses={404: {"model": ErrorResponse}, 503: {"model": ErrorResponse}},
        summary="Recommendations for a known shopper from their history",
    )
    async def recommend(self, body: RecommendRequest, request: Request) -> JSONResponse:
        return await self._handle(request, "recommend", body.k, user_id=body.user_id)

    @app.get(
        "/v1/items/{item_id}/similar",
        response_model=RankedResponse,
        responses={404: {"model": ErrorResponse}, 503: {"model": ErrorResponse}},
        summary="Items similar to one item",
    )
    async def similar(
        self,
        request: Request,
        item_id: str = Path(min_length=1, max_length=64),
        k: int | None = Query(None, ge=1, le=MAX_K),
    ) -> JSONResponse:
        return await self._handle(request, "similar", k, item_id=item_id)

    # ---- the request path --------------------------------------------------------------------

    async def _handle(
        self, request: Request, route: Route, k: int | None, **ids: Any
    ) -> JSONResponse:
        request_id = _request_id(request)
        # the clock starts when the request reached the server (recsys.admission)
        deadline = Deadline(
            arrival_monotonic(request.scope.get("headers") or []),
            self.config.routing.deadline_ms / 1000.0,
        )
        self.served += 1
        if k is not None and k > self.config.ingress.max_k:
            problem = [{"field": "k", "problem": f"must be <= {self.config.ingress.max_k}"}]
            resp = error_response(422, "invalid_request", problem, request_id)
            return self._finish(resp, request_id, route, None, deadline, {})
        try:
            prep = prepare(
                route,
                self.catalog,
                self.policy,
                k or self.config.default_k,
                request_id=request_id,
                **ids,
            )
        except UnknownIdError as exc:
            resp = error_response(404, f"unknown_{exc.kind}", str(exc), request_id)
            return self._finish(resp, request_id, route, None, deadline, {})
        except UnknownFilterError as exc:
            resp = error_response(422, "unknown_filter_value", str(exc), request_id)
            return self._finish(resp, request_id, route, None, deadline, {})
        try:
            refused = self.admission.on_arrival(deadline.elapsed_ms(), self._queue_state())
            if refused is not None:
                raise self._overloaded(refused)
            body, timings = await self._run(prep, deadline)
        except StageError as exc:
            self.metrics.rejected.inc(tags={"stage": exc.stage, "reason": exc.reason})
            status_error = "overloaded" if exc.reason == "overloaded" else "unavailable"
            if exc.reason == "deadline":
                status_error = "deadline_exceeded"
            headers = dict(exc.headers or self.retry_after)
            if exc.stage == "ingress" or exc.reason == "deadline":  # shed: a full queue
                budget = self.admission.max_queue_ms
                queued = max(deadline.elapsed_ms(), budget)
                headers[QUEUE_PRESSURE_HEADER.decode()] = queue_pressure(queued, budget)
            resp = error_response(503, status_error, exc.detail, request_id, headers)
            return self._finish(resp, request_id, route, prep.decision.variant, deadline, {})
        pressure = queue_pressure(timings.get("group_wait", 0.0), self.admission.max_queue_ms)
        return self._finish(
            JSONResponse(body, headers={QUEUE_PRESSURE_HEADER.decode(): pressure}),
            request_id,
            route,
            prep.decision.variant,
            deadline,
            timings,
            degraded=body["degraded_reason"],
        )

    async def _run(self, prep: PreparedRequest, deadline: Deadline) -> tuple[dict, dict]:
        """This request's answer, computed with whatever requests are concurrent with it
        (``recsys.coalesce``): raises :class:`StageError` when it gets a 503."""
        try:
            return await self.coalescer.submit((prep, deadline))
        except QueueFull as exc:
            detail = f"ingress is overloaded ({exc}); retry later"
            raise StageError("ingress", "overloaded", detail) from None

    def _queue_state(self) -> QueueState:
        c = self.coalescer
        return QueueState(c.queued, c.in_flight, c.max_in_flight, c.max_batch_size)

    @staticmethod
    def _overloaded(refused: Rejection) -> StageError:
        return StageError("ingress", "overloaded", refused.detail, headers=refused.headers)

    def _shed_if_late(self, job: Job) -> StageError | None:
        """Coalescer hook as a group forms: drop a request that queued past the limit."""
        refused = self.admission.on_dispatch(job[1].elapsed_ms(), self._queue_state())
        return None if refused is None else self._overloaded(refused)

    async def _run_group(self, group: list[Job]) -> list[tuple[dict, dict] | StageError]:
        """encode -> retrieve -> rank for a group, as one chain of responses, one call per
        stage; requests whose ranked answer is late (or whose ranker is overloaded or failing)
        are answered in retrieval order.

        Each stage's response is handed to the next call as an argument, so this code never
        awaits the intermediate results on the happy path; Serve resolves them: by reference
        with its default transport (the value goes stage to stage through Ray's object
        store), by value in the ingress's router with the gRPC transport of throughput-
        optimised mode (the local default). Only when a ranked answer misses its share of
        the deadline does the ingress await the retrieved candidates itself and answer in
        their order. The group keeps the earliest deadline of its requests.
        """
        waited = [d.elapsed_ms() for _, d in group]  # queued for a group slot until now
        preps = [prep for prep, _ in group]
        deadline = min((d for _, d in group), key=lambda d: d.start + d.budget_s)
        n = self.config.retrieval.n_candidates
        queries: list[str] = []  # the ones the ingress's query cache does not hold
        query_rows: list[int] = []  # each request's row in the encoder's answer (-1: none)
        cached: list[np.ndarray | None] = []
        for p in preps:
            vec = None if p.query is None else self.query_cache.get(normalise_query(p.query))
            cached.append(vec)
            query_rows.append(len(queries) if p.query is not None and vec is None else -1)
            if p.query is not None and vec is None:
                queries.append(p.query)
        self._count_cache(preps, cached)
        needed = ["encode", "retrieve"] if queries else ["retrieve"]
        for stage in needed:  # a stage known to be down is not waited out
            breaker = self.breakers[stage]
            if not breaker.allow():
                return [StageError(stage, "unavailable", breaker.describe()) for _ in group]
        encoded = self.encoder.encode.remote(queries) if queries else None
        retrieved = self.retriever.retrieve.remote(
            [p.retrieval(n, query_vec=vec) for p, vec in zip(preps, cached, strict=True)],
            encoded,
            query_rows,
        )
        upstream = "encode+retrieve" if queries else "retrieve"
        by_variant: dict[str, list[int]] = {}
        for i, p in enumerate(preps):
            by_variant.setdefault(p.decision.variant, []).append(i)
        ranked: list[Ranked | None] = [None] * len(preps)
        reasons: list[str | None] = [None] * len(preps)
        ranker_errors: dict[str, StageError] = {}
        started = time.perf_counter()
        budget = self.policy.ranker_budget_s(deadline)
        if budget is None:
            reasons = ["ranker_deadline"] * len(preps)
        elif self.admission.brownout(waited):  # a long queue: retrieval order, not a refusal
            reasons = ["ranker_shed"] * len(preps)
        else:
            calls = {}
            for variant, picks in by_variant.items():
                if not self.breakers[f"rank:{variant}"].allow():  # down: degrade at once
                    for i in picks:
                        reasons[i] = "ranker_unavailable"
                    continue
                calls[variant] = self._call(
                    self.rankers[variant].rank.remote(
                        [preps[i].rank_query() for i in picks], retrieved, picks
                    ),
                    budget,
                    "rank",
                )
            outcomes = await asyncio.gather(*calls.values(), return_exceptions=True)
            for variant, outcome in zip(calls, outcomes, strict=True):
                picks = by_variant[variant]
                if isinstance(outcome, StageError):
                    ranker_errors[variant] = outcome
                    for i in picks:
                        reasons[i] = f"ranker_{outcome.reason}"
                elif isinstance(outcome, BaseException):
                    raise outcome
                else:
                    self.breakers[f"rank:{variant}"].record_success()
                    for i, answer in zip(picks, outcome, strict=True):
                        ranked[i] = answer
        answers: list[tuple[dict, dict] | StageError] = []
        fallback: list[Retrieved] | StageError | None = None
        if any(reasons):  # was it the ranker, or retrieval itself? Retrieval decides.
            try:
                fallback = await self._call(retrieved, deadline.remaining_s(), upstream)
            except StageError as exc:
                fallback = exc
        await self._judge_stages(needed, encoded, fallback, ranker_errors)
        chain_ms = (time.perf_counter() - started) * 1000.0
        self.admission.observe_group(chain_ms)
        for i, (prep, request_deadline) in enumerate(group):
            reason = reasons[i]
            if reason is None:
                candidates, scores, timings = ranked[i]  # type: ignore[misc]
                timings = dict(timings)
            elif isinstance(fallback, StageError):
                answers.append(StageError(fallback.stage, fallback.reason, fallback.detail))
                continue
            else:
                assert fallback is not None
                candidates, timings = fallback[i]
                scores, timings = None, dict(timings)
                self.metrics.degraded.inc(tags={"route": prep.route, "reason": reason})
            timings["group_wait"] = waited[i]
            timings["chain_wall"] = chain_ms
            timings["group_size"] = float(len(preps))
            timings["total"] = request_deadline.elapsed_ms()
            body = RankedResponse(
                request_id=prep.request_id,
                route=prep.route,
                variant=prep.decision.variant,
                degraded=reason is not None,
                degraded_reason=reason,
                items=ranked_items(self.catalog, candidates, scores, prep.k),
                timings_ms={key: round(v, 3) for key, v in timings.items()},
                artifact_version=self.artifact.version,
            )
            answers.append((body.model_dump(), timings))
        self.metrics.batch_size.observe(len(preps), tags={"stage": "ingress_group"})
        if encoded is not None and self.query_cache.capacity:  # off the answers' path
            task = asyncio.create_task(self._remember(queries, encoded))
            self._background.add(task)
            task.add_done_callback(self._background.discard)
        return answers

    async def _judge_stages(
        self,
        needed: list[str],
        encoded: Any,
        fallback: list[Retrieved] | StageError | None,
        ranker_errors: dict[str, StageError],
    ) -> None:
        """Tell each stage's breaker how its call went: a ranker failed only when retrieval
        itself answered; when retrieval failed, the encoder did if its own answer failed."""
        if not isinstance(fallback, StageError):
            for stage in needed:
                self.breakers[stage].record_success()
            for variant, exc in ranker_errors.items():
                if exc.reason != "overloaded":  # a full queue means alive: not a failure
                    self.breakers[f"rank:{variant}"].record_failure(exc.detail, down=exc.down)
            return
        if fallback.reason == "overloaded":
            return
        blamed = "retrieve"
        if encoded is not None:
            try:
                await asyncio.wait_for(encoded, timeout=0.05)
            except Exception:  # the encoder's own answer failed or never came
                blamed = "encode"
        self.breakers[blamed].record_failure(fallback.detail, down=fallback.down)
        if blamed == "encode":
            fallback.stage = "encode"

    def _count_cache(self, preps: list[PreparedRequest], cached: list[np.ndarray | None]) -> None:
        lookups = sum(p.query is not None for p in preps)
        if not lookups or not self.query_cache.capacity:
            return
        hits = sum(vec is not None for vec in cached)
        tags = {"stage": "ingress"}
        if hits:
            self.metrics.cache_hits.inc(hits, tags=tags)
        self.metrics.cache_lookups.inc(lookups, tags=tags)
        self.metrics.cache_hit_ratio.set(self.query_cache.hit_ratio, tags=tags)

    async def _remember(self, queries: list[str], encoded: Any) -> None:
        """Keep the group's new query vectors (the encoder's answer is resolved by now on the
        happy path; a failed or late encoder leaves the cache as it was)."""
        try:
            vectors, _ = await asyncio.wait_for(encoded, timeout=5.0)
        except Exception:  # the request path already answered for this failure
            return
        for query, vec in zip(queries, vectors, strict=True):
            self.query_cache.put(normalise_query(query), vec)

    async def _call(self, response: Any, timeout_s: float, stage: str) -> Any:
        """Await a stage's answer within ``timeout_s``; map failures to :class:`StageError`."""
        if timeout_s <= 0:
            response.cancel()
            raise StageError(stage, "deadline", f"request deadline exceeded before {stage}")
        try:
            return await asyncio.wait_for(response, timeout=timeout_s)
        except TimeoutError:
            response.cancel()
            raise StageError(
                stage, "deadline", f"{stage} did not answer within {timeout_s * 1000:.0f} ms"
            ) from None
        except BackPressureError:
            raise StageError(stage, "overloaded", f"{stage} is overloaded; retry later") from None
        except DeploymentUnavailableError as exc:
            detail = f"{stage} is unavailable: {exc}"
            raise StageError(stage, "unavailable", detail, down=True) from None
        except Exception as exc:  # a replica died or raised: answer 503, never hang
            name = type(exc).__name__
            logging.getLogger("ray.serve").warning("%s failed: %r", stage, exc)
            if name in DOWN_ERRORS or isinstance(exc, RayActorError):
                detail = f"{stage} is unavailable (its replica died: {name}); retry later"
                raise StageError(stage, "unavailable", detail, down=True) from exc
            raise StageError(stage, "failed", f"{stage} failed ({name}); retry later") from exc

    def _finish(
        self,
        response: JSONResponse,
        request_id: str,
        route: Route,
        variant: str | None,
        deadline: Deadline,
        timings: dict[str, float],
        degraded: str | None = None,
    ) -> JSONResponse:
        status = response.status_code
        total = deadline.elapsed_ms()
        self.metrics.requests.inc(
            tags={"route": route, "variant": variant or "-", "status": str(status)}
        )
        self.metrics.stage_latency.observe(total, tags={"stage": "ingress_total"})
        access_log.info(
            json.dumps(
                {
                    "ts": round(time.time(), 3),
                    "request_id": request_id,
                    "route": route,
                    "variant": variant,
                    "status": status,
                    "degraded": degraded,
                    "total_ms": round(total, 2),
                    "timings_ms": {k: round(v, 2) for k, v in timings.items()},
                }
            )
        )
        return response
