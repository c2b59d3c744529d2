"""Admission control and fast failure at the front door. Pure code (ASGI and asyncio), no Ray.

Why: on an overloaded server a request that cannot be answered within its deadline still
costs CPU at every stage it reaches, and every second it waits makes the requests behind it
wait longer. Past capacity, a server that queues everything answers nothing in time (goodput
falls to zero while the queue grows); one that refuses the excess at once keeps answering
what it can, near capacity.

How:

* **The clock starts at the server.** :class:`ArrivalStamp`, installed in Serve's HTTP server
  (the proxy, and the ingress replica itself with direct ingress) through
  ``RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH`` (:func:`proxy_middlewares`), stamps each
  request with its arrival time (header :data:`ARRIVAL_HEADER`, any client copy dropped)
  before Serve queues it. The app's deadline counts from that stamp
  (:func:`arrival_monotonic`), so time spent in Serve's queues counts against it. Without the
  callback the clock starts when the handler runs, as before.
* **Shed at once what cannot be served in time** (:class:`AdmissionPolicy`): a request that
  already waited longer than ``max_queue_ms`` before the handler, or that would wait longer
  than that for a group slot (predicted from the groups ahead of it and the measured time of
  a group, a moving average), is refused immediately; one whose wait turned out longer than
  predicted is dropped when its group forms (CoDel's idea: bound the time spent queued, not
  the queue's length). Every queue stays bounded besides (``group_queue_limit``, Serve's
  ``max_queued_requests``).
* **The refusal is a JSON 503** with ``error: "overloaded"`` and two headers:
  ``Retry-After`` (whole seconds, as HTTP defines it) and ``Retry-After-Ms``: the predicted
  time until the queue has room again, in milliseconds, never below
  ``retry_after_min_ms``; ``Retry-After`` is that value rounded up to seconds.
* **The front door refuses the excess before it queues** (:class:`InFlightLimit` over an
  :class:`AdaptiveLimit`): each HTTP server lets through only as many requests at once as
  the ingress drains without queueing past its budget; the ingress reports each
  request's queueing (:data:`QUEUE_PRESSURE_HEADER`) and the limit grows and shrinks with
  it (AIMD), below a ceiling from the config (:func:`front_limit`). Past capacity the
  excess is answered in milliseconds at the front, not after ``max_queue_ms`` inside.
* **Serve's own refusals in the same shape**: :class:`ServeErrorsAsJSON` rewrites the plain
  text error answers Serve produces itself (backpressure 503 "Request dropped due to
  backpressure", the proxy's 404/500/503) into the documented JSON error body. What Serve's
  HTTP server (uvicorn) refuses before any ASGI code runs (an unparseable request line or
  header) cannot be rewritten and stays uvicorn's plain-text 400.
* **A stage known to be down is skipped** (:class:`CircuitBreaker`, one per stage): after
  ``failure_threshold`` failures in a row, or at once when a replica is reported dead, the
  breaker opens and the ingress stops calling that stage for ``open_s``: a down ranker means
  a degraded answer (retrieval order) at once, a down encoder or retriever a 503
  ``unavailable`` at once. Then one call is let through (half-open); its success closes it.

Trade-off: a refused request was one the server could perhaps have answered a little late;
under a short spike the policy refuses a few requests a queue would have absorbed. The
bound (``max_queue_ms``) is the knob between the two.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Literal

ARRIVAL_HEADER = b"x-recsys-arrival"
"""Request header with the server's arrival time (Unix seconds; :class:`ArrivalStamp`)."""
RETRY_AFTER_MS_HEADER = "Retry-After-Ms"
"""Response header with the suggested wait before a retry, in milliseconds."""
QUEUE_PRESSURE_HEADER = b"x-recsys-queue-pressure"
"""Response header from the ingress to the front door: how long the request queued before its
group went down the chain, as a share of the ingress's queue budget (``max_queue_ms``); 1 or
more when the ingress shed it. The front door's :class:`AdaptiveLimit` reads it and drops
it."""


# ---- the server's clock ---------------------------------------------------------------------


