"""The search for the sustained rate (fake systems) and the in-process dynamic batcher (fake
pipeline)."""

from __future__ import annotations

import time
from types import SimpleNamespace
from typing import Any

import pandas as pd
import pytest

from recsys.bench.batcher import InProcessServer
from recsys.bench.config import BatchConfig, SweepConfig
from recsys.bench.requests import BenchRequest
from recsys.bench.sweep import PointResult, bracket, next_rate, search_start, search_sustained
from recsys.traffic.config import ConstantShape, RouteMix, SamplingConfig, TrafficConfig
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


def fake_point(rate: float, passes: bool) -> PointResult:
    """A measured rate whose summary says whether it passed (nothing else is read)."""
    return PointResult({"rate": rate, "passes": passes}, None)  # type: ignore[arg-type]


class Capacity:
    """A system that passes every rate up to ``capacity`` req/s and fails above it."""

    def __init__(self, capacity: float):
        self.capacity = capacity
        self.rates: list[float] = []

    def __call__(self, rate: float) -> PointResult:
        self.rates.append(rate)
        return fake_point(rate, rate <= self.capacity)


def sweep_config(**fields: Any) -> SweepConfig:
    return SweepConfig(duration_s=1.0, **fields)


def test_next_rate_starts_climbs_descends_and_bisects() -> None:
    def nxt(history: list[tuple[float, bool]]) -> float | None:
        return next_rate(history, 100.0, 1.5, 0.05, 1.0, 1000.0)

    assert nxt([]) == 100.0
    assert nxt([(100.0, True)]) == 150.0  # climb
    assert nxt([(100.0, False)]) == 66.7  # descend
    assert nxt([(100.0, True), (150.0, False)]) == 122.5  # geometric middle, not a grid
    assert nxt([(100.0, True), (104.0, False)]) is None  # within 5%: pinned
    # a pass above a failure does not count: the bracket is below the failure
    assert bracket([(50.0, True), (80.0, False), (120.0, True)]) == (50.0, 80.0)
    assert nxt([(1000.0, True)]) is None and nxt([(1.0, False)]) is None  # the bounds
    assert next_rate([(900.0, True)], 100.0, 1.5, 0.05, 1.0, 1000.0) == 1000.0


@pytest.mark.parametrize("capacity", [3.7, 37.3, 151.0, 812.5])
@pytest.mark.parametrize("start", [20.0, 400.0])
def test_search_brackets_the_capacity_within_the_tolerance(capacity: float, start: float) -> None:
    measure = Capacity(capacity)
    found = search_sustained(measure, start, sweep_config(tolerance=0.05, max_points=30))
    assert found.pinned and found.failing is not None
    assert found.sustained <= capacity < found.failing
    assert found.failing <= found.sustained * 1.05 + 0.1  # 0.1 req/s rounding
    assert len(set(measure.rates)) == len(measure.rates)  # no rate measured twice


def test_close_capacities_never_share_a_number() -> None:
    """Two systems 7% apart, searched from the same start, report different rates (a shared
    coarse grid gave 161 / 161)."""
    config = sweep_config(tolerance=0.05, max_points=30)
    a = search_sustained(Capacity(150.0), 100.0, config)
    b = search_sustained(Capacity(160.0), 100.0, config)
    assert a.sustained < b.sustained
    assert a.sustained != b.sustained


def test_the_point_cap_stops_the_search_unpinned() -> None:
    measure = Capacity(500.0)
    found = search_sustained(measure, 10.0, sweep_config(step=1.3, max_points=4))
    assert len(measure.rates) == 4 and not found.pinned
    assert found.failing is None and found.sustained == max(measure.rates)


def test_a_later_repeat_starts_at_the_estimate_with_a_fine_step() -> None:
    measure = Capacity(104.0)
    found = search_sustained(measure, 100.0, sweep_config(tolerance=0.05), step=1.1)
    assert measure.rates[:2] == [100.0, 110.0]
    assert found.sustained >= 100.0 and len(measure.rates) <= 3


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


def test_search_start_prefers_the_previous_repeat_then_other_streams_then_the_estimate() -> None:
    config = sweep_config(step=1.4, repeat_step=1.1, low_rates=[10.0, 40.0])
    assert search_start(config, previous=120.0, other_stream=90.0, estimate=50.0) == (120.0, 1.1)
    assert search_start(config, previous=None, other_stream=90.0, estimate=50.0) == (90.0, 1.4)
    assert search_start(config, previous=None, other_stream=None, estimate=50.0) == (40.0, 1.4)
    assert search_start(config, previous=None, other_stream=None, estimate=None) == (40.0, 1.4)
    fixed = sweep_config(start_rate=15.0)
    assert search_start(fixed, previous=None, other_stream=90.0, estimate=50.0)[0] == 15.0
