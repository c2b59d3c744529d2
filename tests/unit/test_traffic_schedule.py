"""The traffic schedule: arrival rates follow the shape, draws are seeded, the mix holds,
contents follow the data's long tails, and non-loopback targets are refused."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError

from recsys.traffic.config import (
    ConstantShape,
    DiurnalShape,
    FlashSaleShape,
    RampShape,
    RouteMix,
    SamplingConfig,
    StepShape,
    TrafficConfig,
    is_loopback,
    shape_from_params,
)
from recsys.traffic.schedule import Workload, build_schedule, zipf_probabilities
from recsys.traffic.shapes import arrival_times, expected_count, load_change_times, peak_rate, rate

SHAPES = [
    ConstantShape(rate=40),
    StepShape(low=10, high=80, t_up=60, t_down=180),
    RampShape(start=5, end=90, t_start=30, t_end=200),
    DiurnalShape(mean=50, amplitude=40, period_s=120),
    FlashSaleShape(base=10, peak=100, t_start=50, rise_s=5, hold_s=40, decay_s=20),
]


def workload(n_queries: int = 50, n_shoppers: int = 200, n_items: int = 300) -> Workload:
    rng = np.random.default_rng(1)
    freq = 1.0 / np.arange(1, n_queries + 1) ** 1.2
    queries = pd.DataFrame(
        {"query": [f"query {i}" for i in range(n_queries)], "frequency": freq / freq.sum()}
    )
    shoppers = pd.DataFrame({"user_id": [f"U{i:07d}" for i in range(n_shoppers)]})
    pop = rng.pareto(1.5, n_items) + 1e-3
    items = pd.DataFrame(
        {"item_id": [f"I{i:07d}" for i in range(n_items)], "popularity": pop / pop.sum()}
    )
    return Workload.from_frames(queries, shoppers, items, SamplingConfig(), seed=0)


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: s.kind)
def test_counts_per_window_follow_the_shape(shape) -> None:
    duration, window = 300.0, 10.0
    times = arrival_times(shape, duration, np.random.default_rng(42))
    assert np.all(np.diff(times) >= 0) and times.min() >= 0 and times.max() < duration
    counts, edges = np.histogram(times, bins=np.arange(0.0, duration + window, window))
    for count, lo, hi in zip(counts, edges[:-1], edges[1:], strict=True):
        expected = expected_count(shape, lo, hi)
        # Poisson: within 4.5 standard deviations in every one of the 30 windows
        assert abs(count - expected) <= 4.5 * np.sqrt(max(expected, 1.0)) + 1, (lo, count, expected)
    total = expected_count(shape, 0, duration)
    assert abs(len(times) - total) <= 4 * np.sqrt(total)


def test_rate_of_each_shape() -> None:
    step = StepShape(low=10, high=80, t_up=60, t_down=180)
    assert rate(step, np.array([0, 59.9, 60, 179.9, 180, 250])).tolist() == [10, 10, 80, 80, 10, 10]
    ramp = RampShape(start=0, end=100, t_start=10, t_end=110)
    assert rate(ramp, np.array([0, 10, 60, 110, 200])).tolist() == [0, 0, 50, 100, 100]
    diurnal = DiurnalShape(mean=50, amplitude=40, period_s=100)  # phase -0.25: starts at trough
    assert rate(diurnal, 0.0) == pytest.approx(10)
    assert rate(diurnal, 50.0) == pytest.approx(90)
    flash = FlashSaleShape(base=10, peak=100, t_start=50, rise_s=10, hold_s=20, decay_s=5)
    values = rate(flash, np.array([0, 55, 60, 79, 80 + 5 * np.log(90), 500]))
    assert values.tolist() == pytest.approx([10, 55, 100, 100, 11, 10], abs=1e-6)
    for shape in SHAPES:
        grid = np.linspace(0, 300, 3001)
        assert rate(shape, grid).max() <= peak_rate(shape, 300) + 1e-9


def test_load_change_times() -> None:
    assert load_change_times(StepShape(low=1, high=9, t_up=30, t_down=90), 120) == (30, 90)
    assert load_change_times(StepShape(low=1, high=9, t_up=30, t_down=200), 120) == (30, None)
    assert load_change_times(ConstantShape(rate=5), 60) == (None, None)
    up, down = load_change_times(
        FlashSaleShape(base=10, peak=100, t_start=50, rise_s=2, hold_s=30, decay_s=5), 200
    )
    assert up == pytest.approx(51, abs=0.2) and down == pytest.approx(82 + 5 * np.log(2), abs=0.2)


def test_arrivals_are_bounded_by_count_and_time() -> None:
    times = arrival_times(ConstantShape(rate=100), 60, np.random.default_rng(0), max_requests=50)
    assert len(times) == 50 and times.max() < 1.0  # the earliest 50


def test_schedule_is_deterministic_for_a_seed() -> None:
    config = TrafficConfig(
        shape=StepShape(low=5, high=40, t_up=10, t_down=30), duration_s=40, seed=3
    )
    w = workload()
    a, b = build_schedule(config, w), build_schedule(config, workload())
    pd.testing.assert_frame_equal(a, b)
    other = build_schedule(config.model_copy(update={"seed": 4}), w)
    assert len(other) != len(a) or not np.allclose(other["scheduled_s"], a["scheduled_s"])
    assert a["id"].tolist() == list(range(len(a)))
    assert a["scheduled_s"].is_monotonic_increasing


def test_mix_and_request_contents() -> None:
    config = TrafficConfig(
        shape=ConstantShape(rate=400),
        duration_s=50,
        mix=RouteMix(search=0.6, recommend=0.3, similar=0.1),
        sampling=SamplingConfig(personalised_search_share=0.25, k=7),
    )
    w = workload()
    schedule = build_schedule(config, w)
    n = len(schedule)
    shares = schedule["route"].value_counts(normalize=True)
    for route, p in config.mix.probabilities().items():
        assert abs(shares[route] - p) <= 4 * np.sqrt(p * (1 - p) / n)
    search = schedule[schedule["route"] == "search"]
    bodies = [json.loads(b) for b in search["body"]]
    assert all(b["k"] == 7 and b["query"] in set(w.queries) for b in bodies)
    personalised = np.mean(["user_id" in b for b in bodies])
    assert abs(personalised - 0.25) < 0.03
    rec = schedule[schedule["route"] == "recommend"]
    assert (rec["method"] == "POST").all() and (rec["path"] == "/v1/recommend").all()
    similar = schedule[schedule["route"] == "similar"]
    assert (similar["method"] == "GET").all() and similar["body"].isna().all()
    assert similar["path"].str.match(r"^/v1/items/I\d{7}/similar\?k=7$").all()


def test_contents_follow_the_long_tails() -> None:
    w = workload()
    config = TrafficConfig(
        shape=ConstantShape(rate=1000),
        duration_s=40,
        mix=RouteMix(search=1, recommend=1, similar=1),
    )
    schedule = build_schedule(config, w)
    queries = pd.Series(
        [json.loads(b)["query"] for b in schedule.loc[schedule["route"] == "search", "body"]]
    )
    top = queries.value_counts(normalize=True)
    assert top.index[0] == "query 0"  # the most frequent query in the data
    assert top.iloc[0] == pytest.approx(w.query_p[0], abs=0.02)
    users = pd.Series(
        [json.loads(b)["user_id"] for b in schedule.loc[schedule["route"] == "recommend", "body"]]
    )
    head = users.value_counts(normalize=True)
    assert head.iloc[0] == pytest.approx(w.shopper_p.max(), abs=0.03)  # a popular head ...
    assert users.nunique() > 60  # ... and a long tail
    items = schedule.loc[schedule["route"] == "similar", "path"].str.extract(r"items/(I\d+)/")[0]
    assert items.value_counts().index[0] == w.items[np.argmax(w.item_p)]


def test_zipf_probabilities() -> None:
    p = zipf_probabilities(1000, 1.1, np.random.default_rng(0))
    assert p.sum() == pytest.approx(1.0)
    ranked = np.sort(p)[::-1]
    assert ranked[0] / ranked[1] == pytest.approx(2**1.1)
    assert not np.all(np.diff(p) <= 0)  # ranks are permuted over the ids, not id order


@pytest.mark.parametrize(
    "target",
    ["http://10.1.2.3:8000", "http://example.com", "https://192.168.1.5", "http://0.0.0.0:8000"],
)
def test_non_loopback_targets_are_refused(target: str) -> None:
    with pytest.raises(ValidationError, match="loopback"):
        TrafficConfig(target=target, shape=ConstantShape(rate=1), duration_s=1)
    allowed = TrafficConfig(
        target=target, allow_non_loopback=True, shape=ConstantShape(rate=1), duration_s=1
    )
    assert allowed.target == target
    # every one of several targets is checked
    with pytest.raises(ValidationError, match="loopback"):
        TrafficConfig(
            target=["http://127.0.0.1:8000", target], shape=ConstantShape(rate=1), duration_s=1
        )
    with pytest.raises(ValidationError, match="at least one"):
        TrafficConfig(target=[], shape=ConstantShape(rate=1), duration_s=1)


@pytest.mark.parametrize(
    "target", ["http://127.0.0.1:8000", "http://localhost:9", "http://[::1]:80", "http://127.9.9.9"]
)
def test_loopback_targets_are_accepted(target: str) -> None:
    TrafficConfig(target=target, shape=ConstantShape(rate=1), duration_s=1)


def test_config_is_strict_and_bounded() -> None:
    with pytest.raises(ValidationError):
        TrafficConfig(shape=ConstantShape(rate=1), duration_s=1, unknown=1)  # type: ignore[call-arg]
    with pytest.raises(ValidationError):
        TrafficConfig(shape=ConstantShape(rate=1), duration_s=10 * 24 * 3600)
    with pytest.raises(ValidationError):
        StepShape(low=1, high=5, t_up=10, t_down=5)
    with pytest.raises(ValidationError):
        TrafficConfig(target="ftp://127.0.0.1", shape=ConstantShape(rate=1), duration_s=1)
    assert not is_loopback("127.0.0.1.example.com")


def test_shape_from_params() -> None:
    step = shape_from_params("step", 200, rate=5, peak=50)
    assert step == StepShape(low=5, high=50, t_up=30, t_down=110)
    assert shape_from_params("constant", 10, rate=3) == ConstantShape(rate=3)
    ramp = shape_from_params("ramp", 100, rate=1, peak=9, t_up=0, t_down=100)
    assert isinstance(ramp, RampShape) and ramp.end == 9
    diurnal = shape_from_params("diurnal", 60, rate=10, peak=30)
    assert isinstance(diurnal, DiurnalShape) and diurnal.mean == 20 and diurnal.amplitude == 10
    flash = shape_from_params("flash_sale", 100, rate=5, peak=50)
    assert isinstance(flash, FlashSaleShape) and flash.t_start == 15
    with pytest.raises(ValueError, match="unknown shape"):
        shape_from_params("square", 10, rate=1)