def arrival_wall_time(headers: Iterable[tuple[bytes, bytes]]) -> float | None:
    """The arrival stamp among ASGI ``headers`` (the last one: the server's), or None."""
    stamp = None
    for key, value in headers:
        if key.lower() == ARRIVAL_HEADER:
            stamp = value
    if stamp is None:
        return None
    try:
        value_s = float(stamp.decode("ascii"))
    except (UnicodeDecodeError, ValueError):
        return None
    return value_s if math.isfinite(value_s) else None


def arrival_monotonic(
    headers: Iterable[tuple[bytes, bytes]],
    now_monotonic: float | None = None,
    now_wall: float | None = None,
) -> float:
    """The request's arrival on the monotonic clock: now minus the time since its arrival
    stamp (never in the future; now when there is no stamp)."""
    mono = time.monotonic() if now_monotonic is None else now_monotonic
    wall = time.time() if now_wall is None else now_wall
    stamp = arrival_wall_time(headers)
    if stamp is None:
        return mono
    return mono - max(0.0, wall - stamp)


class ArrivalStamp:
    """ASGI middleware for Serve's HTTP server: stamps :data:`ARRIVAL_HEADER` with the time the
    request arrived (a client's own value is dropped)."""

    def __init__(self, app: Any):
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope.get("type") == "http":
            stamp = f"{time.time():.6f}".encode("ascii")
            kept = [(k, v) for k, v in scope.get("headers") or [] if k.lower() != ARRIVAL_HEADER]
            scope = {**scope, "headers": [*kept, (ARRIVAL_HEADER, stamp)]}
        await self.app(scope, receive, send)


# ---- Serve's own errors as JSON ---------------------------------------------------------------

SERVE_ERROR_CODES = {
    400: "bad_request",
    404: "not_found",
    405: "method_not_allowed",
    408: "request_timeout",
    413: "body_too_large",
    500: "internal_error",
    502: "unavailable",
    503: "unavailable",
    504: "deadline_exceeded",
}
BACKPRESSURE_TEXT = b"Request dropped due to backpressure"
"""The body of Serve's backpressure 503 (Ray 2.60, proxy and direct ingress)."""


def serve_error_body(status: int, text: bytes, request_id: str | None) -> dict[str, Any]:
    """The JSON error body for a non-JSON error answer of ``status`` with body ``text``."""
    overloaded = status == 503 and BACKPRESSURE_TEXT in text
    error = "overloaded" if overloaded else SERVE_ERROR_CODES.get(status, "http_error")
    detail = text.decode("utf-8", "replace").strip()[:500] or f"HTTP {status}"
    if overloaded:
        detail = "the server is overloaded (its request queue is full); retry later"
    return {"error": error, "detail": detail, "request_id": request_id}


class ServeErrorsAsJSON:
    """ASGI middleware: an error answer (status >= 400) that is not JSON (Serve's own plain-text
    backpressure 503, 404 and 500) becomes the API's JSON error body; a backpressure 503 gets
    ``Retry-After-Ms`` beside Serve's ``Retry-After``. JSON answers pass through untouched."""

    def __init__(self, app: Any):
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope.get("type") != "http":
            await self.app(scope, receive, send)
            return
        held: dict[str, Any] | None = None
        chunks: list[bytes] = []
        started = False  # whether any answer has gone out

        async def wrapped_send(message: dict[str, Any]) -> None:
            nonlocal held, started
            if message["type"] == "http.response.start":
                headers = message.get("headers") or []
                ctype = next((v for k, v in headers if k.lower() == b"content-type"), b"")
                started = True
                if message["status"] >= 400 and b"json" not in ctype.lower():
                    held = message  # rewrite once the whole body is here
                    return
                await send(message)
            elif message["type"] == "http.response.body" and held is not None:
                chunks.append(message.get("body", b""))
                if not message.get("more_body", False):
                    await _send_json(send, held, b"".join(chunks))
            else:
                await send(message)

        failure = "returned no answer"  # Serve's proxy, for a replica that died mid-request
        try:
            await self.app(scope, receive, wrapped_send)
        except Exception as exc:  # raised before any answer: still the documented JSON error
            if started:
                raise
            failure = type(exc).__name__
        if not started:
            text = f"internal error ({failure}); retry later".encode()
            rid = _scope_request_id(scope).encode("ascii", "replace")
            start = {
                "type": "http.response.start",
                "status": 500,
                "headers": [(b"x-request-id", rid)],
            }
            await _send_json(send, start, text)


