"""The predictive policy, the hindsight allocation and the node-arrival provider config,
without Ray."""

from __future__ import annotations

import numpy as np

from recsys.experiments.cluster_spec import (
    DELAYED_PROVIDER,
    FakeClusterSpec,
    NodeTypeSpec,
    render_autoscaler_config,
)
from recsys.experiments.forecast import PredictiveScaler, ScheduledEvent, read_events, write_events
from recsys.experiments.hindsight import (
    cost_per_million,
    fcfs_sojourn,
    gangs_needed,
    hindsight_allocation,
)


def _scaler(**kw: object) -> PredictiveScaler:
    args: dict[str, object] = dict(capacity_per_replica=1.0, lead_s=150.0, max_replicas=8)
    args.update(kw)
    return PredictiveScaler(**args)  # type: ignore[arg-type]


def test_a_rising_trend_asks_for_capacity_one_lead_time_ahead():
    s = _scaler(headroom=1.0)
    wanted = [s.decide(t, 0.5 + 0.01 * t) for t in range(0, 61)]
    # at t=60 the load is 1.1 and rising 0.01/s: 1.1 + 1.5 = 2.6 ahead -> 3 replicas
    assert wanted[-1] == 3
    flat = _scaler(headroom=1.0)
    assert [flat.decide(t, 1.1) for t in range(0, 61)][-1] == 2


def test_noise_at_a_low_steady_load_is_not_extrapolated():
    """Ongoing requests at ~0.3 req/s jump between 0 and 2; fitted and extrapolated 150 s
    ahead, that noise would ask for every gang. A steady load asks for what its level needs,
    from the warm-up's first seconds on."""
    rng = np.random.default_rng(0)
    s = _scaler(max_replicas=4, headroom=1.5)
    wanted = [s.decide(t / 10, float(rng.poisson(0.35))) for t in range(0, 6000)]
    assert max(wanted) <= 2
    rising = _scaler(max_replicas=4, headroom=1.0)
    for t in range(0, 600):  # 0.3 -> 1.5 over the minute, with the same noise
        last = rising.decide(t / 10, float(rng.poisson(0.3 + 0.02 * t / 10)))
    assert last >= 3


def test_scale_down_waits_for_the_hold():
    s = _scaler(headroom=1.0, downscale_hold_s=100.0)
    for t in range(0, 20):
        s.decide(t, 3.0)
    assert s.decide(50, 0.2) == 3  # within the hold
    for t in range(51, 200):
        last = s.decide(t, 0.2)
    assert last == 1


def test_an_announced_event_reserves_capacity_from_one_lead_time_before_only_after_announcing():
    ev = [ScheduledEvent(start_unix=1000.0, announced_unix=700.0, end_unix=1200.0)]
    s = _scaler(max_replicas=4, downscale_hold_s=0.0)
    assert s.decide(600.0, 0.3, events=ev) == 1  # not announced yet
    assert s.decide(800.0, 0.3, events=ev) == 1  # announced, but not yet start - lead
    assert s.decide(851.0, 0.3, events=ev) == 4
    assert s.decide(1199.0, 0.3, events=ev) == 4
    assert s.decide(1201.0, 0.3, events=ev) == 1
    unannounced = _scaler(max_replicas=4, downscale_hold_s=0.0)
    assert unannounced.decide(851.0, 0.3, events=[]) == 1


def test_a_daily_shape_seen_yesterday_is_used_ahead():
    s = _scaler(headroom=1.0, period_s=400.0, trend_window_s=10.0, level_window_s=5.0)
    day = lambda t: 3.0 if (t % 400) >= 200 else 0.5  # noqa: E731
    for t in range(0, 400 + 60):
        last = s.decide(float(t), day(t))
    # at t=459 the load is 0.5 and flat; a day ago, 150 s ahead (t=209), it was 3.0
    assert last == 3


def test_events_file_round_trip(tmp_path):
    path = tmp_path / "events.json"
    assert read_events(path) == []
    ev = [ScheduledEvent(start_unix=10.0, announced_unix=5.0)]
    write_events(path, ev)
    assert read_events(path) == ev


def test_fcfs_and_gangs_needed():
    arrivals = np.array([0.0, 0.0, 0.0])
    assert fcfs_sojourn(arrivals, 1, 1.0).tolist() == [1.0, 2.0, 3.0]
    assert gangs_needed(arrivals, 1.0, 1.0, target=1.0) == 3
    assert gangs_needed(arrivals, 1.0, 3.0, target=1.0) == 1
    assert gangs_needed(np.array([]), 1.0, 1.0, min_gangs=2) == 2


def test_hindsight_follows_the_load_and_static_holds_the_peak():
    rng = np.random.default_rng(0)
    low = np.sort(rng.uniform(0, 120, 24))  # 0.2 req/s for two minutes
    high = np.sort(rng.uniform(120, 180, 150))  # 2.5 req/s for one minute
    alloc = hindsight_allocation(
        np.concatenate([low, high]), 180.0, service_s=1.0, budget_s=3.0, fixed_nodes=1
    )
    assert alloc.gangs[0] == alloc.gangs[1] == 1
    assert alloc.gangs[2] >= 3
    assert alloc.gpu_node_seconds == 60 * (2 + 2 + 1 + alloc.gangs[2])
    assert alloc.static_peak_gpu_node_seconds == 180 * (1 + alloc.gangs[2])
    assert cost_per_million(3600.0, 1_000_000, 2.0) == 2.0
    assert cost_per_million(1.0, 0, 2.0) is None


def test_node_arrival_delay_renders_the_delayed_provider():
    spec = FakeClusterSpec(
        worker_types=[
            NodeTypeSpec(name="gpu-small", cpus=6, gpus=1, max_workers=2),
            NodeTypeSpec(name="gpu-multi", cpus=16, gpus=2, max_workers=4, arrival_s=120),
        ]
    )
    provider = render_autoscaler_config(spec, "127.0.0.1:6390")["provider"]
    assert provider["type"] == "external"
    assert provider["module"] == DELAYED_PROVIDER
    assert provider["arrival_delay_s"] == {"gpu-multi": 120}
    spec0 = spec.model_copy(update={"worker_types": [spec.worker_types[0]]})
    assert render_autoscaler_config(spec0, "x:1")["provider"]["type"] == "fake_multinode"
