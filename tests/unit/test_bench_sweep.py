"""The rate sweep (fake target) and the in-process dynamic batcher (fake pipeline)."""

from __future__ import annotations

import time
from types import SimpleNamespace
from typing import Any

import numpy as np
import pandas as pd
import pytest

from recsys.bench.analysis import sustained_rate
from recsys.bench.batcher import InProcessServer
from recsys.bench.config import BatchConfig, SloConfig, SweepConfig
from recsys.bench.requests import BenchRequest
from recsys.bench.sweep import PointRun, refine_rates, run_sweep
from recsys.traffic.config import ConstantShape, RouteMix, SamplingConfig, TrafficConfig
from recsys.traffic.runner import RECORD_COLUMNS
from recsys.traffic.schedule import Workload, build_schedule


def workload() -> Workload:
    queries = pd.DataFrame({"query": [f"q{i}" for i in range(20)], "frequency": 1.0})
    shoppers = pd.DataFrame({"user_id": [f"U{i}" for i in range(10)]})
    items = pd.DataFrame({"item_id": [f"I{i}" for i in range(10)], "popularity": 1.0})
    return Workload.from_frames(queries, shoppers, items, SamplingConfig())


def schedule(rate: float, duration: float = 1.0) -> tuple[TrafficConfig, pd.DataFrame]:
    traffic = TrafficConfig(
        shape=ConstantShape(rate=rate), duration_s=duration, mix=RouteMix(), seed=3
    )
    return traffic, build_schedule(traffic, workload())


class CapacityTarget:
    """Answers in 10 ms below ``capacity`` req/s, in 500 ms above it."""

    name = "fake"

    def __init__(self, capacity: float):
        self.capacity = capacity
        self.rates: list[float] = []

    def run(self, sched: pd.DataFrame, traffic: TrafficConfig, progress: bool) -> PointRun:
        rate = traffic.shape.rate  # type: ignore[union-attr]
        self.rates.append(rate)
        n = len(sched)
        latency = np.full(n, 10.0 if rate <= self.capacity else 500.0)
        start = sched["scheduled_s"].to_numpy()
        frame = pd.DataFrame(
            {
                "id": sched["id"].to_numpy(),
                "scheduled_s": start,
                "sent_s": start,
                "done_s": start + latency / 1000,
                "send_lag_ms": np.zeros(n),
                "latency_ms": latency,
                "response_ms": latency,
                "route": sched["route"].astype("string"),
                "method": sched["method"].astype("string"),
                "status": np.full(n, 200),
                "outcome": pd.array(["ok"] * n, dtype="string"),
                "variant": pd.array(["control"] * n, dtype="string"),
                "degraded": pd.array([False] * n, dtype="boolean"),
                "degraded_reason": pd.array([None] * n, dtype="string"),
                "error": pd.array([None] * n, dtype="string"),
                "server_total_ms": latency,
            }
        )[RECORD_COLUMNS]
        return PointRun(frame, {}, 1.0, 0.01, 0.5, 0.5)

    def settle(self, seconds: float) -> None:
        pass


def test_sweep_stops_at_saturation_then_bisects() -> None:
    target = CapacityTarget(capacity=70)
    sweep = SweepConfig(rates=[10, 20, 40, 80, 160, 320], duration_s=1.0, refine_steps=2)
    results = run_sweep(
        target, lambda r: schedule(r), sweep, SloConfig(), fixed_rates=[10], progress=False
    )
    # 80 fails with p99 500 ms > 3 x SLO: no higher grid rate; then 57 (pass), 68 (pass)
    assert target.rates == [10, 20, 40, 80, 57, 68]
    assert [r.summary["passes"] for r in results] == [True, True, True, False, True, True]


def test_sweep_always_measures_the_fixed_rates() -> None:
    target = CapacityTarget(capacity=5)
    sweep = SweepConfig(rates=[10, 20, 40], duration_s=1.0, refine_steps=0, max_failures=1)
    run_sweep(target, lambda r: schedule(r), sweep, SloConfig(), fixed_rates=[30], progress=False)
    assert target.rates == [10, 30]