async def _send_json(send: Any, start: dict[str, Any], text: bytes) -> None:
    headers = [(k, v) for k, v in start.get("headers") or [] if k.lower() != b"content-length"]
    request_id = next(
        (v.decode("latin-1") for k, v in headers if k.lower() == b"x-request-id"), None
    )
    body = json.dumps(serve_error_body(start["status"], text, request_id)).encode()
    kept = [(k, v) for k, v in headers if k.lower() != b"content-type"]
    retry = next((v for k, v in kept if k.lower() == b"retry-after"), None)
    if retry is not None and retry.isdigit():
        kept.append((RETRY_AFTER_MS_HEADER.lower().encode(), str(int(retry) * 1000).encode()))
    kept += [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": start["status"], "headers": kept})
    await send({"type": "http.response.body", "body": body, "more_body": False})


# ---- the front door: in-flight limit and one retry of a lost request -------------------------

MAX_IN_FLIGHT_ENV = "RECSYS_MAX_IN_FLIGHT"
"""Environment variable: the in-flight limit of each Serve HTTP server (:class:`InFlightLimit`);
unset: :func:`front_limit` of the default ``AppConfig``; ``0``: no limit."""
PROBE_PATHS = frozenset({"/healthz", "/readyz"})
"""Never refused nor retried by the front door: probes must see the app as it is."""
IDEMPOTENT_POSTS = frozenset({"/v1/search", "/v1/recommend"})
"""POST routes that only read (a second try changes nothing): retried like GETs."""
RETRY_BODY_LIMIT = 65_536
"""Larger request bodies are not buffered for a retry."""


def front_limit(config: Any) -> int:
    """In-flight requests one HTTP server lets through to the ingress, from an ``AppConfig``:
    the requests the ingress replicas run at once (``groups_in_flight`` groups of
    ``group_max_size`` per replica, times ``min_replicas``) plus as many again waiting for
    the next groups: an arrival beyond that would wait more than a group time for a slot,
    which the ingress would refuse anyway, only later (after queueing in Serve)."""
    ingress = config.ingress
    slots = ingress.groups_in_flight * ingress.group_max_size
    replicas = max(1, ingress.autoscaling.min_replicas)
    return int(min(ingress.max_ongoing_requests, 2 * slots) * replicas)


def limit_from_env(env: Any = None) -> int:
    """The in-flight limit for this process: :data:`MAX_IN_FLIGHT_ENV`, else the default
    ``AppConfig``'s :func:`front_limit`."""
    import os

    value = (os.environ if env is None else env).get(MAX_IN_FLIGHT_ENV)
    if value is not None and value.strip():
        return max(0, int(value))
    from recsys.config import AppConfig

    return front_limit(AppConfig())


def _scope_request_id(scope: dict[str, Any]) -> str:
    from recsys.request_ids import client_request_id, new_request_id

    return client_request_id(scope.get("headers") or []) or new_request_id()


async def send_overloaded(send: Any, scope: dict[str, Any], detail: str, retry_ms: int) -> None:
    """A JSON 503 ``overloaded`` with ``Retry-After`` and ``Retry-After-Ms``."""
    request_id = _scope_request_id(scope)
    body = json.dumps({"error": "overloaded", "detail": detail, "request_id": request_id}).encode()
    headers = [
        (b"x-request-id", request_id.encode("ascii")),
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"retry-after", str(max(1, math.ceil(retry_ms / 1000.0))).encode()),
        (RETRY_AFTER_MS_HEADER.lower().encode(), str(retry_ms).encode()),
    ]
    await send({"type": "http.response.start", "status": 503, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})


