"""Admission control, Serve's errors as JSON and circuit breakers: pure, without Ray."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from recsys.admission import (
    ARRIVAL_HEADER,
    QUEUE_PRESSURE_HEADER,
    AdaptiveLimit,
    AdmissionPolicy,
    ArrivalStamp,
    CircuitBreaker,
    InFlightLimit,
    QueueState,
    RetryLostRequest,
    ServeErrorsAsJSON,
    arrival_monotonic,
    front_limit,
    limit_from_env,
    proxy_middlewares,
    queue_pressure,
)
from recsys.coalesce import Coalescer

FREE = QueueState(queued=0, in_flight=0, max_in_flight=2, max_batch=16)
BUSY = QueueState(queued=40, in_flight=2, max_in_flight=2, max_batch=16)


def test_arrival_counts_time_already_spent_at_the_server() -> None:
    headers = [(ARRIVAL_HEADER, b"1000.0")]
    assert arrival_monotonic(headers, now_monotonic=50.0, now_wall=1000.3) == pytest.approx(49.7)
    # no stamp, a junk stamp or one from the future: the clock starts now
    assert arrival_monotonic([], now_monotonic=50.0, now_wall=1000.3) == 50.0
    assert arrival_monotonic([(ARRIVAL_HEADER, b"nan")], 50.0, 1000.3) == 50.0
    assert arrival_monotonic([(ARRIVAL_HEADER, b"soon")], 50.0, 1000.3) == 50.0
    assert arrival_monotonic([(ARRIVAL_HEADER, b"2000")], 50.0, 1000.3) == 50.0


def test_arrival_stamp_replaces_a_client_value() -> None:
    seen: list[Any] = []

    async def app(scope: dict, receive: Any, send: Any) -> None:
        seen.append(scope["headers"])

    scope = {"type": "http", "headers": [(b"x-recsys-arrival", b"1.0"), (b"a", b"b")]}
    asyncio.run(ArrivalStamp(app)(scope, None, None))
    stamps = [v for k, v in seen[0] if k == ARRIVAL_HEADER]
    assert len(stamps) == 1 and float(stamps[0]) > 1e9
    assert (b"a", b"b") in seen[0]


def test_idle_server_admits_and_a_long_wait_is_refused_with_retry_hints() -> None:
    policy = AdmissionPolicy(max_queue_ms=250, retry_after_min_ms=100)
    assert policy.on_arrival(5.0, FREE) is None
    late = policy.on_arrival(400.0, FREE)
    assert late is not None and late.reason == "queued_too_long"
    assert late.headers == {"Retry-After": "1", "Retry-After-Ms": "100"}
    assert (policy.admitted, policy.rejected) == (1, 1)


def test_predicted_wait_refuses_at_once_when_the_groups_ahead_take_too_long() -> None:
    policy = AdmissionPolicy(max_queue_ms=250, initial_group_ms=100.0)
    # 40 queued = 3 groups of 16 ahead, two slots: ~150 ms; with 50 ms already waited: fine
    assert policy.predicted_wait_ms(BUSY) == pytest.approx(150.0)
    assert policy.on_arrival(50.0, BUSY) is None
    for _ in range(30):  # groups got slower
        policy.observe_group(300.0)
    refused = policy.on_arrival(0.0, BUSY)
    assert refused is not None and refused.reason == "predicted_wait"
    assert refused.retry_after_ms >= 400  # about the time the queue needs to drain
    assert refused.headers["Retry-After"] == str(-(-refused.retry_after_ms // 1000))
    policy.forget_groups()  # (a replica's cold warm-up groups): back to the first estimate
    assert policy.predicted_wait_ms(BUSY) == pytest.approx(150.0)
    assert policy.on_arrival(50.0, BUSY) is None


def test_brownout_skips_the_ranker_only_for_a_group_that_queued_long() -> None:
    policy = AdmissionPolicy(max_queue_ms=250, brownout_queue_ms=125)
    assert not policy.brownout([0.0, 40.0, 120.0])
    assert policy.brownout([0.0, 130.0])  # its longest wait decides
    assert not policy.brownout([])
    assert not AdmissionPolicy(max_queue_ms=250).brownout([1e6])  # off by default
    off = AdmissionPolicy(max_queue_ms=250, brownout_queue_ms=125, enabled=False)
    assert not off.brownout([1e6])


def test_dispatch_drops_what_queued_past_the_limit_and_disabled_admits_everything() -> None:
    policy = AdmissionPolicy(max_queue_ms=250)
    assert policy.on_dispatch(100.0, BUSY) is None
    assert policy.on_dispatch(300.0, BUSY) is not None
    off = AdmissionPolicy(max_queue_ms=250, enabled=False)
    assert off.on_arrival(10_000.0, BUSY) is None and off.on_dispatch(10_000.0, BUSY) is None
    with pytest.raises(ValueError):
        AdmissionPolicy(max_queue_ms=0)


def test_coalescer_on_dispatch_refuses_an_item_and_groups_the_rest() -> None:
    async def main() -> tuple[list[Any], list[list[int]]]:
        groups: list[list[int]] = []

        async def run(items: list[int]) -> list[int]:
            groups.append(items)
            await asyncio.sleep(0.01)
            return [i * 10 for i in items]

        refuse = {3}
        coalescer: Coalescer[int, int] = Coalescer(
            run,
            max_batch_size=8,
            max_in_flight=1,
            on_dispatch=lambda i: RuntimeError("late") if i in refuse else None,
        )
        results = await asyncio.gather(
            *(coalescer.submit(i) for i in range(5)), return_exceptions=True
        )
        return results, groups

    results, groups = asyncio.run(main())
    assert results[:3] == [0, 10, 20] and results[4] == 40
    assert isinstance(results[3], RuntimeError)
    assert groups == [[0], [1, 2, 4]]


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_breaker_opens_after_failures_in_a_row_then_one_trial_closes_it() -> None:
    clock = Clock()
    breaker = CircuitBreaker("rank", failure_threshold=3, open_s=2.0, clock=clock)
    for _ in range(2):
        breaker.record_failure("timeout")
    breaker.record_success()  # not in a row
    for _ in range(3):
        assert breaker.allow()
        breaker.record_failure("timeout")
    assert breaker.state == "open" and not breaker.allow()
    assert breaker.retry_in_ms() == 2000 and "rank is down" in breaker.describe()
    clock.now += 2.0
    assert breaker.allow() and breaker.state == "half_open"
    assert not breaker.allow()  # one trial at a time
    breaker.record_success()
    assert breaker.state == "closed" and breaker.allow()


def test_breaker_opens_at_once_on_a_dead_replica_and_a_failed_trial_reopens() -> None:
    clock = Clock()
    breaker = CircuitBreaker("encode", failure_threshold=3, open_s=1.0, clock=clock)
    breaker.record_failure("ActorDiedError", down=True)
    assert breaker.state == "open" and not breaker.allow()
    clock.now += 1.0
    assert breaker.allow()
    breaker.record_failure("still down")
    assert breaker.state == "open" and not breaker.allow()
    clock.now += 1.0  # a trial whose answer never came does not block the stage for good
    assert breaker.allow()
    clock.now += 1.0
    assert breaker.allow()
    assert breaker.opened_count == 2  # closed -> open, half-open -> open


async def _respond(status: int, ctype: bytes, body: bytes, extra: list | None = None) -> list:
    async def app(scope: dict, receive: Any, send: Any) -> None:
        headers = [(b"content-type", ctype), (b"x-request-id", b"rid-1"), *(extra or [])]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body[:5], "more_body": True})
        await send({"type": "http.response.body", "body": body[5:], "more_body": False})

    sent: list = []

    async def send(message: dict) -> None:
        sent.append(message)

    await ServeErrorsAsJSON(app)({"type": "http", "headers": []}, None, send)
    return sent


def test_serve_backpressure_503_becomes_the_json_error() -> None:
    sent = asyncio.run(
        _respond(
            503,
            b"text/plain; charset=utf-8",
            b"Request dropped due to backpressure",
            [(b"retry-after", b"1")],
        )
    )
    start, body = sent
    headers = dict(start["headers"])
    assert start["status"] == 503 and headers[b"content-type"] == b"application/json"
    assert headers[b"retry-after"] == b"1" and headers[b"retry-after-ms"] == b"1000"
    payload = json.loads(body["body"])
    assert payload["error"] == "overloaded" and payload["request_id"] == "rid-1"
    assert int(headers[b"content-length"]) == len(body["body"])


def test_plain_text_404_is_json_and_json_or_success_passes_untouched() -> None:
    start, body = asyncio.run(_respond(404, b"text/plain", b"Path '/x' not found."))
    assert json.loads(body["body"])["error"] == "not_found"
    sent = asyncio.run(_respond(422, b"application/json", b'{"error": "invalid_request"}'))
    assert len(sent) == 3 and sent[0]["status"] == 422
    sent = asyncio.run(_respond(200, b"text/plain", b"hello world"))
    assert len(sent) == 3


def test_proxy_middlewares_keep_the_request_id_guard_innermost() -> None:
    names = [m.cls.__name__ for m in proxy_middlewares()]
    assert names == [
        "RequestIdGuard",
        "RetryLostRequest",
        "ArrivalStamp",
        "InFlightLimit",
        "ServeErrorsAsJSON",
    ]


# ---- the front door ----------------------------------------------------------------------------


def _http(path: str = "/v1/search", method: str = "POST") -> dict:
    return {"type": "http", "path": path, "method": method, "headers": []}


def test_in_flight_limit_refuses_the_excess_at_once_with_json_503() -> None:
    release = asyncio.Event()

    async def slow_app(scope, receive, send):  # type: ignore[no-untyped-def]
        await release.wait()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})

    limit = InFlightLimit(slow_app, max_in_flight=2)

    async def scenario() -> list[list[dict]]:
        sent: list[list[dict]] = [[] for _ in range(4)]

        async def call(i: int, path: str = "/v1/search") -> None:
            async def send(message: dict) -> None:
                sent[i].append(message)

            await limit(_http(path), None, send)

        tasks = [asyncio.create_task(call(i)) for i in range(3)]
        tasks.append(asyncio.create_task(call(3, "/healthz")))  # probes pass
        await asyncio.sleep(0.01)
        assert sent[2][0]["status"] == 503 and not sent[0]  # refused before the others end
        release.set()
        await asyncio.gather(*tasks)
        return sent

    sent = asyncio.run(scenario())
    assert [s[0]["status"] for s in sent] == [200, 200, 503, 200]
    headers = dict(sent[2][0]["headers"])
    assert headers[b"retry-after"] == b"1" and headers[b"retry-after-ms"] == b"1000"
    body = json.loads(sent[2][1]["body"])
    assert body["error"] == "overloaded"
    assert body["request_id"] == headers[b"x-request-id"].decode()
    assert limit.in_flight == 0 and limit.refused == 1


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_adaptive_limit_shrinks_on_queueing_and_grows_back_while_in_use() -> None:
    clock = FakeClock()
    limit = AdaptiveLimit(128, floor=8, initial=32, target=0.5, clock=clock)
    assert limit.value == 32
    limit.on_answer(0.9, in_flight=32)  # queued past half the budget: back off
    assert limit.value == 24
    limit.on_answer(3.0, in_flight=24)  # the same queue, seen again at once: no second cut
    assert limit.value == 24
    for _ in range(20):  # a persistent queue: cut once per cooldown, never below the floor
        clock.now += 0.2
        limit.on_answer(1.5, in_flight=limit.value)
    assert limit.value == 8
    for _ in range(200):  # short queues while the limit is used: it grows again
        limit.on_answer(0.1, in_flight=limit.value)
    assert 20 < limit.value < 32
    before = limit.limit
    for _ in range(100):  # short queues but the limit unused (light load): it stays
        limit.on_answer(0.0, in_flight=1)
    assert limit.limit == before
    for _ in range(100_000):  # never above the ceiling
        limit.on_answer(0.0, in_flight=limit.value)
    assert limit.value == 128
    assert queue_pressure(125.0, 250.0) == "0.500" and queue_pressure(-3.0, 250.0) == "0.000"


def test_in_flight_limit_follows_the_pressure_the_ingress_reports_and_hides_it() -> None:
    pressure = {"value": b"2.0"}

    async def app(scope, receive, send):  # type: ignore[no-untyped-def]
        headers = [(QUEUE_PRESSURE_HEADER, pressure["value"]), (b"content-type", b"x")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b"{}"})

    clock = FakeClock()
    limit = InFlightLimit(app, max_in_flight=64, clock=clock)
    sent: list[dict] = []

    async def send(message: dict) -> None:
        sent.append(message)

    start = limit.limit
    for _ in range(5):
        clock.now += 1.0
        asyncio.run(limit(_http(), None, send))
    assert limit.limit < start  # the ingress said its queue was long: fewer let in
    assert all(k != QUEUE_PRESSURE_HEADER for m in sent if "headers" in m for k, _ in m["headers"])
    assert limit.in_flight == 0


def test_front_limit_follows_the_ingress_config() -> None:
    from recsys.config import AppConfig, AutoscalingConfig, IngressConfig

    config = AppConfig(
        ingress=IngressConfig(
            group_max_size=16,
            groups_in_flight=2,
            autoscaling=AutoscalingConfig(min_replicas=2, max_replicas=2),
        )
    )
    assert front_limit(config) == 2 * (2 * 16) * 2
    assert limit_from_env({"RECSYS_MAX_IN_FLIGHT": "7"}) == 7
    assert limit_from_env({}) == front_limit(AppConfig())


def test_retry_sends_an_idempotent_request_again_after_serves_plain_500() -> None:
    calls: list[bytes] = []

    async def flaky(scope, receive, send):  # type: ignore[no-untyped-def]
        message = await receive()
        calls.append(message["body"])
        status, ctype = (500, b"text/plain") if len(calls) == 1 else (200, b"application/json")
        await send(
            {"type": "http.response.start", "status": status, "headers": [(b"content-type", ctype)]}
        )
        await send({"type": "http.response.body", "body": b"Internal Server Error"})

    async def run(scope: dict, retries: int = 2) -> list[dict]:
        sent: list[dict] = []
        calls.clear()
        incoming = [{"type": "http.request", "body": b'{"query": "x"}', "more_body": False}]

        async def receive() -> dict:
            return incoming.pop(0) if incoming else {"type": "http.disconnect"}

        async def send(message: dict) -> None:
            sent.append(message)

        await RetryLostRequest(flaky, retries=retries, delay_s=0.0)(scope, receive, send)
        return sent

    sent = asyncio.run(run(_http()))
    assert sent[0]["status"] == 200 and calls == [b'{"query": "x"}'] * 2
    sent = asyncio.run(run(_http("/v1/other")))  # not known to be idempotent: not retried
    assert sent[0]["status"] == 500 and len(calls) == 1
    sent = asyncio.run(run(_http(), retries=0))
    assert sent[0]["status"] == 500


def test_a_replica_lost_by_raising_is_retried_then_answered_as_json() -> None:
    """Serve's proxy can also raise, or answer nothing, when the ingress replica dies under it
    (uvicorn then writes a plain 500 outside every middleware): retried like the plain 500,
    and when every try failed the client still gets the JSON error body."""
    calls: list[int] = []

    def dying(fail_times: int, silent: bool):  # type: ignore[no-untyped-def]
        async def app(scope, receive, send):  # type: ignore[no-untyped-def]
            await receive()
            calls.append(1)
            if len(calls) <= fail_times:
                if silent:  # what Serve's proxy does: no answer at all (uvicorn writes a 500)
                    return
                raise RuntimeError("ActorDiedError: the replica died")
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"{}"})

        return app

    def run(fail_times: int, silent: bool = False) -> list[dict]:
        calls.clear()
        sent: list[dict] = []
        incoming = [{"type": "http.request", "body": b"{}", "more_body": False}]

        async def receive() -> dict:
            return incoming.pop(0) if incoming else {"type": "http.disconnect"}

        async def send(message: dict) -> None:
            sent.append(message)

        front = ServeErrorsAsJSON(
            RetryLostRequest(dying(fail_times, silent), retries=2, delay_s=0.0)
        )
        asyncio.run(front(_http(), receive, send))
        return sent

    sent = run(fail_times=2)
    assert sent[0]["status"] == 200 and len(calls) == 3
    sent = run(fail_times=5)  # every try lost: a JSON 500, not uvicorn's plain text
    assert sent[0]["status"] == 500 and len(calls) == 3
    body = json.loads(sent[1]["body"])
    assert body["error"] == "internal_error" and "RuntimeError" in body["detail"]
    assert body["request_id"]
    for silent_failures, status in ((2, 200), (5, 500)):  # no answer at all: the same
        sent = run(fail_times=silent_failures, silent=True)
        assert sent[0]["status"] == status and len(calls) == 3
    assert json.loads(sent[1]["body"])["error"] == "internal_error"
