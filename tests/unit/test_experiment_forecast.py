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
from recsys.experiments.forecast import (
    DailyProfile,
    PredictiveScaler,
    ScheduledEvent,
    read_events,
    read_profile,
    write_events,
    write_profile,
)
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
    # a flat level asks once it has asked for upscale_sustain_s (30 s)
    flat_wanted = [flat.decide(t, 1.1) for t in range(0, 91)]
    assert flat_wanted[45] == 1 and flat_wanted[-1] == 2


def test_a_short_burst_of_load_asks_for_nothing_a_sustained_one_does():
    burst = _scaler(headroom=1.0, level_window_s=5.0)
    for t in range(0, 200):
        last = burst.decide(float(t), 3.0 if 100 <= t < 115 else 0.3)
    assert max(n for _, n in burst.decisions) == 1 and last == 1
    sustained = _scaler(headroom=1.0, level_window_s=5.0)
    for t in range(0, 200):
        last = sustained.decide(float(t), 3.0 if t >= 100 else 0.3)
    assert last >= 3


def test_noise_at_a_low_steady_load_is_not_extrapolated():
    """Ongoing requests at ~0.3 req/s jump between 0 and 2; fitted and extrapolated 150 s
    ahead, that noise would ask for every gang. A steady load asks for what its level needs,
    from the warm-up's first seconds on."""
    rng = np.random.default_rng(0)
    s = _scaler(max_replicas=4, headroom=1.5)
    wanted = [s.decide(t / 10, float(rng.poisson(0.35))) for t in range(0, 6000)]
    assert max(wanted) == 1
    rising = _scaler(max_replicas=4, headroom=1.0)
    for t in range(0, 1000):  # 0.3 -> 1.5 over a minute, on to 2.3, with the same noise
        last = rising.decide(t / 10, float(rng.poisson(0.3 + 0.02 * t / 10)))
    assert last >= 3


def test_scale_down_waits_for_the_hold():
    s = _scaler(headroom=1.0, downscale_hold_s=100.0, level_window_s=5.0, upscale_sustain_s=0.0)
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


def _day_profile(start: float = 0.0) -> DailyProfile:
    """A 400 s day: 0.5 in the first half, 3.0 in the second."""
    return DailyProfile(
        day_start_unix=start, period_s=400.0, step_s=20.0, load=(0.5,) * 10 + (3.0,) * 10
    )


def test_an_earlier_days_profile_asks_for_the_rise_from_the_first_second():
    s = _scaler(headroom=1.0, period_s=400.0, profile=_day_profile())
    # the load is 0.5 and flat; yesterday, 150 s ahead (t=210), it was 3.0
    assert s.decide(60.0, 0.5) == 3
    no_profile = _scaler(headroom=1.0, period_s=400.0)
    assert no_profile.decide(60.0, 0.5) == 1


def test_the_profile_is_scaled_by_how_today_compares_and_knows_nothing_past_its_day():
    quiet = _scaler(headroom=1.0, period_s=400.0, profile=_day_profile())
    for t in range(0, 181):  # today runs at half of yesterday's load
        last = quiet.decide(float(t), 0.25)
    assert last == 2  # 3.0 ahead x 0.5 = 1.5
    assert quiet.seasonal(180.0) == 1.5
    assert quiet.seasonal(300.0) is None  # 450 s is past the profile's day


def test_the_hold_is_waived_after_an_announced_end_only():
    ev = [ScheduledEvent(start_unix=300.0, announced_unix=0.0, end_unix=400.0)]
    announced = _scaler(max_replicas=4, headroom=1.0, downscale_hold_s=60.0)
    for t in range(0, 400):
        announced.decide(float(t), 3.0 if t >= 300 else 0.3, events=ev)
    for t in range(400, 440):
        last = announced.decide(float(t), 0.3, events=ev)
    assert last == 1  # the load fell after the end: no 60 s hold
    no_end = [ScheduledEvent(start_unix=300.0, announced_unix=0.0)]
    held = _scaler(max_replicas=4, headroom=1.0, downscale_hold_s=60.0)
    for t in range(0, 400):
        held.decide(float(t), 3.0 if t >= 300 else 0.3, events=no_end)
    for t in range(400, 440):
        last = held.decide(float(t), 0.3, events=no_end)
    assert last == 3  # no end announced: the load's last 60 s still hold


def test_with_a_daily_shape_the_hold_keeps_only_what_the_next_lead_time_needs():
    # a 1000 s day: 3.0 until t=500, then 0.5; the load follows it
    fall = DailyProfile(
        day_start_unix=0.0, period_s=1000.0, step_s=50.0, load=(3.0,) * 10 + (0.5,) * 10
    )
    load = lambda t: 3.0 if t < 500 else 0.5  # noqa: E731
    shaped = _scaler(headroom=1.0, period_s=1000.0, profile=fall, level_window_s=5.0)
    blind = _scaler(headroom=1.0, level_window_s=5.0)
    for t in range(0, 540):
        with_shape, without = shaped.decide(float(t), load(t)), blind.decide(float(t), load(t))
    # the evening's fall: 40 s on, the shaped one kept only the level's last 30 s of asks,
    # the blind one holds for its 60 s
    assert (with_shape, without) == (1, 3)
    # while the shape still says the load comes back within the lead time, the hold stays
    dip = DailyProfile(day_start_unix=0.0, period_s=1000.0, step_s=50.0, load=(3.0,) * 20)
    trusting = _scaler(headroom=1.0, period_s=1000.0, profile=dip, level_window_s=5.0)
    for t in range(0, 540):
        last = trusting.decide(float(t), load(t))
    assert last == 3


def test_profile_file_round_trip(tmp_path):
    path = tmp_path / "profile.json"
    assert read_profile(path) is None
    write_profile(path, _day_profile(start=100.0))
    back = read_profile(path)
    assert back == _day_profile(start=100.0)
    assert back is not None and back.at(100.0 + 210.0) == 3.0 and back.at(99.0) is None


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


def test_a_noisy_load_on_a_flat_daily_shape_does_not_flap_and_a_lull_is_held():
    """The shape-based cap applies only while the earlier day itself falls: on a flat day a
    noisy ratio near a threshold must not move the gangs tick by tick, and a lull keeps the
    hold."""
    flat = DailyProfile(day_start_unix=0.0, period_s=4000.0, step_s=50.0, load=(2.0,) * 80)
    rng = np.random.default_rng(1)
    s = _scaler(max_replicas=4, headroom=1.5, period_s=4000.0, profile=flat)
    held = [s.decide(float(t), float(rng.poisson(2.0))) for t in range(0, 1500)]
    changes = sum(1 for a, b in zip(held, held[1:], strict=False) if a != b)
    assert changes <= 3 and min(held[300:]) == 4
    lull = _scaler(max_replicas=4, headroom=1.0, period_s=4000.0, profile=flat)
    during = [lull.decide(float(t), 0.0 if 600 <= t < 640 else 2.5) for t in range(0, 641)]
    assert during[599] == 3 and during[639] == 3  # the 40 s lull is within the 60 s hold


def test_the_ratio_to_the_earlier_day_is_bounded():
    day = DailyProfile(day_start_unix=0.0, period_s=1000.0, step_s=50.0, load=(1.0,) * 20)
    idle = _scaler(period_s=1000.0, profile=day)
    busy = _scaler(period_s=1000.0, profile=day)
    for t in range(0, 200):
        idle.decide(float(t), 0.0)
        busy.decide(float(t), 9.0)
    assert idle.ratio(199.0) == 0.5 and busy.ratio(199.0) == 2.0