def queue_pressure(queued_ms: float, budget_ms: float) -> str:
    """The :data:`QUEUE_PRESSURE_HEADER` value for a request that queued ``queued_ms``."""
    return f"{max(0.0, queued_ms) / max(budget_ms, 1e-3):.3f}"


class AdaptiveLimit:
    """How many requests the front door lets through at once: additive increase,
    multiplicative decrease on the queueing the ingress reports (TCP's congestion control,
    applied to a server's queue; Netflix's concurrency-limits follow the same idea).

    A static limit has to be sized for the worst case and is wrong for every other: too high
    and an overload queues inside Serve and the ingress until requests are shed there, late
    (after ``max_queue_ms``), too low and a machine with room refuses work. The ingress
    knows how long each request queued (from its arrival at the server to its group going
    down the chain) against its budget: that share is the *pressure* in each answer
    (:data:`QUEUE_PRESSURE_HEADER`). Above ``target`` (0.75: three quarters of what the
    ingress allows before it sheds; it browns out from 0.5) the limit shrinks by ``backoff``
    (at most once per ``cooldown_s``: the answers that show one queue arrive together); at or
    below it, and only while the limit is in use (at least half of it in flight), it grows
    by one request per limit's worth of answers. So the excess of an overload is refused at
    once, at the front, instead of after queueing; a passing slowdown (a replica starting on
    the same cores) that queues less than ``target`` of the budget refuses nothing. The
    ``floor`` keeps a slow spell from shutting the door on the load it can still serve.
    """

    def __init__(
        self,
        ceiling: int,
        *,
        floor: int = 16,
        initial: int = 32,
        target: float = 0.75,
        backoff: float = 0.75,
        cooldown_s: float = 0.1,
        clock: Callable[[], float] = time.monotonic,
    ):
        if ceiling < 1 or floor < 1 or not 0 < backoff < 1 or target <= 0:
            raise ValueError("ceiling and floor must be >= 1, 0 < backoff < 1 and target > 0")
        self.ceiling = ceiling
        self.floor = min(floor, ceiling)
        self.limit = float(min(max(initial, self.floor), ceiling))
        self.target = target
        self.backoff = backoff
        self.cooldown_s = cooldown_s
        self._clock = clock
        self._last_decrease = -math.inf

    @property
    def value(self) -> int:
        return int(self.limit)

    def on_answer(self, pressure: float, in_flight: int) -> None:
        """One answer came back with this pressure while ``in_flight`` requests were out."""
        if pressure > self.target:
            now = self._clock()
            if now - self._last_decrease >= self.cooldown_s:
                self.limit = max(float(self.floor), self.limit * self.backoff)
                self._last_decrease = now
        elif in_flight >= self.limit / 2:
            self.limit = min(float(self.ceiling), self.limit + 1.0 / self.limit)


def _pop_pressure(message: dict[str, Any]) -> float | None:
    headers = message.get("headers") or []
    value = next((v for k, v in headers if k.lower() == QUEUE_PRESSURE_HEADER), None)
    if value is None:
        return None
    message["headers"] = [(k, v) for k, v in headers if k.lower() != QUEUE_PRESSURE_HEADER]
    try:
        return float(value)
    except ValueError:
        return None


