"""``recsys serve``: a local Ray instance plus the app, in the foreground, until a signal.

The banner (the URLs to call) is printed only once ``/readyz`` answers 200: every stage has
warmed up, so the first request after it is served like any other. Before it, one log line
per stage gives the phases of its cold start, and one line the app's (Ray start, deploy).
"""

from __future__ import annotations

import json
import math
import os
import signal
import sys
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

from recsys.config import AppConfig, BuildConfig, with_layout
from recsys.warmup import cold_start_line

# Serve settings of a local instance (the embedded default, the tests and the benchmark's Serve
# host), each applied unless already set in the environment. Ray reads them at import time in
# the controller, proxy and replicas, which inherit this process's environment.
LOCAL_SERVE_ENV = {
    # Serve's proxy must report ready within 5 s by default; a loaded 2-core machine can miss
    # that and the controller then restarts the proxy in a loop. Generous limits.
    "RAY_SERVE_PROXY_READY_CHECK_TIMEOUT_S": "60",
    "RAY_SERVE_PROXY_HEALTH_CHECK_TIMEOUT_S": "30",
    # Throughput-optimised Serve: gRPC between replicas, user code and router on each
    # replica's event loop, buffered request-path logs, GC frozen after start-up, and direct
    # ingress: the ingress replica serves HTTP itself on a port of its own (30000 up, see
    # direct_ingress_port) with no proxy hop, while Serve's proxy keeps serving the configured
    # port. On 2 cores this was the largest win measured (results/bench/report.md; variants
    # `proxy` and `classic` are the same app through the proxy and with Serve's defaults).
    "RAY_SERVE_THROUGHPUT_OPTIMIZED": "1",
    "RAY_SERVE_ENABLE_DIRECT_INGRESS": "1",
    # a stopping ingress replica waits this long for load balancers to drop it (default 30 s;
    # nothing balances in front of a local instance)
    "RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S": "1",
    # Around Serve's own HTTP handling, in the proxy and the direct-ingress server: one valid
    # X-Request-ID per request (recsys.request_ids), the arrival stamp the deadline counts
    # from, and Serve's plain-text errors as the API's JSON error body (recsys.admission)
    "RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH": "recsys.admission:proxy_middlewares",
}


def apply_local_serve_env(config: AppConfig | None = None) -> None:
    """Put :data:`LOCAL_SERVE_ENV` into this process's environment (values already set win),
    and with ``config`` the front door's in-flight limit derived from it
    (``recsys.admission.front_limit``). Call it before Ray is imported: Serve reads these
    once, at import, in every process."""
    from recsys.admission import MAX_IN_FLIGHT_ENV, front_limit

    for name, value in LOCAL_SERVE_ENV.items():
        os.environ.setdefault(name, value)
    if config is not None:
        os.environ.setdefault(MAX_IN_FLIGHT_ENV, str(front_limit(config)))


def direct_ingress_enabled(env: Mapping[str, str]) -> bool:
    """Whether a Ray instance started with ``env`` serves HTTP from its ingress replicas (Ray
    2.60's rule: on with ``RAY_SERVE_ENABLE_DIRECT_INGRESS=1``, and by default in
    throughput-optimised mode). Read from the environment, not from Serve's constants, which a
    process fixes when it first imports Ray."""
    truthy = ("1", "true", "True")
    default = "1" if env.get("RAY_SERVE_THROUGHPUT_OPTIMIZED", "0") in truthy else "0"
    return env.get("RAY_SERVE_ENABLE_DIRECT_INGRESS", default) in truthy


