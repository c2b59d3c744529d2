"""The systems as targets of the sweep: in this process, or a server reached over HTTP.

A target serves one schedule and says what it cost: the records, the stage timings of the
answers, and CPU by both methods (process tree; machine minus the benchmark process).
:class:`QuietGuard` wraps a target and repeats a rate that someone else's work overlapped.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd

from recsys.bench.batcher import InProcessServer
from recsys.bench.loadgen import send_schedule
from recsys.bench.processes import (
    foreign_ray_pids,
    read_machine_cpu,
    read_process_table,
    self_cpu_s,
    tree_usage,
)
from recsys.bench.servers import ServerProcess
from recsys.bench.sweep import PointRun
from recsys.traffic.config import TrafficConfig

Log = Callable[[str], None]


class InProcessTarget:
    """The in-process system: the pipeline behind the dynamic batcher, in this process."""

    def __init__(self, name: str, server: InProcessServer, nice: int):
        self.name = name
        self.server = server
        self.nice = nice

    def run(self, schedule: pd.DataFrame, traffic: TrafficConfig, progress: bool) -> PointRun:
        m0, s0 = read_machine_cpu(), self_cpu_s()
        run = self.server.serve_schedule(schedule, nice=self.nice, progress=progress)
        m1, s1 = read_machine_cpu(), self_cpu_s()
        client = (s1 - s0) - run.server_cpu_s
        sizes = np.asarray(run.batch_sizes or [0])
        return PointRun(
            records=run.records,
            timings=run.timings,
            wall_s=run.wall_s,
            client_cpu_s=run.client_cpu_s,
            server_cpu_s=run.server_cpu_s,
            machine_cpu_s=(m1.busy_s - m0.busy_s) - client,
            extra={
                "cpu_by_role": {"inprocess": run.server_cpu_s},
                "rss_bytes": _self_rss(),
                "batch_size_mean": float(sizes.mean()),
                "batch_size_max": int(sizes.max()),
                "foreign_ray": foreign_ray_pids(own_pids=()),
            },
        )

    def settle(self, seconds: float) -> None:
        time.sleep(seconds)


def _self_rss() -> int:
    stat = read_process_table().get(os.getpid())
    return stat.rss_bytes if stat is not None else 0


class HttpTarget:
    """A server subprocess reached over HTTP by the traffic runner."""

    def __init__(self, name: str, server: ServerProcess, nice: int):
        self.name = name
        self.server = server
        self.nice = nice
        self.idle_probe_ms = self._probe_ms()

    def _probe_ms(self, n: int = 5) -> float:
        import httpx

        times = []
        with httpx.Client(base_url=self.server.base_url, timeout=30) as client:
            for _ in range(n):
                started = time.perf_counter()
                try:
                    client.post("/v1/search", json={"query": "warm up", "k": 1})
                except httpx.HTTPError:
                    return math.inf
                times.append((time.perf_counter() - started) * 1000.0)
        return float(np.median(times))

    def run(self, schedule: pd.DataFrame, traffic: TrafficConfig, progress: bool) -> PointRun:
        traffic = traffic.model_copy(update={"target": self.server.urls})
        before = self.server.sample()
        m0, s0 = read_machine_cpu(), self_cpu_s()
        http = send_schedule(
            schedule, traffic, nice=self.nice, progress=progress, request_id_prefix="bench"
        )
        m1, s1 = read_machine_cpu(), self_cpu_s()
        after = self.server.sample()
        usage = tree_usage(before, after)
        return PointRun(
            records=http.records,
            timings=http.timings,
            wall_s=http.result.wall_s,
            client_cpu_s=http.result.client_cpu_s,
            server_cpu_s=usage.cpu_s,
            machine_cpu_s=(m1.busy_s - m0.busy_s) - (s1 - s0),
            extra={
                "cpu_by_role": usage.cpu_by_role,
                "rss_bytes": usage.rss_bytes,
                "rss_by_role": usage.rss_by_role,
                "roles": usage.roles,
                "n_processes": usage.n_processes,
                "harness_cpu_s": s1 - s0,
                "foreign_ray": foreign_ray_pids(own_pids=self.server.known),
            },
        )

    def settle(self, seconds: float) -> None:
        """Sleep, then wait (up to 90 s) until a probe is about as fast as when idle: a
        server that kept working on abandoned requests must finish before the next rate."""
        time.sleep(seconds)
        limit = max(3.0 * self.idle_probe_ms, self.idle_probe_ms + 50.0)
        deadline = time.monotonic() + 90.0
        while time.monotonic() < deadline and self.server.alive():
            if self._probe_ms(n=3) <= limit:
                return
            time.sleep(1.0)


class QuietGuard:
    """Repeats a rate when someone else's work overlapped it.

    After each run it looks at what the machine did besides this benchmark (another Ray
    instance appeared, or more than ``max_background_cores`` of other work); then it waits
    for the machine to be quiet again and measures the rate anew, at most ``retries`` times
    (the last attempt is kept, flagged, whatever happened)."""

    def __init__(
        self,
        inner: InProcessTarget | HttpTarget,
        wait_quiet: Callable[[], float],
        max_background_cores: float,
        retries: int,
        log: Log,
    ):
        self.name = inner.name
        self.inner = inner
        self.wait_quiet = wait_quiet
        self.max_background_cores = max_background_cores
        self.retries = retries
        self.log = log

    def run(self, schedule: pd.DataFrame, traffic: TrafficConfig, progress: bool) -> PointRun:
        attempt = 0
        while True:
            run = self.inner.run(schedule, traffic, progress)
            background = max(0.0, run.machine_cpu_s - run.server_cpu_s) / max(run.wall_s, 1e-9)
            foreign = run.extra.get("foreign_ray") or []
            run.extra["background_cores"] = background
            run.extra["attempts"] = attempt + 1
            if (not foreign and background <= self.max_background_cores) or attempt >= self.retries:
                return run
            attempt += 1
            self.log(
                f"[bench] {self.name}: other work overlapped this rate (other Ray {foreign}, "
                f"{background:.2f} cores); measuring it again when the machine is quiet"
            )
            self.inner.settle(1.0)
            self.wait_quiet()

    def settle(self, seconds: float) -> None:
        self.inner.settle(seconds)


def background_cores(seconds: float, server: ServerProcess | None = None) -> float:
    """Cores kept busy over ``seconds`` by everything but this process and ``server``'s tree
    (call while no load is sent)."""
    t0 = server.sample() if server is not None else {}
    m0, s0 = read_machine_cpu(), self_cpu_s()
    time.sleep(seconds)
    m1, s1 = read_machine_cpu(), self_cpu_s()
    own = tree_usage(t0, server.sample()).cpu_s if server is not None else 0.0
    return max(0.0, (m1.busy_s - m0.busy_s) - (s1 - s0) - own) / seconds


def measure_idle(server: ServerProcess, seconds: float) -> dict[str, Any]:
    """CPU (cores), processes and memory of a server doing nothing for ``seconds``."""
    before = server.sample()
    time.sleep(seconds)
    after = server.sample()
    usage = tree_usage(before, after)
    return {
        "seconds": seconds,
        "cpu_cores": usage.cpu_s / seconds,
        "cpu_by_role": {k: v / seconds for k, v in usage.cpu_by_role.items()},
        "n_processes": usage.n_processes,
        "roles": usage.roles,
        "rss_mb": usage.rss_bytes / 1e6,
    }
