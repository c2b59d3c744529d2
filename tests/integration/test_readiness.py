"""Ready means ready: nothing is routed to a replica before it is warm.

* ``recsys serve`` (with and without a model-parallel ranker) prints its banner only once the
  app is ready, and the first requests after it are answered in time, ranked (not degraded);
  ``/readyz`` reports every stage warm with its cold-start phases.
* A replica that autoscaling adds under load warms up before Serve routes to it: no request
  of the load gets a 503 or a degraded answer while it starts and takes its first requests.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from recsys.config import AdmissionConfig, AutoscalingConfig, IngressConfig, RoutingConfig
from tests.integration.conftest import ServeApp, app_config, free_port, small_stage

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
BANNER_END = "Ctrl-C stops it."

# One request of each kind the API serves, cycled: anonymous and personalised search,
# recommendations, similar items.
MIXED_REQUESTS: list[tuple[str, str, dict | None]] = [
    ("POST", "/v1/search", {"query": "waterproof hiking boots", "k": 5}),
    ("POST", "/v1/search", {"query": "desk lamp", "user_id": "U0000001", "k": 5}),
    ("POST", "/v1/recommend", {"user_id": "U0000002", "k": 5}),
    ("GET", "/v1/items/I0000001/similar?k=5", None),
    ("POST", "/v1/search", {"query": "wool socks", "user_id": "U0000003", "k": 10}),
]


class ServeProcess:
    """``recsys serve`` in the background; its output collected line by line."""

    def __init__(self, args: list[str]):
        env = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "recsys.cli", "serve", *args],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.lines: list[str] = []
        self.banner = threading.Event()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))
            if BANNER_END in line:
                self.banner.set()

    def wait_banner(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while not self.banner.wait(1):
            tail = "\n".join(self.lines[-40:])
            assert self.proc.poll() is None, f"recsys serve exited:\n{tail}"
            assert time.monotonic() < deadline, f"no banner after {timeout_s}s:\n{tail}"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(90)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


@pytest.fixture
def serve_process() -> Iterator[list[ServeProcess]]:
    started: list[ServeProcess] = []
    yield started
    for proc in started:
        proc.stop()


def first_search_once_healthy(base: str, stop: threading.Event) -> list[httpx.Response]:
    """What a new user does: poll ``/healthz`` and search as soon as it answers 200."""
    out: list[httpx.Response] = []
    with httpx.Client(base_url=base, timeout=30) as client:
        while not stop.is_set():
            try:
                if client.get("/healthz").status_code == 200:
                    out.append(send(client, 0))
                    return out
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
    return out


def send(client: httpx.Client, i: int) -> httpx.Response:
    method, path, body = MIXED_REQUESTS[i % len(MIXED_REQUESTS)]
    return client.request(method, path, json=body)


@pytest.mark.parametrize("tp", [1, 2])
def test_first_requests_after_the_banner_are_answered_in_time(
    tp: int, tiny_artifact: Path, serve_process: list[ServeProcess]
) -> None:
    """The split topology (1 s deadline) with and without a model-parallel ranker: a search
    sent as soon as ``/healthz`` first answers, and the 50 requests sent right after the
    banner, all get a ranked 200 (a stage still starting or cold would give a 503 or a
    degraded answer)."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    args = ["--artifacts", str(tiny_artifact), "--port", str(port), "--tp", str(tp)]
    proc = ServeProcess([*args, "--topology", "split"])
    serve_process.append(proc)
    stop = threading.Event()
    first: list[httpx.Response] = []
    poller = threading.Thread(target=lambda: first.extend(first_search_once_healthy(base, stop)))
    poller.start()
    try:
        proc.wait_banner(timeout_s=480)
    finally:
        stop.set()
        poller.join(60)
    with httpx.Client(base_url=base, timeout=30) as client:
        answers = [*first, *(send(client, i) for i in range(50))]
        ready = client.get("/readyz")
    assert len(answers) == 51  # the one sent once healthy, and 50 after the banner
    failures = [(r.status_code, r.text[:300]) for r in answers if r.status_code != 200]
    assert not failures, failures
    degraded = [r.json()["degraded_reason"] for r in answers if r.json()["degraded"]]
    assert not degraded, degraded

    assert ready.status_code == 200, ready.text
    body = ready.json()
    assert body["ready"] is True
    stages = body["stages"]
    assert {"Ingress", "QueryEncoder", "Retriever", "Ranker"} <= set(stages)
    for name, stage in stages.items():
        assert stage["ready"] is True, (name, stage)
        assert stage["cold_start_s"], name
        assert all(s >= 0 for s in stage["cold_start_s"].values()), (name, stage)
    assert stages["Ranker"]["gang"] == {"tp": tp, "complete": True}
    # the log reports every stage's cold start before the banner
    print("\n".join(proc.lines))
    before_banner = "\n".join(
        proc.lines[: next(i for i, x in enumerate(proc.lines) if BANNER_END in x)]
    )
    for name in stages:
        assert f"cold start {name}" in before_banner, before_banner[-2000:]