def direct_ingress_ports(
    app_name: str, proxy_port: int, timeout_s: float = 60.0, min_count: int = 1
) -> list[int]:
    """The HTTP ports of the app's ingress replicas when direct ingress is on (one per
    replica, sorted; empty when off), from the Serve controller's target groups (what Serve's
    own HAProxy mode reads; a private API in Ray 2.60). Waits until at least ``min_count``
    replicas are listed. Call it in the process that started Serve, once the app is running;
    the proxy (on ``proxy_port``) is listed while no ingress replica runs, and skipped."""
    import ray
    from ray.serve.context import _get_global_client

    if not direct_ingress_enabled(os.environ):
        return []
    controller = _get_global_client()._controller
    deadline = time.monotonic() + timeout_s
    ports: list[int] = []
    while time.monotonic() < deadline:
        groups = ray.get(controller.get_target_groups.remote(app_name=app_name))
        ports = sorted(
            {
                int(target.port)
                for group in groups
                if str(group.protocol).upper().endswith("HTTP")
                for target in group.targets
                if target.port != proxy_port
            }
        )
        if len(ports) >= max(1, min_count):
            return ports
        time.sleep(0.5)
    raise RuntimeError(
        f"direct ingress is on but app {app_name!r} lists {len(ports)} HTTP targets "
        f"(waited for {max(1, min_count)})"
    )


def starting_ingress_replicas(config: AppConfig) -> int:
    """Ingress replicas a freshly deployed app runs (what :func:`direct_ingress_ports` waits
    to see listed)."""
    replicas = config.ingress.autoscaling
    return max(1, replicas.initial_replicas or replicas.min_replicas)


def direct_ingress_port(app_name: str, proxy_port: int, timeout_s: float = 60.0) -> int | None:
    """The first of :func:`direct_ingress_ports` (None when direct ingress is off)."""
    ports = direct_ingress_ports(app_name, proxy_port, timeout_s)
    return ports[0] if ports else None


def wait_ready(base: str, timeout_s: float = 600.0) -> dict:
    """``GET {base}/readyz`` until it answers 200; its body. Raises ``TimeoutError`` with the
    last answer when the app is not ready within ``timeout_s``."""
    import urllib.error
    import urllib.request

    deadline = time.monotonic() + timeout_s
    last: object = None
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{base}/readyz", timeout=10) as response:
                return dict(json.loads(response.read()))
        except urllib.error.HTTPError as exc:  # 503 not_ready (or the proxy's 503/404)
            last = f"{exc.code} {exc.read()[:500]!r}"
        except (OSError, ValueError) as exc:
            last = exc
        time.sleep(0.5)
    raise TimeoutError(f"{base}/readyz did not answer 200 within {timeout_s:g} s: {last}")


def cold_start_report(ready: dict, app_phases: dict[str, float]) -> str:
    """One line per stage (from ``/readyz``) and one for the app as a whole."""
    lines = [
        cold_start_line(name, stage.get("cold_start_s", {}))
        for name, stage in ready.get("stages", {}).items()
    ]
    lines.append(cold_start_line("app", app_phases))
    return "".join(f"[recsys] {line}\n" for line in lines)


def ensure_local_artifacts(uri: str) -> None:
    """Build the default demo artifact at a local ``uri`` that does not exist yet."""
    if "://" in uri and not uri.startswith("file://"):
        return
    path = Path(uri.removeprefix("file://"))
    if (path / "manifest.json").is_file():
        return
    from recsys.build import build_artifacts

    print(
        f"[recsys] no artifact at {path}: building the demo catalog (a few minutes)...", flush=True
    )
    build_artifacts(BuildConfig(), path, progress=True, force=path.exists())


def load_app_config(
    config_path: Path | None,
    artifacts: str | None,
    tp: int | None,
    topology: Literal["split", "fused"] | None = None,
) -> AppConfig:
    """The app to serve: the file's config, or without one the local profile
    (``deployments.profiles.local_profile``: what the benchmark and the chaos drills measure),
    with the command line's overrides; ``topology`` sets the layout
    (``recsys.config.with_layout``)."""
    from deployments.profiles import local_profile

    config = AppConfig.from_file(config_path) if config_path else local_profile()
    if artifacts is not None:
        config = config.model_copy(update={"artifacts": artifacts})
    if tp is not None:
        # through the split layout, so that a model-parallel ranker leaves a fused ingress
        # with its CPUs (with_layout keeps the ranker apart when tp > 1)
        layout = config.topology.layout
        data = with_layout(config, "split").model_dump()
        data["topology"]["tp"] = tp
        config = with_layout(AppConfig.model_validate(data), layout)
    if topology is not None:
        config = with_layout(config, topology)
    return config