class InFlightLimit:
    """ASGI middleware for Serve's HTTP servers: at most the :class:`AdaptiveLimit`'s value of
    API requests at once in this server; the next one is answered a JSON 503 ``overloaded``
    at once, before Serve queues it anywhere (probes pass; ``max_in_flight`` ``0``: no
    limit). ``max_in_flight`` is the ceiling the adaptive limit never exceeds. The ingress's
    own admission (queue time) stays behind it for what gets through."""

    def __init__(
        self,
        app: Any,
        max_in_flight: int | None = None,
        retry_after_ms: int = 1000,
        *,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.app = app
        self.max_in_flight = limit_from_env() if max_in_flight is None else max_in_flight
        self.retry_after_ms = retry_after_ms
        self.adaptive = (
            # the floor: an eighth of the ceiling (a quarter of one round of the ingresses'
            # group slots): a slow spell never shuts the front below a useful trickle
            AdaptiveLimit(self.max_in_flight, floor=max(8, self.max_in_flight // 8), clock=clock)
            if self.max_in_flight
            else None
        )
        self.in_flight = 0
        self.refused = 0

    @property
    def limit(self) -> int:
        return self.adaptive.value if self.adaptive else self.max_in_flight

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if (
            scope.get("type") != "http"
            or not self.max_in_flight
            or scope.get("path") in PROBE_PATHS
        ):
            await self.app(scope, receive, send)
            return
        limit = self.limit
        if self.in_flight >= limit:
            self.refused += 1
            detail = (
                f"{self.in_flight} requests in flight (limit {limit}): "
                "the server is overloaded; retry later"
            )
            await send_overloaded(send, scope, detail, self.retry_after_ms)
            return
        self.in_flight += 1

        async def watched_send(message: dict[str, Any]) -> None:
            if message.get("type") == "http.response.start":
                pressure = _pop_pressure(message)
                if pressure is not None and self.adaptive is not None:
                    self.adaptive.on_answer(pressure, self.in_flight)
            await send(message)

        try:
            await self.app(scope, receive, watched_send)
        finally:
            self.in_flight -= 1


def is_idempotent(scope: dict[str, Any]) -> bool:
    method = scope.get("method", "")
    path = scope.get("path", "")
    if path in PROBE_PATHS:
        return False
    return method in ("GET", "HEAD") or (method == "POST" and path in IDEMPOTENT_POSTS)


class RetryLostRequest:
    """ASGI middleware for Serve's proxy: an idempotent request (GET, HEAD, the read-only POST
    routes) answered Serve's own plain-text 500 (what the proxy sends for a request in
    flight on an ingress replica that died) is sent again, up to ``retries`` times, after
    ``delay_s``, doubling each time; Serve's router picks a live replica. The app's own
    errors are JSON and pass through; nothing is retried once any answer has gone out."""

    def __init__(self, app: Any, retries: int = 3, delay_s: float = 0.1):
        self.app = app
        self.retries = retries
        self.delay_s = delay_s
        self.retried = 0

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope.get("type") != "http" or not self.retries or not is_idempotent(scope):
            await self.app(scope, receive, send)
            return
        chunks: list[bytes] = []
        size = 0
        while True:  # buffer the body, to replay it
            message = await receive()
            if message["type"] != "http.request":  # disconnected: nothing to answer
                return
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if not message.get("more_body", False):
                break
            if size > RETRY_BODY_LIMIT:
                break
        more = size > RETRY_BODY_LIMIT
        body = b"".join(chunks)
        import asyncio

        gone = False  # the client hung up: nobody to retry for
        for attempt in range(self.retries + 1):
            replayed = False

            async def replay() -> dict[str, Any]:
                nonlocal replayed, gone
                if not replayed:
                    replayed = True
                    return {"type": "http.request", "body": body, "more_body": more}
                message = dict(await receive())
                gone = gone or message["type"] == "http.disconnect"
                return message

            last = attempt == self.retries or more
            lost = False
            started = False

            async def guarded_send(message: dict[str, Any], last: bool = last) -> None:
                nonlocal lost, started
                if lost:
                    return  # the body of the plain-text 500 being retried
                if message["type"] == "http.response.start" and not last:
                    headers = message.get("headers") or []
                    ctype = next((v for k, v in headers if k.lower() == b"content-type"), b"")
                    if message["status"] == 500 and b"json" not in ctype.lower():
                        lost = True
                        return
                started = True
                await send(message)

            try:
                await self.app(scope, replay, guarded_send)
            except Exception:  # the replica died under the proxy's router (raised, not sent)
                if started or last:
                    raise
                lost = True
            # Serve's proxy answers nothing at all for a replica that died mid-request (it
            # leaves uvicorn to write a plain 500): lost too
            lost = lost or not started
            if not lost or last or gone:
                return
            self.retried += 1
            await asyncio.sleep(self.delay_s * 2**attempt)  # backoff while the router learns


def proxy_middlewares() -> list[Any]:
    """Serve's HTTP server callback (``RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH``), innermost
    first (Serve wraps the later ones around the earlier): the request id guard
    (``recsys.request_ids``), one retry of an idempotent request lost with its replica,
    the arrival stamp (so the clock counts from the first try), the in-flight limit, and
    Serve's errors as JSON outermost."""
    from starlette.middleware import Middleware

    from recsys.request_ids import proxy_middlewares as request_id_middlewares

    return [
        *request_id_middlewares(),
        Middleware(RetryLostRequest),
        Middleware(ArrivalStamp),
        Middleware(InFlightLimit),
        Middleware(ServeErrorsAsJSON),
    ]


# ---- admission ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Rejection:
    """Why a request is refused now, and when to come back."""

    reason: Literal["queued_too_long", "predicted_wait"]
    detail: str
    retry_after_ms: int

    @property
    def headers(self) -> dict[str, str]:
        """``Retry-After`` (whole seconds, at least 1) and ``Retry-After-Ms``."""
        return {
            "Retry-After": str(max(1, math.ceil(self.retry_after_ms / 1000.0))),
            RETRY_AFTER_MS_HEADER: str(self.retry_after_ms),
        }


@dataclass(frozen=True)
class QueueState:
    """What the ingress's group queue looks like right now (``recsys.coalesce.Coalescer``)."""

    queued: int
    in_flight: int
    max_in_flight: int
    max_batch: int


class AdmissionPolicy:
    """Admit or refuse requests by the time they would spend queued (see the module doc).

    ``max_queue_ms``: the longest a request may wait, from its arrival at the server until its
    group leaves for the stages. ``brownout_queue_ms``: past this wait a group skips the
    ranker (:meth:`brownout`). ``ewma_alpha``: weight of the newest group in the moving
    average of a group's time through the stages. ``retry_after_min_ms``: the smallest retry
    hint given. ``enabled=False`` admits everything (the queues' own bounds still apply).
    """

    def __init__(
        self,
        max_queue_ms: float,
        *,
        ewma_alpha: float = 0.2,
        retry_after_min_ms: int = 100,
        enabled: bool = True,
        initial_group_ms: float = 50.0,
        brownout_queue_ms: float | None = None,
    ):
        if max_queue_ms <= 0 or not 0 < ewma_alpha <= 1:
            raise ValueError("max_queue_ms must be > 0 and ewma_alpha in (0, 1]")
        self.max_queue_ms = max_queue_ms
        self.ewma_alpha = ewma_alpha
        self.retry_after_min_ms = retry_after_min_ms
        self.enabled = enabled
        self.brownout_queue_ms = brownout_queue_ms
        self.initial_group_ms = initial_group_ms
        self.group_ms = initial_group_ms
        self.admitted = 0
        self.rejected = 0

    def observe_group(self, wall_ms: float) -> None:
        """A group came back from the stages after ``wall_ms``."""
        self.group_ms += self.ewma_alpha * (wall_ms - self.group_ms)

    def brownout(self, waited_ms: Iterable[float]) -> bool:
        """Whether a group whose requests waited ``waited_ms`` should skip its most expensive
        optional stage (the ranker): its longest wait is past ``brownout_queue_ms``, so the
        queue behind it is long; a cheaper answer now beats a refusal later."""
        if not self.enabled or self.brownout_queue_ms is None:
            return False
        return max(waited_ms, default=0.0) > self.brownout_queue_ms

    def forget_groups(self) -> None:
        """Start the group-time average again: a replica's warm-up groups (cold stages, seconds
        each) say nothing about serving, and left in the average they would make a fresh
        replica predict long waits and refuse most of its first traffic."""
        self.group_ms = self.initial_group_ms

    def predicted_wait_ms(self, queue: QueueState) -> float:
        """How long a request arriving now waits for its group to leave: zero while a group
        slot is free, else one group time per ``max_in_flight`` full groups ahead of it."""
        if queue.in_flight < queue.max_in_flight:
            return 0.0
        groups_ahead = queue.queued // max(1, queue.max_batch) + 1
        return groups_ahead * self.group_ms / max(1, queue.max_in_flight)

    def _retry_ms(self, queue: QueueState) -> int:
        drain_ms = self.predicted_wait_ms(queue)
        return int(max(self.retry_after_min_ms, math.ceil(drain_ms)))

    def on_arrival(self, waited_ms: float, queue: QueueState) -> Rejection | None:
        """Decide for a request that reached the handler ``waited_ms`` after its arrival."""
        if not self.enabled:
            self.admitted += 1
            return None
        if waited_ms > self.max_queue_ms:
            self.rejected += 1
            return Rejection(
                "queued_too_long",
                f"waited {waited_ms:.0f} ms before the ingress could take it "
                f"(limit {self.max_queue_ms:.0f} ms): the server is overloaded; retry later",
                self._retry_ms(queue),
            )
        wait = self.predicted_wait_ms(queue)
        if waited_ms + wait > self.max_queue_ms:
            self.rejected += 1
            return Rejection(
                "predicted_wait",
                f"would wait ~{waited_ms + wait:.0f} ms for a slot "
                f"(limit {self.max_queue_ms:.0f} ms): the server is overloaded; retry later",
                self._retry_ms(queue),
            )
        self.admitted += 1
        return None

    def on_dispatch(self, waited_ms: float, queue: QueueState) -> Rejection | None:
        """Decide for an admitted request whose group is about to leave, ``waited_ms`` after
        its arrival: drop it when it queued past the limit after all."""
        if not self.enabled or waited_ms <= self.max_queue_ms:
            return None
        self.rejected += 1
        return Rejection(
            "queued_too_long",
            f"waited {waited_ms:.0f} ms for a slot (limit {self.max_queue_ms:.0f} ms): "
            "the server is overloaded; retry later",
            self._retry_ms(queue),
        )


# ---- circuit breakers -----------------------------------------------------------------------

BreakerState = Literal["closed", "open", "half_open"]


class CircuitBreaker:
    """Stops calls to a stage that keeps failing, and tries it again after a pause.

    ``closed``: calls go through; ``failure_threshold`` failures in a row (or one
    ``down=True`` failure: the replica was reported dead or the deployment unavailable) open
    it. ``open``: :meth:`allow` says no for ``open_s``, then lets exactly one call through
    (``half_open``); that call's success closes the breaker, its failure opens it again.
    """

    def __init__(
        self,
        stage: str,
        failure_threshold: int = 3,
        open_s: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
    ):
        if failure_threshold < 1 or open_s <= 0:
            raise ValueError("failure_threshold must be >= 1 and open_s > 0")
        self.stage = stage
        self.failure_threshold = failure_threshold
        self.open_s = open_s
        self._clock = clock
        self.state: BreakerState = "closed"
        self.failures = 0
        self.opened_at = 0.0
        self.last_error = ""
        self.opened_count = 0

    def allow(self) -> bool:
        """Whether to call the stage now (an open breaker past its pause lets one call try)."""
        if self.state == "closed":
            return True
        # open past its pause, or half-open with its trial call unanswered for as long
        if self._clock() - self.opened_at >= self.open_s:
            self.state, self.opened_at = "half_open", self._clock()
            return True
        return False

    def record_success(self) -> None:
        self.state, self.failures = "closed", 0

    def record_failure(self, error: str, *, down: bool = False) -> None:
        self.failures += 1
        self.last_error = error
        if down or self.state == "half_open" or self.failures >= self.failure_threshold:
            if self.state != "open":
                self.opened_count += 1
            self.state, self.opened_at = "open", self._clock()

    def retry_in_ms(self) -> int:
        """Milliseconds until the breaker lets a call try again (0 when it would now)."""
        if self.state != "open":
            return 0
        return max(0, math.ceil((self.opened_at + self.open_s - self._clock()) * 1000.0))

    def describe(self) -> str:
        return (
            f"{self.stage} is down ({self.failures} failures in a row, last: "
            f"{self.last_error or 'unknown'}); not calling it for {self.retry_in_ms()} ms"
        )
