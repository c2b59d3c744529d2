"""The chaos report's arithmetic: one class per request, goodput in the burst, headline."""

from __future__ import annotations

import numpy as np
import pandas as pd

from scripts.chaos import Scenario, classify, headline_numbers, summarise


def records(rows: list[tuple[float, str, int, bool | None, str | None, float]]) -> pd.DataFrame:
    sched, outcome, status, degraded, error, response = zip(*rows, strict=True)
    return pd.DataFrame(
        {
            "scheduled_s": np.array(sched),
            "sent_s": np.array(sched),
            "done_s": np.array(sched) + np.array(response) / 1000.0,
            "latency_ms": np.array(response),
            "response_ms": np.array(response),
            "outcome": pd.array(outcome, dtype="string"),
            "status": np.array(status),
            "degraded": pd.array(degraded, dtype="boolean"),
            "error": pd.array(error, dtype="string"),
        }
    )


ROWS = [
    (1.0, "ok", 200, False, None, 20.0),
    (11.0, "ok", 200, True, None, 30.0),
    (12.0, "http_error", 503, None, "overloaded", 4.0),
    (13.0, "http_error", 503, None, "unavailable", 5.0),
    (14.0, "timeout", -1, None, "no answer within 10s", 10_000.0),
    (25.0, "ok", 200, False, None, 20.0),
]


def test_each_request_gets_one_class() -> None:
    assert list(classify(records(ROWS))) == [
        "ok", "degraded", "rejected", "failed", "lost", "ok",
    ]  # fmt: skip


def test_burst_goodput_and_recovery() -> None:
    scenario = Scenario("burst_3x", 30.0, fault_at_s=10.0, burst=3.0)
    out = summarise(records(ROWS), scenario, rate=0.2)
    assert (out["sent"], out["ok"], out["degraded"], out["rejected"]) == (6, 2, 1, 1)
    assert (out["failed"], out["lost"]) == (1, 1)
    assert out["goodput_rps"] == 0.1 and out["goodput_ratio"] == 0.5
    assert out["rejection_p99_ms"] == 4.0 and out["recovery_s"] == 0.0
    kill = summarise(records(ROWS), Scenario("kill_ranker", 30.0, fault_at_s=10.0), rate=0.2)
    assert kill["recovery_s"] == 14.0 + 10.0 - 10.0
    head = headline_numbers({"burst_3x": out, "kill_ranker": kill})
    assert head["goodput_ratio_3x"] == 0.5 and head["lost"] == 2
    assert head["kill_success_ratio_min"] == kill["success_ratio"] == 0.5
    assert head["rollout_failed"] is None