def test_fused_topology_is_warm_when_the_banner_shows(
    tiny_artifact: Path, serve_process: list[ServeProcess]
) -> None:
    """``recsys serve`` with no config serves the local profile, fused: the stages inside the
    ingress replicas warm up before they take traffic too; the 50 requests right after the
    banner all get a ranked 200 within the default 1 s deadline, and ``/readyz`` reports the
    ingress with its in-process stages."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    args = ["--artifacts", str(tiny_artifact), "--port", str(port)]
    proc = ServeProcess(args)
    serve_process.append(proc)
    proc.wait_banner(timeout_s=480)
    with httpx.Client(base_url=base, timeout=30) as client:
        answers = [send(client, i) for i in range(50)]
        ready = client.get("/readyz")
    failures = [(r.status_code, r.text[:300]) for r in answers if r.status_code != 200]
    assert not failures, failures
    degraded = [r.json()["degraded_reason"] for r in answers if r.json()["degraded"]]
    assert not degraded, degraded
    assert ready.status_code == 200, ready.text
    body = ready.json()
    assert body["topology"] == "fused" and list(body["stages"]) == ["Ingress"]
    ingress = body["stages"]["Ingress"]
    assert ingress["ready"] is True and ingress["cold_start_s"]["warmup"] >= 0
    assert set(ingress["in_process"]) == {"encoder", "retriever", "ranker:control"}
    assert any("topology fused" in line for line in proc.lines)


async def load(base: str, stop: threading.Event, concurrency: int) -> list[tuple[int, dict]]:
    """Closed-loop load until ``stop``: (status, body) of every answer."""
    out: list[tuple[int, dict]] = []

    async def worker(client: httpx.AsyncClient, w: int) -> None:
        i = w
        while not stop.is_set():
            method, path, body = MIXED_REQUESTS[i % len(MIXED_REQUESTS)]
            r = await client.request(method, path, json=body)
            out.append((r.status_code, r.json()))
            i += concurrency

    async with httpx.AsyncClient(base_url=base, timeout=30) as client:
        await asyncio.gather(*(worker(client, w) for w in range(concurrency)))
    return out


def ranker_replicas() -> int:
    from ray import serve

    app = serve.status().applications["recsys"]
    return sum(app.deployments["Ranker"].replica_states.values())


def test_replica_added_by_autoscaling_is_warm_before_its_first_request(
    serve_instance: ServeApp, tiny_artifact: Path
) -> None:
    """Under steady load the ranker scales from one replica to two. The new replica warms
    up in its initialisation, so while it starts and takes its first requests every answer
    stays a ranked 200 within a 1 s deadline, and it reports itself warm."""
    config = app_config(
        tiny_artifact,
        routing=RoutingConfig(deadline_ms=1_000),
        # no brownout (as in app_config): what is under test is warmth, and a loaded machine
        # can queue a request past brownout_queue_ms while the new replica starts
        ingress=IngressConfig(
            group_max_size=1,
            groups_in_flight=64,
            admission=AdmissionConfig(brownout_queue_ms=None),
        ),
        ranker=small_stage(
            autoscaling=AutoscalingConfig(
                min_replicas=1,
                max_replicas=2,
                target_ongoing_requests=1,
                upscale_delay_s=1,
                downscale_delay_s=600,
                metrics_interval_s=0.5,
                look_back_period_s=2,
            )
        ),
    )
    serve_instance.deploy(config)
    assert ranker_replicas() == 1
    stop = threading.Event()
    results: list[list[tuple[int, dict]]] = []
    runner = threading.Thread(
        target=lambda: results.append(asyncio.run(load(serve_instance.base, stop, 4)))
    )
    runner.start()
    try:
        deadline = time.monotonic() + 180
        while ranker_replicas() < 2:
            assert time.monotonic() < deadline, "the ranker did not scale up"
            time.sleep(0.5)
        scaled_at = len(results[0]) if results else None
        seen: set[str] = set()
        deadline = time.monotonic() + 60
        while len(seen) < 2:  # until the new replica has answered (and so taken traffic)
            stats = serve_instance_readiness(serve_instance)
            assert all(r["ready"] for r in stats), stats
            seen |= {r["replica"] for r in stats if r["served"] > 0}
            assert time.monotonic() < deadline, f"new replica never served: {stats}"
            time.sleep(0.5)
        time.sleep(3)  # and a few more of its requests
    finally:
        stop.set()
        runner.join(60)
    answers = results[0]
    assert len(answers) > 50, (len(answers), scaled_at)
    failures = [(s, b) for s, b in answers if s != 200]
    assert not failures, failures[:5]
    degraded = [b["degraded_reason"] for _, b in answers if b["degraded"]]
    assert not degraded, degraded[:5]


def serve_instance_readiness(app: ServeApp) -> list[dict]:
    """Readiness reports of the ranker's replicas, from a few readiness calls (each lands on
    some replica). The handle lives on one background event loop: in throughput-optimised
    mode a handle's router runs on the caller's loop (see test_model_parallel.gang_pids)."""
    from ray import serve

    global _HANDLE_LOOP
    if _HANDLE_LOOP is None:
        _HANDLE_LOOP = asyncio.new_event_loop()
        threading.Thread(target=_HANDLE_LOOP.run_forever, daemon=True).start()

    async def ask() -> list[dict]:
        handle = serve.get_deployment_handle("Ranker", app_name="recsys")
        return list(await asyncio.gather(*(handle.readiness.remote() for _ in range(8))))

    return asyncio.run_coroutine_threadsafe(ask(), _HANDLE_LOOP).result(timeout=60)


_HANDLE_LOOP: asyncio.AbstractEventLoop | None = None
