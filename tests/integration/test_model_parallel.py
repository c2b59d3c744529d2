"""The model-parallel ranker served with tp=2: full DAG answers, and a killed rank is survived."""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time
from pathlib import Path

import httpx
import pytest

from recsys.config import RoutingConfig, TopologyConfig
from tests.integration.conftest import ServeApp, app_config, small_stage

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def app(serve_instance: ServeApp, tiny_artifact: Path) -> ServeApp:
    config = app_config(
        tiny_artifact,
        topology=TopologyConfig(tp=2, timeout_s=10),
        routing=RoutingConfig(deadline_ms=5_000),
        ranker=small_stage(health_check_period_s=2),
    )
    serve_instance.deploy(config)
    return serve_instance


_HANDLE_LOOP: asyncio.AbstractEventLoop | None = None


def gang_pids() -> list[int]:
    """Asks the ranker replica through a handle living on one background event loop: in
    throughput-optimised mode (deployments.serve_main.LOCAL_SERVE_ENV) a handle's router runs
    on the caller's loop, so blocking ``.result()`` from plain sync code is not available, and
    the handle stays bound to the loop it first ran on."""
    from ray import serve

    global _HANDLE_LOOP
    if _HANDLE_LOOP is None:
        _HANDLE_LOOP = asyncio.new_event_loop()
        threading.Thread(target=_HANDLE_LOOP.run_forever, daemon=True).start()

    async def ask() -> list[int]:
        handle = serve.get_deployment_handle("Ranker", app_name="recsys")
        return await handle.gang_pids.remote()

    return asyncio.run_coroutine_threadsafe(ask(), _HANDLE_LOOP).result(timeout=30)


def test_tp2_search_runs_through_the_whole_dag(app: ServeApp) -> None:
    r = app.search(query="leather wallet", k=5)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["degraded"] is False and len(body["items"]) == 5
    assert app.client.get("/v1/version").json()["tp"] == 2
    assert len(gang_pids()) == 1


def test_killing_a_rank_replaces_the_gang_and_no_request_hangs(app: ServeApp) -> None:
    (victim,) = gang_pids()
    outcomes: list[tuple[float, int, bool | None]] = []
    stop = threading.Event()

    def light_load() -> None:
        with httpx.Client(base_url=app.base, timeout=30) as client:
            while not stop.is_set():
                t = time.monotonic()
                try:
                    r = client.post("/v1/search", json={"query": "running shoes", "k": 3})
                    degraded = r.json().get("degraded") if r.status_code == 200 else None
                    outcomes.append((time.monotonic() - t, r.status_code, degraded))
                except httpx.TimeoutException:
                    outcomes.append((time.monotonic() - t, -1, None))
                time.sleep(0.2)

    sender = threading.Thread(target=light_load, daemon=True)
    sender.start()
    time.sleep(2)
    os.kill(victim, signal.SIGKILL)
    recovered_at = None
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        time.sleep(2)
        try:
            pids = gang_pids()
        except Exception:  # the replica is being replaced
            continue
        if pids and victim not in pids and outcomes and outcomes[-1][1:] == (200, False):
            recovered_at = time.monotonic()
            break
    time.sleep(2)
    stop.set()
    sender.join(60)
    assert recovered_at is not None, f"gang not replaced; last outcomes {outcomes[-5:]}"
    statuses = {status for _, status, _ in outcomes}
    assert -1 not in statuses, "a request hung until the client timeout"
    assert statuses <= {200, 503}, statuses
    assert any(d is True for _, s, d in outcomes if s == 200), "expected degraded answers"
    assert max(latency for latency, _, _ in outcomes) < 10
