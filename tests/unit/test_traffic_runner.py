"""The open-loop sender against a tiny local HTTP server: every scheduled request gets exactly
one recorded outcome (answers, 503s, timeouts, refused connections, an interrupted run), and
slow answers never delay later sends."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pandas as pd
import pytest

from recsys.traffic.config import ConstantShape, TrafficConfig
from recsys.traffic.runner import (
    OUTCOMES,
    SENT_OUTCOMES,
    read_records,
    run,
    run_async,
    write_records,
)
from recsys.traffic.schedule import SCHEDULE_COLUMNS

SLOW_S = 1.5
TIMEOUT_S = 0.5


class Handler(BaseHTTPRequestHandler):
    """``user_id`` picks the behaviour: ``slow`` answers after SLOW_S, ``busy`` gets a 503,
    ``gone`` a 404; everything else a ranked 200 (degraded for ``U-degraded``)."""

    def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
        length = int(self.headers.get("content-length", 0))
        body = json.loads(self.rfile.read(length) or b"{}")
        self.server.seen.append(self.headers.get("x-request-id"))  # type: ignore[attr-defined]
        user = body.get("user_id", "")
        if user == "slow":
            time.sleep(SLOW_S)
        if user == "busy":
            self._json(
                503,
                {"error": "overloaded", "detail": "retry", "request_id": "x"},
                {"Retry-After": "1"},
            )
        elif user == "gone":
            self._json(404, {"error": "unknown_user", "detail": "no such user", "request_id": "x"})
        else:
            degraded = user == "U-degraded"
            self._json(
                200,
                {
                    "variant": "control",
                    "degraded": degraded,
                    "degraded_reason": "ranker_deadline" if degraded else None,
                    "items": [],
                    "timings_ms": {"total": 1.5},
                },
            )

    def do_GET(self) -> None:  # noqa: N802
        self.server.seen.append(self.headers.get("x-request-id"))  # type: ignore[attr-defined]
        self._json(200, {"variant": "control", "degraded": False, "timings_ms": {"total": 0.5}})

    def _json(self, status: int, body: dict, headers: dict[str, str] | None = None) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: object) -> None:
        pass


@dataclass
class Server:
    url: str
    seen: list[str]
    """X-Request-ID of every request the server received."""


class SlowHandler(Handler):
    """Every answer after 0.3 s (a replica with a queue)."""

    def do_POST(self) -> None:  # noqa: N802
        time.sleep(0.3)
        super().do_POST()


@contextlib.contextmanager
def serving(handler: type[BaseHTTPRequestHandler] = Handler) -> Iterator[Server]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    httpd.daemon_threads = True
    httpd.seen = []  # type: ignore[attr-defined]
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield Server(f"http://127.0.0.1:{httpd.server_address[1]}", httpd.seen)  # type: ignore[attr-defined]
    finally:
        httpd.shutdown()
        httpd.server_close()


@pytest.fixture()
def server() -> Iterator[Server]:
    with serving() as running:
        yield running


def schedule_of(users: list[str | None], spacing_s: float = 0.02) -> pd.DataFrame:
    """One request per entry, ``spacing_s`` apart: POST /v1/recommend for a user, GET similar
    for None."""
    rows = []
    for i, user in enumerate(users):
        if user is None:
            rows.append(
                (i, i * spacing_s, "similar", "GET", "/v1/items/I0000001/similar?k=3", None)
            )
        else:
            rows.append(
                (
                    i,
                    i * spacing_s,
                    "recommend",
                    "POST",
                    "/v1/recommend",
                    json.dumps({"user_id": user}),
                )
            )
    return pd.DataFrame(rows, columns=SCHEDULE_COLUMNS)


def config_for(target: str, timeout_s: float = TIMEOUT_S) -> TrafficConfig:
    return TrafficConfig(
        target=target, shape=ConstantShape(rate=1), duration_s=1, timeout_s=timeout_s
    )


def test_every_scheduled_request_has_exactly_one_outcome(server: Server, tmp_path: Path) -> None:
    users: list[str | None] = [
        "U1",
        "slow",
        "busy",
        "U2",
        None,
        "gone",
        "slow",
        "U-degraded",
        "U3",
        "busy",
    ] * 3
    schedule = schedule_of(users)
    result = run(schedule, config_for(server.url), progress=False)
    r = result.records
    assert len(r) == len(schedule) and r["id"].tolist() == schedule["id"].tolist()
    assert r["outcome"].notna().all() and r["outcome"].isin(OUTCOMES).all()
    assert r["outcome"].isin(SENT_OUTCOMES).all() and r["sent_s"].notna().all()
    by_user = pd.Series(users)
    assert (r.loc[by_user == "slow", "outcome"] == "timeout").all()
    assert r.loc[by_user == "slow", "error"].str.contains("no answer within").all()
    # a timeout is recorded when the client gives up, not when the server finally answers
    assert (
        r.loc[by_user == "slow", "response_ms"]
        .between(TIMEOUT_S * 1000 - 50, SLOW_S * 1000 - 100)
        .all()
    )
    busy = r[by_user == "busy"]
    assert (busy["outcome"] == "http_error").all() and (busy["status"] == 503).all()
    assert (busy["error"] == "overloaded").all()
    assert (r.loc[by_user == "gone", "status"] == 404).all()
    ok = r[by_user.isin(["U1", "U2", "U3", "U-degraded"]) | by_user.isna()]
    assert (ok["outcome"] == "ok").all() and (ok["variant"] == "control").all()
    assert ok.loc[by_user == "U-degraded", "degraded"].all()
    assert ok.loc[by_user == "U-degraded", "degraded_reason"].eq("ranker_deadline").all()
    assert not ok.loc[by_user == "U1", "degraded"].any()
    assert (ok["server_total_ms"] > 0).all()
    # latency counts from the scheduled time; the whole run is bounded
    assert (r["latency_ms"] >= r["response_ms"] - 1e-6).all()
    assert result.wall_s < schedule["scheduled_s"].max() + TIMEOUT_S + 1.0
    assert result.client_cpu_s > 0

    path = tmp_path / "requests.parquet"
    write_records(result, path, config_for(server.url))
    back, facts = read_records(path)
    assert len(back) == len(r) and float(facts["t0_unix"]) == pytest.approx(result.t0_unix)
    assert TrafficConfig.model_validate_json(facts["config"]).timeout_s == TIMEOUT_S


def test_slow_answers_do_not_delay_later_sends(server: Server) -> None:
    users = ["slow"] * 20 + ["U1"] * 20  # 20 requests stuck for SLOW_S, then fast ones
    schedule = schedule_of(users, spacing_s=0.01)
    r = run(schedule, config_for(server.url, timeout_s=2.0), progress=False).records
    # open loop: each request leaves at its scheduled time, whatever is still in flight
    assert r["send_lag_ms"].max() < 150, r["send_lag_ms"].describe()
    fast = r.iloc[20:]
    assert (fast["outcome"] == "ok").all()
    assert (fast["sent_s"] < r.iloc[:20]["done_s"].min()).all()


def test_refused_connections_are_recorded_as_errors() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    r = run(
        schedule_of(["U1", None, "U2"]), config_for(f"http://127.0.0.1:{port}"), progress=False
    ).records
    assert (r["outcome"] == "error").all()
    assert r["error"].str.contains("ConnectError").all()


def test_stopping_a_run_still_gives_every_request_an_outcome(server: Server) -> None:
    schedule = schedule_of(["slow"] * 5 + ["U1"] * 200, spacing_s=0.01)

    async def main() -> pd.DataFrame:
        stop = asyncio.Event()
        asyncio.get_running_loop().call_later(0.6, stop.set)
        result = await run_async(
            schedule, config_for(server.url, timeout_s=5.0), progress=False, stop=stop
        )
        return result.records

    r = asyncio.run(main())
    counts = r["outcome"].value_counts()
    assert len(r) == len(schedule) and r["outcome"].notna().all()
    assert counts.get("cancelled", 0) >= 5  # the slow ones were in flight
    assert counts.get("not_sent", 0) > 100  # most were not due yet
    assert r.loc[r["outcome"] == "not_sent", "sent_s"].isna().all()
    assert r.loc[r["outcome"] != "not_sent", "sent_s"].notna().all()


def test_request_ids_reach_the_server(server: Server) -> None:
    run(schedule_of(["U1", None, "U2"]), config_for(server.url), progress=False)
    assert sorted(server.seen) == ["load-0", "load-1", "load-2"]


def test_several_targets_share_the_load_by_requests_in_flight() -> None:
    with serving() as a, serving() as b:
        config = TrafficConfig(
            target=[a.url, b.url + "/"], shape=ConstantShape(rate=1), duration_s=1
        )
        r = run(schedule_of(["U1"] * 40, spacing_s=0.01), config, progress=False).records
        assert (r["outcome"] == "ok").all()
        assert len(a.seen) + len(b.seen) == 40 and min(len(a.seen), len(b.seen)) >= 15
    # a replica that holds its requests longer gets fewer new ones (round robin would give
    # both 20)
    with serving(SlowHandler) as slow, serving() as fast:
        config = TrafficConfig(
            target=[slow.url, fast.url], shape=ConstantShape(rate=1), duration_s=1
        )
        r = run(schedule_of(["U1"] * 40, spacing_s=0.01), config, progress=False).records
        assert (r["outcome"] == "ok").all()
        assert len(fast.seen) > 2 * len(slow.seen) > 0