def logical_cpus(config: AppConfig) -> float:
    """Logical CPUs the app's deployments ask for at their most replicas (a ranker replica
    once per rank and per A/B variant), plus one more of the largest replica for a rollout's
    surge: what the local Ray instance must offer so that every replica can be placed."""
    topology = config.topology
    replicas = [(config.ingress.num_cpus, config.ingress.autoscaling.max_replicas)]
    if not topology.in_ingress("encoder"):
        stage = config.query_encoder
        replicas.append((stage.num_cpus, stage.autoscaling.max_replicas))
    if not topology.in_ingress("retriever"):
        stage = config.retriever
        replicas.append((stage.num_cpus, stage.autoscaling.max_replicas))
    if not topology.in_ingress("ranker"):
        stage = config.ranker
        count = stage.autoscaling.max_replicas * len(config.routing.variants)
        replicas.append((stage.num_cpus * topology.tp, count))
    return sum(cpus * n for cpus, n in replicas) + max(cpus for cpus, _ in replicas)


def serve_foreground(
    artifacts: str | None,
    port: int,
    host: str,
    config_path: Path | None,
    tp: int | None,
    num_cpus: float | None,
    topology: Literal["split", "fused"] | None = None,
) -> int:
    config = load_app_config(config_path, artifacts, tp, topology)
    ensure_local_artifacts(config.artifacts)

    apply_local_serve_env(config)  # before Ray is imported

    import ray
    from ray import serve

    from deployments.app import build_app

    stop = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        print(f"\n[recsys] {signal.Signals(signum).name}: shutting down...", flush=True)
        stop.set()

    # logical CPUs (scheduling only): at least the machine's, and enough to place every replica
    cpus = num_cpus
    if cpus is None:
        cpus = max(2, os.cpu_count() or 2, math.ceil(logical_cpus(config)))
    app_phases: dict[str, float] = {}
    started = time.perf_counter()
    # address="local": always a new instance, never one found through /tmp/ray or RAY_ADDRESS
    ray.init(address="local", num_cpus=cpus, include_dashboard=False, configure_logging=False)
    app_phases["ray_start"] = time.perf_counter() - started
    # after ray.init, which installs handlers of its own that would exit without serve.shutdown
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    try:
        started = time.perf_counter()
        serve.start(http_options={"host": host, "port": port})
        # returns once every replica has initialised, and so warmed up
        serve.run(build_app(config), name="recsys", route_prefix="/", blocking=False)
        app_phases["deploy"] = time.perf_counter() - started
        shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host
        base = f"http://{shown}:{port}"
        direct_ports = direct_ingress_ports(
            "recsys", port, min_count=starting_ingress_replicas(config)
        )
        direct = ", ".join(f"http://{shown}:{p}" for p in direct_ports) or None
        started = time.perf_counter()
        ready = wait_ready(base)
        app_phases["ready_check"] = time.perf_counter() - started
        print(cold_start_report(ready, app_phases), end="", flush=True)
        print(
            f"[recsys] ready: every stage warm, artifact {ready.get('version')}\n"
            f"[recsys] serving artifact {config.artifacts} on {base} (OpenAPI: {base}/docs), "
            f"topology {config.topology.layout}\n"
            + (
                f"[recsys] the same API without the proxy hop (direct ingress, fastest): {direct}\n"
                "[recsys]   (each ingress replica's own port, to balance over as a load "
                "balancer would; a port changes when Serve replaces its replica, after a "
                f"crash or a rollout; {base} follows the ingress)\n"
                if direct
                else ""
            )
            + f"[recsys] try:\n"
            f"  curl -s {base}/v1/search -H 'content-type: application/json' "
            f'-d \'{{"query": "waterproof hiking boots", "k": 5}}\'\n'
            f"  curl -s {base}/v1/recommend -H 'content-type: application/json' "
            f'-d \'{{"user_id": "U0000001", "k": 5}}\'\n'
            f"  curl -s '{base}/v1/items/I0000001/similar?k=5'\n"
            f"[recsys] Ctrl-C stops it.",
            flush=True,
        )
        while not stop.wait(0.5):
            pass
    finally:
        try:
            serve.shutdown()
        finally:
            ray.shutdown()
    print("[recsys] stopped.", flush=True)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(serve_foreground(None, 8000, "127.0.0.1", None, None, None))