class StallingTarget(CapacityTarget):
    """Fails the first measurement of ``stall_rate`` (a one-off stall), then behaves."""

    def __init__(self, capacity: float, stall_rate: float):
        super().__init__(capacity)
        self.stall_rate = stall_rate

    def run(self, sched: pd.DataFrame, traffic: TrafficConfig, progress: bool) -> PointRun:
        run = super().run(sched, traffic, progress)
        if traffic.shape.rate == self.stall_rate and self.rates.count(self.stall_rate) == 1:  # type: ignore[union-attr]
            run.records["latency_ms"] = 150.0  # over the SLO, not saturated
        return run


def test_a_failure_below_a_passing_rate_is_measured_again() -> None:
    target = StallingTarget(capacity=70, stall_rate=20)
    sweep = SweepConfig(rates=[10, 20, 40, 80], duration_s=1.0, refine_steps=1, max_failures=2)
    results = run_sweep(target, lambda r: schedule(r), sweep, SloConfig(), progress=False)
    # 20 stalls, 40 passes, 80 saturates; 20 is measured again (passes); then 40..80 refined
    assert target.rates == [10, 20, 40, 80, 20, 57]
    frame = pd.DataFrame([r.summary for r in results])
    assert sustained_rate(frame) == 57


def test_a_real_failure_stays_a_failure() -> None:
    target = CapacityTarget(capacity=15)
    sweep = SweepConfig(rates=[10, 20, 40], duration_s=1.0, refine_steps=0, max_failures=2)
    results = run_sweep(target, lambda r: schedule(r), sweep, SloConfig(), progress=False)
    assert target.rates == [10, 20]  # 20 saturates (p99 500 ms): nothing passes above it
    assert sustained_rate(pd.DataFrame([r.summary for r in results])) == 10


@pytest.mark.parametrize(
    ("lo", "hi", "steps", "expected"),
    [(40, 80, 1, 57.0), (0, 10, 1, 3.0), (50, 53, 1, None), (40, 80, 0, None)],
)
def test_refine_rates(lo: float, hi: float, steps: int, expected: float | None) -> None:
    assert refine_rates(lo, hi, steps) == expected


class FakePipeline:
    """Stands in for ``Pipeline``: records batch sizes, sleeps per batch."""

    def __init__(self, seconds_per_batch: float):
        self.catalog = None
        self.policy = None
        self.config = SimpleNamespace(default_k=10)
        self.seconds = seconds_per_batch
        self.batches: list[int] = []

    def run(self, prepared: list[Any]) -> list[Any]:
        self.batches.append(len(prepared))
        time.sleep(self.seconds)
        return [
            SimpleNamespace(variant="control", degraded=False, timings_ms={"total": 1.0})
            for _ in prepared
        ]


@pytest.fixture
def no_prepare(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(BenchRequest, "prepare", lambda self, *args: self)


@pytest.mark.usefixtures("no_prepare")
def test_batcher_answers_every_request_in_bounded_batches() -> None:
    pipeline = FakePipeline(0.004)
    server = InProcessServer(
        pipeline, BatchConfig(max_batch_size=4, batch_wait_timeout_s=0.01), 5.0
    )  # type: ignore[arg-type]
    _, sched = schedule(300, duration=0.5)
    run = server.serve_schedule(sched, progress=False)
    rec = run.records
    assert len(rec) == len(sched) and (rec["outcome"] == "ok").all()
    assert max(pipeline.batches) <= 4 and max(pipeline.batches) > 1
    assert sum(pipeline.batches) == len(sched)
    assert (rec["latency_ms"] >= rec["response_ms"] - 1e-6).all()
    assert (rec["latency_ms"] > 0).all()
    assert set(run.timings) == set(range(len(sched)))
    assert all(t["queue"] >= 0 for t in run.timings.values())


@pytest.mark.usefixtures("no_prepare")
def test_batcher_times_out_requests_it_cannot_reach_in_time() -> None:
    pipeline = FakePipeline(0.15)
    server = InProcessServer(pipeline, BatchConfig(max_batch_size=2, batch_wait_timeout_s=0.0), 0.2)  # type: ignore[arg-type]
    _, sched = schedule(100, duration=0.3)
    rec = server.serve_schedule(sched, progress=False).records
    outcomes = rec["outcome"].value_counts().to_dict()
    assert set(outcomes) <= {"ok", "timeout"} and outcomes.get("timeout", 0) > 0
    assert rec["outcome"].notna().all()
    assert sum(pipeline.batches) == outcomes.get("ok", 0)
