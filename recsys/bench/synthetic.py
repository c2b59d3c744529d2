"""A made-up benchmark result with known answers, for tests and the notebook (no servers).

Each system answers every request in a fixed time below its capacity and in 400 ms above it.
Its low-load points are at 10, 20 and 40 req/s; its search (one repeat per stream, the cached
stream at twice the capacity) measured the rates of ``RATES``, so its sustained rate is the
highest of them under the capacity. The composed Serve app
reports chained stage timings (encode 8, retrieve 1, rank 3 ms; chain wall = latency - 6;
total = latency - 3), so the stage breakdown has known values.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from recsys.bench.analysis import summarise_point
from recsys.bench.config import MAIN_SYSTEMS, VARIANTS, BenchConfig, SloConfig, quick_sweep
from recsys.bench.harness import BenchResult, SystemRun
from recsys.bench.sweep import PointResult, PointRun
from recsys.config import AppConfig
from recsys.traffic.runner import RECORD_COLUMNS

RATES = (15.0, 30.0, 60.0, 120.0)
"""Searched rates."""
LOW_RATES = (10.0, 20.0, 40.0)
N = 100
"""Requests per rate."""


def synthetic_point(
    rate: float,
    latency_ms: float,
    cpu_s: float,
    chained: bool,
    stream: str = "longtail",
    phase: str = "search",
) -> PointResult:
    """One rate: ``N`` good search requests, each ``latency_ms``."""
    lat = np.full(N, latency_ms)
    start = np.arange(N) / rate
    frame = pd.DataFrame(
        {
            "id": np.arange(N),
            "scheduled_s": start,
            "sent_s": start,
            "done_s": start + lat / 1000,
            "send_lag_ms": np.zeros(N),
            "latency_ms": lat,
            "response_ms": lat,
            "route": pd.array(["search"] * N, dtype="string"),
            "method": pd.array(["POST"] * N, dtype="string"),
            "status": np.full(N, 200),
            "outcome": pd.array(["ok"] * N, dtype="string"),
            "variant": pd.array(["control"] * N, dtype="string"),
            "degraded": pd.array([False] * N, dtype="boolean"),
            "degraded_reason": pd.array([None] * N, dtype="string"),
            "error": pd.array([None] * N, dtype="string"),
            "server_total_ms": lat - 3,
        }
    )[RECORD_COLUMNS]
    timings: dict[int, dict[str, float]] = {}
    if chained:
        stage = {"encode": 8.0, "retrieve": 1.0, "rank": 3.0}
        timings = {
            i: {**stage, "chain_wall": latency_ms - 6, "total": latency_ms - 3} for i in range(N)
        }
    summary = summarise_point(frame, rate=rate, duration_s=N / rate, slo=SloConfig())
    summary.update(stream=stream, repeat=0, phase=phase)
    roles = {"replica:Ingress": cpu_s * 0.4, "serve_proxy": cpu_s * 0.2, "replica:X": cpu_s * 0.4}
    extra = {"cpu_by_role": roles, "rss_bytes": 5e8, "roles": {"replica:Ingress": 1}}
    return PointResult(summary, PointRun(frame, timings, N / rate, 0.05, cpu_s, cpu_s * 1.1, extra))


def synthetic_system(
    name: str, capacity: float, latency_ms: float, streams: tuple[str, ...] = ("longtail",)
) -> SystemRun:
    """A system that keeps ``latency_ms`` up to ``capacity`` req/s (twice that on the cached
    stream)."""
    spec = MAIN_SYSTEMS.get(name) or VARIANTS[name.split(":", 1)[1]]
    run = SystemRun(spec, startup_s=1.0, idle={"cpu_cores": 0.05, "n_processes": 9})
    chained = spec.kind == "serve"
    for stream in streams:
        cap = capacity * (2 if stream == "cached" else 1)
        if stream == "longtail":
            for rate in LOW_RATES:
                latency = latency_ms if rate <= cap else 400.0
                run.points.append(
                    synthetic_point(rate, latency, rate * 0.1, chained, stream, "low")
                )
        for rate in RATES:
            latency = latency_ms if rate <= cap else 400.0
            run.points.append(synthetic_point(rate, latency, rate * 0.1, chained, stream))
        passing = [r for r in RATES if r <= cap]
        failing = [r for r in RATES if r > cap]
        run.searches_by_repeat.append(
            {
                "stream": stream,
                "repeat": 0,
                "start": RATES[0],
                "sustained": max(passing) if passing else 0.0,
                "failing": min(failing) if failing else None,
                "pinned": True,
                "points": len(RATES),
            }
        )
        run.searches += [(stream, f"{stream} query {i % 7}") for i in range(20)]
    return run


def synthetic_result() -> BenchResult:
    """in-process 80 req/s at 12 ms, naive 20 at 20 ms, monolith 40 at 18 ms, Serve 40 at
    30 ms (cached stream: twice each), and a Serve variant 80 at 25 ms."""
    config = BenchConfig(
        artifacts="artifacts/demo",
        app=AppConfig(),
        systems=[*MAIN_SYSTEMS.values(), VARIANTS["proxy"]],
        sweep=quick_sweep().model_copy(update={"low_rates": list(LOW_RATES)}),
        experiments=[],
        cores=2,
    )
    both = ("longtail", "cached")
    runs = [
        synthetic_system("inprocess", 80, 12.0, both),
        synthetic_system("naive", 20, 20.0, both),
        synthetic_system("monolith", 40, 18.0),
        synthetic_system("serve", 40, 30.0, both),
        synthetic_system("serve_split", 20, 35.0),
        synthetic_system("serve:proxy", 80, 25.0),
    ]
    env = {
        "cpus": 2,
        "load_average_start": 0.1,
        "load_average_end": 0.2,
        "versions": {"ray": "2.60.0"},
        "artifact": {"path": "a", "version": "v1", "n_items": 10, "index": "Flat", "nprobe": 1},
    }
    return BenchResult(config, runs, {}, env, 0.0, 600.0)


def write_synthetic_outputs(out_dir: Path) -> Path:
    """The synthetic result's report files (what ``scripts/bench.py`` writes) in ``out_dir``."""
    from recsys.bench.report import write_outputs

    write_outputs(synthetic_result(), out_dir, "synthetic")
    return out_dir
