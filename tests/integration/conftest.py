"""Integration tier: a real local Ray instance per module, the real app, real HTTP on loopback."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from recsys.config import (
    AdmissionConfig,
    AppConfig,
    AutoscalingConfig,
    IngressConfig,
    RoutingConfig,
    StageConfig,
)

pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def small_stage(**overrides: object) -> StageConfig:
    """One replica, small fractional CPU: what fits next to the tests on 2 cores."""
    base: dict[str, object] = {
        "num_cpus": 0.1,
        "max_batch_size": 8,
        "batch_wait_timeout_s": 0.002,
        "autoscaling": AutoscalingConfig(min_replicas=1, max_replicas=1),
    }
    base.update(overrides)
    return StageConfig.model_validate(base)


def app_config(artifacts: Path, **overrides: object) -> AppConfig:
    """Test app: generous deadline (CI machines are slow and shared) unless a test tightens it;
    the ingress coalesces concurrent requests and caches query vectors as the local profile
    does."""
    data: dict[str, object] = {
        "artifacts": str(artifacts),
        "routing": RoutingConfig(deadline_ms=20_000),
        # no brownout: the tests compare ranked answers, and on a slow shared machine a burst
        # queues past 125 ms (brownout has its own tests in tests/unit)
        "ingress": IngressConfig(
            group_max_size=8,
            groups_in_flight=2,
            query_cache_size=64,
            admission=AdmissionConfig(brownout_queue_ms=None),
        ),
        "query_encoder": small_stage(),
        "retriever": small_stage(),
        "ranker": small_stage(),
    }
    data.update(overrides)
    return AppConfig.model_validate(data)


class ServeApp:
    """A running Serve app and an HTTP client for it."""

    def __init__(self, port: int, metrics_port: int):
        self.port = port
        self.base = f"http://127.0.0.1:{port}"
        self.metrics_url = f"http://127.0.0.1:{metrics_port}/metrics"
        self.client = httpx.Client(base_url=self.base, timeout=60)

    def deploy(self, config: AppConfig, name: str = "recsys") -> None:
        from ray import serve

        from deployments.app import build_app

        serve.run(build_app(config), name=name, route_prefix="/", blocking=False)
        self.wait_ready()

    def wait_ready(self, timeout_s: float = 240) -> None:
        deadline = time.monotonic() + timeout_s
        last = None
        while time.monotonic() < deadline:
            try:
                r = self.client.post("/v1/search", json={"query": "warm up", "k": 1})
                last = r.status_code
                if r.status_code == 200:
                    return
            except httpx.HTTPError as exc:
                last = exc
            time.sleep(1)
        raise TimeoutError(f"app at {self.base} not ready after {timeout_s}s (last: {last})")

    def search(self, **body: object) -> httpx.Response:
        return self.client.post("/v1/search", json=body)


@pytest.fixture(scope="module")
def serve_instance() -> Iterator[ServeApp]:
    """A local Ray instance with Serve's HTTP proxy on a free loopback port, torn down after
    the module through its own handles."""
    import ray
    from ray import serve

    port, metrics_port = free_port(), free_port()
    ray.init(
        address="local",  # a new instance, never a running cluster found via /tmp/ray
        num_cpus=4,
        include_dashboard=False,
        configure_logging=False,
        _metrics_export_port=metrics_port,
    )
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        app = ServeApp(port, metrics_port)
        yield app
        app.client.close()
    finally:
        try:
            serve.shutdown()
        finally:
            ray.shutdown()
