"""Sampler, summary, plots and reports on synthetic data (no cluster)."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from recsys.experiments.cluster_spec import ReplicaCounts
from recsys.experiments.compare import (
    COMPARISON_FILE,
    COMPARISON_PLOT,
    COST_PLOT,
    write_comparison,
)
from recsys.experiments.forecast import PredictiveScaler
from recsys.experiments.report import (
    PLOTS,
    ExperimentSummary,
    count_scale_down_degraded,
    hold_integral,
    load_experiment,
    request_windows,
    scale_down_intervals,
    summarize,
    write_report,
)
from recsys.experiments.sampler import Sampler, Snapshot, wide
from recsys.experiments.spec import DECISIONS_FILE, REPORT_FILE, SUMMARY_FILE
from recsys.experiments.synthetic import write_synthetic_experiment


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_synthetic_experiment(tmp_path_factory.mktemp("exp") / "synthetic-step")


# ---- sampler ----------------------------------------------------------------------------------


def test_sampler_records_snapshots_and_probe_errors() -> None:
    calls = {"n": 0}

    def probe() -> Snapshot:
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("controller busy")
        return Snapshot(
            t_unix=time.time(),
            worker_nodes={"gpu-small": calls["n"]},
            replicas={"Ranker": ReplicaCounts(running=1, target=2, starting=1)},
        )

    sampler = Sampler(probe, interval_s=0.02, node_types=["gpu-small", "gpu-multi"])
    with sampler:
        deadline = time.monotonic() + 5
        while calls["n"] < 5 and time.monotonic() < deadline:
            time.sleep(0.01)
    frame = sampler.frame()
    assert set(frame.columns) == {"t_unix", "metric", "name", "value"}
    errors = frame[frame["metric"] == "probe_error"]
    assert len(errors) == 1 and "controller busy" in errors["name"].iloc[0]
    nodes = wide(frame, "worker_nodes")
    assert list(nodes.columns) == ["gpu-multi", "gpu-small"]
    assert (nodes["gpu-multi"] == 0).all()  # a node type with no nodes is an explicit zero
    assert wide(frame, "target_replicas")["Ranker"].eq(2).all()
    assert sampler.last is not None
    assert not any(t.name == "cluster-sampler" for t in threading.enumerate())


# ---- series and summary -----------------------------------------------------------------------


def test_hold_integral() -> None:
    series = pd.DataFrame({"a": [1.0, 3.0, 2.0]}, index=[0.0, 10.0, 20.0])
    # 1 x 10 + 3 x 10 + 2 x 15 (the last value held to the end)
    assert hold_integral(series, 0.0, 35.0)["a"] == pytest.approx(70.0)
    assert hold_integral(series, 5.0, 15.0)["a"] == pytest.approx(5 * 1 + 5 * 3)
    before = pd.DataFrame({"a": [4.0]}, index=[-5.0])
    assert hold_integral(before, 0.0, 10.0)["a"] == pytest.approx(40.0)


def test_request_windows_count_every_outcome(synthetic: Path) -> None:
    exp = load_experiment(synthetic)
    windows = request_windows(exp.requests, 5.0, 500.0)
    assert windows["offered"].sum() == len(exp.requests)
    outcome_cols = ["ok", "http_503", "http_other", "timeout", "error"]
    assert (windows[outcome_cols].sum(axis=1) == windows["sent"]).all()
    assert (windows["met_slo"] <= windows["ok"]).all()
    high = windows[(windows["t_s"] >= 20) & (windows["t_s"] < 40)]
    calm = windows[windows["t_s"] < 20]
    assert (high["p99"] > calm["p99"].max()).all()


def test_summary_of_the_synthetic_step(synthetic: Path) -> None:
    s = summarize(load_experiment(synthetic))
    assert s.requests_sent == s.requests_with_outcome == s.requests_scheduled
    assert (s.load_up_s, s.load_down_s) == (20.0, 80.0)
    assert s.low_rate_rps == pytest.approx(5, rel=0.3) and s.high_rate_rps == pytest.approx(
        30, rel=0.15
    )
    # replicas at t=24 (QueryEncoder) and t=28 (Ranker); nodes at 26/27; back at 95 and 120
    assert s.time_to_scale_up_s == pytest.approx(4.0)
    assert s.time_to_first_node_s == pytest.approx(6.0)
    assert s.time_to_peak_replicas_s == pytest.approx(8.0)
    assert s.time_to_replicas_down_s == pytest.approx(15.0)
    assert s.time_to_nodes_down_s == pytest.approx(40.0)
    assert s.time_to_scale_down_s == pytest.approx(40.0)
    assert s.baseline_replicas == {"Ingress": 1, "QueryEncoder": 1, "Ranker": 1, "Retriever": 1}
    assert s.max_replicas == {"Ingress": 1, "QueryEncoder": 2, "Ranker": 2, "Retriever": 1}
    assert s.max_replicas_total == 6 and s.max_worker_nodes == 4
    assert s.max_worker_nodes_by_type == {"gpu-multi": 2, "gpu-small": 2}
    # latency recovers by t=40: p99 back under the SLO from the window starting there
    assert s.p99_recovered_after_s == pytest.approx(20.0)
    assert s.p99_by_phase_ms["high"] > s.slo_ms > s.p99_by_phase_ms["before"]
    assert 0 < s.slo_attainment_high < s.slo_attainment < 1
    assert s.latency_slo_attainment >= s.slo_attainment
    assert s.http_503 > 0 and s.timeouts > 0 and s.degraded > 0
    assert s.failed == s.http_503 + s.timeouts + s.http_other + s.errors
    # cost over [0, 140]: QueryEncoder 2 in [24, 95), Ranker 2 in [28, 95), others 1
    assert s.cost_window_s == 140
    assert s.replica_seconds["QueryEncoder"] == pytest.approx(140 + 71, abs=1)
    assert s.replica_seconds["Ranker"] == pytest.approx(140 + 67, abs=1)
    assert s.replica_seconds_total == pytest.approx(sum(s.replica_seconds.values()), abs=0.5)
    # gpu-small 2 in [26, 120), gpu-multi 2 in [27, 120)
    assert s.gpu_node_seconds == pytest.approx(2 * 140 + 94 + 93, abs=1)
    assert s.gpu_seconds == pytest.approx(1 * (140 + 94) + 2 * (140 + 93), abs=1)
    assert s.client_cpu_s == pytest.approx(3.2)
    assert s.notes == []


def test_recovery_is_none_when_latency_stays_high(tmp_path: Path) -> None:
    out = write_synthetic_experiment(tmp_path / "never")
    exp = load_experiment(out)
    late = exp.requests["scheduled_s"] >= 20
    exp.requests.loc[late, "latency_ms"] = 5000.0
    s = summarize(exp)
    assert s.p99_recovered_after_s is None
    assert s.slo_attainment_high == 0.0


def test_missing_outcomes_are_reported(synthetic: Path) -> None:
    exp = load_experiment(synthetic)
    exp.requests.loc[exp.requests.index[:3], "outcome"] = None
    s = summarize(exp)
    assert s.requests_with_outcome == s.requests_sent - 3
    assert any("no outcome" in note for note in s.notes)


# ---- reports ----------------------------------------------------------------------------------


def test_write_report(synthetic: Path) -> None:
    summary = write_report(synthetic)
    data = json.loads((synthetic / SUMMARY_FILE).read_text())
    for key in (
        "requests_sent",
        "requests_with_outcome",
        "max_worker_nodes",
        "max_replicas",
        "time_to_scale_up_s",
        "time_to_scale_down_s",
        "slo_attainment",
    ):
        assert key in data
    assert ExperimentSummary.model_validate(data) == summary
    drawn = [file for name, file in PLOTS.items() if name != "policy"]
    for file in drawn:
        png = synthetic / file
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size < 400_000
    text = (synthetic / REPORT_FILE).read_text()
    assert "time to scale up" in text and "SLO attainment" in text and "## Reproduce" in text
    for file in drawn:
        assert f"]({file})" in text
    # no predictive policy in this run: no policy plot, and the report does not link one
    assert not (synthetic / PLOTS["policy"]).exists() and PLOTS["policy"] not in text


def test_the_predictive_policys_decisions_get_their_plot(tmp_path: Path) -> None:
    run = write_synthetic_experiment(tmp_path / "synthetic-predictive")
    t0 = load_experiment(run).t0_unix
    scaler = PredictiveScaler(capacity_per_replica=1.0, lead_s=150.0, max_replicas=4)
    with (run / DECISIONS_FILE).open("w") as f:
        for t in range(-10, 200):
            scaler.decide(t0 + t, 2.5 if 60 <= t < 120 else 0.4)
            f.write(json.dumps(scaler.last) + "\n")
    exp = load_experiment(run)
    assert exp.decisions is not None and exp.decisions["held"].max() == 4
    write_report(run)
    png = run / PLOTS["policy"]
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert f"]({PLOTS['policy']})" in (run / REPORT_FILE).read_text()


def test_write_comparison(tmp_path: Path) -> None:
    a = write_synthetic_experiment(tmp_path / "step-a", seed=1)
    b = write_synthetic_experiment(tmp_path / "step-b", seed=2)
    write_report(a)
    text = write_comparison([a, b], tmp_path / "cmp")
    assert (tmp_path / "cmp" / COMPARISON_FILE).read_text() == text
    assert (tmp_path / "cmp" / COMPARISON_PLOT).stat().st_size > 10_000
    assert (tmp_path / "cmp" / COST_PLOT).stat().st_size > 5_000
    assert "caused by scale-down" in text and "hindsight / static peak" in text
    assert "`step-a`" in text and "`step-b`" in text and "GPU-node-seconds" in text
    assert "../step-a/report.md" in text
    assert np.isfinite(len(text))


def test_only_ranker_failures_while_replicas_are_removed_count_as_scale_down() -> None:
    """A breaker opened by an overloaded gang (no replica leaving) is not scale-down's; a
    failure while a gang was being removed is."""
    rows = []
    for t in range(0, 100):
        running = 3 if t < 62 else 2  # target falls at t=50, the gang drains until t=62
        target = 3 if t < 50 else 2
        rows += [(float(t), "running_replicas", "Ranker", float(running))]
        rows += [(float(t), "target_replicas", "Ranker", float(target))]
    samples = pd.DataFrame(rows, columns=["t_s", "metric", "name", "value"])
    assert scale_down_intervals(samples, margin_s=4.0) == [
        (45.0, 67.0)
    ]  # last sample before it began, first after it ended
    requests = pd.DataFrame(
        {
            "scheduled_s": [10.0, 48.0, 55.0, 64.0, 80.0, 56.0],
            "degraded_reason": [
                "ranker_unavailable",  # overload, nothing leaving
                "ranker_failed",  # in flight when the removal began
                "ranker_unavailable",
                "ranker_failed",  # just after the drain
                "ranker_failed",  # long after
                "ranker_deadline",  # late, not failed
            ],
        }
    )
    degraded = pd.Series([True] * len(requests))
    assert count_scale_down_degraded(requests, degraded, samples, margin_s=4.0) == 3


def test_a_cut_or_foreign_decision_log_is_read_safely(tmp_path: Path) -> None:
    from recsys.experiments.report import read_decisions

    path = tmp_path / DECISIONS_FILE
    good = {"t": 5.0, "load": 1, "level": 1, "seasonal": None, "predicted": 1, "wanted": 2}
    path.write_text(json.dumps({**good, "held": 2}) + "\n" + '{"t": 6.0, "lo')  # cut mid-line
    frame = read_decisions(path, t0_unix=1.0)
    assert frame is not None and frame["t_s"].tolist() == [4.0]
    path.write_text(json.dumps(good) + "\n")  # another version's log: no "held"
    assert read_decisions(path, t0_unix=1.0) is None
    path.write_text("")
    assert read_decisions(path, t0_unix=1.0) is None


def test_replaying_a_runs_decision_log_finds_exactly_the_changed_ticks(tmp_path: Path) -> None:
    from recsys.experiments.replay import replay, scaler_settings

    run = write_synthetic_experiment(tmp_path / "synthetic-replay")
    exp = load_experiment(run)
    stage = exp.spec.policy.stages["ranker"]
    settings = scaler_settings(exp.spec, stage.target_ongoing_requests, 1, stage.max_replicas or 1)
    live = PredictiveScaler(**settings)
    lines = []
    for t in range(0, 200):
        live.decide(exp.t0_unix + t, 3.0 if 60 <= t < 120 else 0.3)
        lines.append(dict(live.last))
    lines[150]["held"] += 1  # one tick the code as it is now would not have answered
    (run / DECISIONS_FILE).write_text("".join(json.dumps(x) + "\n" for x in lines))
    result = replay(run)
    assert (result.ticks, result.differing) == (200, 1)
    assert max(n for _, n in result.transitions) > 1
