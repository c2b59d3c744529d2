"""Pure parts of the benchmark: SLO verdicts, sustained rate, ratios, stage breakdown."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from recsys.bench.analysis import (
    cpu_per_request_ms,
    good_mask,
    outcome_problems,
    request_components,
    stage_breakdown,
    summarise_point,
    sustained_rate,
    timings_frame,
)
from recsys.bench.analysis import ratio as safe_ratio
from recsys.bench.config import SloConfig
from recsys.traffic.runner import RECORD_COLUMNS


def records(
    latencies: list[float],
    outcomes: list[str] | None = None,
    degraded: list[bool | None] | None = None,
    routes: list[str] | None = None,
) -> pd.DataFrame:
    n = len(latencies)
    outcomes = outcomes or ["ok"] * n
    lat = np.asarray(latencies, dtype=np.float64)
    frame = pd.DataFrame(
        {
            "id": np.arange(n),
            "scheduled_s": np.arange(n) * 0.1,
            "sent_s": np.arange(n) * 0.1,
            "done_s": np.arange(n) * 0.1 + lat / 1000,
            "send_lag_ms": np.zeros(n),
            "latency_ms": lat,
            "response_ms": lat,
            "route": pd.array(routes or ["search"] * n, dtype="string"),
            "method": pd.array(["POST"] * n, dtype="string"),
            "status": [200 if o == "ok" else 503 for o in outcomes],
            "outcome": pd.array(outcomes, dtype="string"),
            "variant": pd.array(["control"] * n, dtype="string"),
            "degraded": pd.array(degraded or [False] * n, dtype="boolean"),
            "degraded_reason": pd.array([None] * n, dtype="string"),
            "error": pd.array([None] * n, dtype="string"),
            "server_total_ms": lat - 2.0,
        }
    )
    return frame[RECORD_COLUMNS]


SLO = SloConfig(p99_ms=100.0, min_good_share=0.99)


def test_good_excludes_errors_and_degraded_answers() -> None:
    r = records([10, 10, 10, 10], ["ok", "ok", "timeout", "ok"], [False, True, None, None])
    assert good_mask(r).tolist() == [True, False, False, True]


def test_point_passes_only_with_low_p99_and_enough_good_answers() -> None:
    fast = records([20.0] * 200)
    assert summarise_point(fast, rate=10, duration_s=20, slo=SLO)["passes"]
    slow_tail = records([20.0] * 190 + [150.0] * 10)
    s = summarise_point(slow_tail, rate=10, duration_s=20, slo=SLO)
    assert s["p99_ms"] > 100 and not s["passes"]
    errors = records([20.0] * 200, ["ok"] * 197 + ["http_error"] * 3)
    s = summarise_point(errors, rate=10, duration_s=20, slo=SLO)
    assert s["good_share"] == pytest.approx(0.985) and not s["passes"]
    assert s["outcomes"] == {"ok": 197, "http_error": 3}
    assert s["achieved_rps"] == pytest.approx(197 / 20)


def test_degraded_answers_count_against_the_slo() -> None:
    r = records([20.0] * 100, degraded=[True] * 5 + [False] * 95)
    s = summarise_point(r, rate=10, duration_s=10, slo=SLO)
    assert s["degraded_share"] == pytest.approx(0.05)
    assert not s["passes"]


def test_no_answers_is_a_failure_with_nan_latency() -> None:
    s = summarise_point(records([10.0] * 5, ["timeout"] * 5), rate=10, duration_s=1, slo=SLO)
    assert not s["passes"] and math.isnan(s["p99_ms"])


def points(pairs: list[tuple[float, bool]]) -> pd.DataFrame:
    return pd.DataFrame({"rate": [p[0] for p in pairs], "passes": [p[1] for p in pairs]})


@pytest.mark.parametrize(
    ("pairs", "expected"),
    [
        ([(10, True), (20, True), (40, False), (30, True)], 30.0),  # refinement out of order
        ([(10, True), (20, False), (40, True)], 10.0),  # a lucky pass above a failure
        ([(10, False), (20, True)], 0.0),
        ([(10, True), (20, True), (20, False)], 10.0),  # the last measurement decides
        ([(10, True), (20, False), (40, True), (20, True)], 40.0),  # a stall, re-measured
        ([], 0.0),
    ],
)
def test_sustained_rate_is_the_top_of_the_passing_prefix(
    pairs: list[tuple[float, bool]], expected: float
) -> None:
    assert sustained_rate(points(pairs)) == expected


def test_ratio_is_none_when_undefined() -> None:
    assert safe_ratio(60.0, 40.0) == pytest.approx(1.5)
    assert safe_ratio(60.0, 0.0) is None
    assert safe_ratio(None, 10.0) is None
    assert safe_ratio(math.nan, 10.0) is None


def test_cpu_per_request() -> None:
    assert cpu_per_request_ms(2.0, 400) == pytest.approx(5.0)
    assert math.isnan(cpu_per_request_ms(2.0, 0))


def test_outcome_problems_flags_missing_and_unknown_outcomes() -> None:
    assert outcome_problems(records([1.0, 2.0]), 2) == []
    r = records([1.0, 2.0, 3.0], ["ok", "bogus", "ok"])
    r.loc[2, "outcome"] = pd.NA
    problems = outcome_problems(r, 4)
    assert any("3 records for 4" in p for p in problems)
    assert any("without an outcome" in p for p in problems)
    assert any("bogus" in p for p in problems)


def test_stage_components_of_a_chained_ingress() -> None:
    r = records([50.0, 60.0], routes=["search", "recommend"])
    t = timings_frame(
        {
            0: {"encode": 10, "retrieve": 2, "rank": 5, "chain_wall": 30, "total": 40},
            1: {"retrieve": 2, "rank": 5, "chain_wall": 20, "total": 25},
        }
    )
    c = request_components(r, t)
    assert c.loc[0, "chain_wait"] == pytest.approx(13.0)
    assert c.loc[0, "ingress_other"] == pytest.approx(10.0)
    assert c.loc[0, "outside_server"] == pytest.approx(10.0)
    assert c.loc[1, "chain_wait"] == pytest.approx(13.0)  # no encode for recommend
    b = stage_breakdown(c, "search")
    assert b["n"] == 1 and b["encode"]["p50"] == pytest.approx(10.0)
    assert stage_breakdown(c, None)["n"] == 2


def test_stage_components_of_an_ingress_awaiting_each_stage() -> None:
    r = records([50.0])
    t = timings_frame(
        {
            0: {
                "encode": 10,
                "retrieve": 2,
                "rank": 5,
                "retrieval_wall": 20,
                "rank_wall": 9,
                "total": 33,
            }
        }
    )
    c = request_components(r, t)
    assert c.loc[0, "encode_retrieve_wait"] == pytest.approx(8.0)
    assert c.loc[0, "rank_wait"] == pytest.approx(4.0)
    assert c.loc[0, "ingress_other"] == pytest.approx(4.0)


def test_stage_components_skip_requests_that_were_not_good() -> None:
    r = records([50.0, 60.0], ["ok", "timeout"])
    c = request_components(r, timings_frame({0: {"total": 40.0, "queue": 3.0}}))
    assert list(c.index) == [0]
    assert c.loc[0, "queue"] == pytest.approx(3.0)
