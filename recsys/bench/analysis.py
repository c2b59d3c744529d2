"""Pure summaries of benchmark records: per-rate latency, sustained rate, ratios, stage costs.

Definitions (the report repeats them):

* A request is **good** when its outcome is ``ok`` (HTTP 200, or an in-process answer) and
  it is not ``degraded`` (an answer that skipped the ranker is not the full service).
* **Latency** counts from the request's *scheduled* arrival to its answer, so a load
  generator that falls behind counts against the system, never hides queueing.
* A rate **passes** when at least ``min_good_share`` (99%) of its scheduled requests are good
  and the p99 latency of the good ones is at most the SLO.
* The **sustained rate** of a system is the highest offered rate that passes with every lower
  rate tried also passing (a lucky pass above a failure does not count); 0 if the lowest
  rate fails.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import pandas as pd

from recsys.bench.config import SloConfig
from recsys.traffic.runner import OUTCOMES

PERCENTILES = (50, 90, 99)


def good_mask(records: pd.DataFrame) -> np.ndarray:
    """Good requests: outcome ``ok`` and not degraded."""
    ok = (records["outcome"] == "ok").fillna(False).to_numpy(dtype=bool)
    degraded = records["degraded"].astype("boolean").fillna(False).to_numpy(dtype=bool)
    return ok & ~degraded


def percentile(values: Iterable[float] | np.ndarray, q: float) -> float:
    """``np.percentile`` that returns NaN for no values."""
    x = np.asarray(list(values) if not isinstance(values, np.ndarray) else values, np.float64)
    x = x[~np.isnan(x)]
    return float(np.percentile(x, q)) if len(x) else math.nan


def outcome_problems(records: pd.DataFrame, n_scheduled: int) -> list[str]:
    """What is wrong with ``records`` as "one outcome per scheduled request" (empty: fine)."""
    problems = []
    if len(records) != n_scheduled:
        problems.append(f"{len(records)} records for {n_scheduled} scheduled requests")
    if records["id"].duplicated().any():
        problems.append("duplicate request ids")
    missing = records["outcome"].isna().sum()
    if missing:
        problems.append(f"{missing} requests without an outcome")
    unknown = set(records["outcome"].dropna().unique()) - set(OUTCOMES)
    if unknown:
        problems.append(f"unknown outcomes {sorted(unknown)}")
    return problems


def summarise_point(
    records: pd.DataFrame, *, rate: float, duration_s: float, slo: SloConfig
) -> dict[str, Any]:
    """Latency, outcomes and the SLO verdict of one rate."""
    n = len(records)
    good = good_mask(records)
    n_good = int(good.sum())
    latency = records["latency_ms"].to_numpy(np.float64)[good]
    p50, p90, p99 = (percentile(latency, q) for q in PERCENTILES)
    share = n_good / n if n else 0.0
    passes = bool(
        n > 0 and share >= slo.min_good_share and not math.isnan(p99) and p99 <= slo.p99_ms
    )
    outcomes = records["outcome"].fillna("none").value_counts().to_dict()
    degraded = records["degraded"].astype("boolean").fillna(False).to_numpy(dtype=bool)
    return {
        "rate": float(rate),
        "n": n,
        "n_good": n_good,
        "good_share": share,
        "achieved_rps": n_good / duration_s if duration_s > 0 else math.nan,
        "p50_ms": p50,
        "p90_ms": p90,
        "p99_ms": p99,
        "mean_ms": float(latency.mean()) if len(latency) else math.nan,
        "send_lag_p99_ms": percentile(records["send_lag_ms"].to_numpy(np.float64), 99),
        "degraded_share": float(degraded.mean()) if n else 0.0,
        "outcomes": {str(k): int(v) for k, v in outcomes.items()},
        "passes": passes,
    }


def passes(summary: Mapping[str, Any], slo: SloConfig) -> bool:
    """The SLO verdict of a summary row (re-evaluated, so a different SLO can be applied)."""
    p99 = float(summary["p99_ms"])
    return bool(
        summary["n"] > 0
        and float(summary["good_share"]) >= slo.min_good_share
        and not math.isnan(p99)
        and p99 <= slo.p99_ms
    )


def sustained_rate(points: pd.DataFrame) -> float:
    """The highest rate that passes with every lower rate passing (0.0 if the lowest fails).

    ``points`` has columns ``rate`` and ``passes``, in measurement order; a rate measured more
    than once (the sweep re-measures a failure contradicted by a higher passing rate) counts
    by its last measurement.
    """
    if points.empty:
        return 0.0
    verdict = points.groupby("rate", sort=True)["passes"].last()
    best = 0.0
    for rate, ok in verdict.items():
        if not ok:
            break
        best = float(rate)
    return best


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    """``numerator / denominator``, None when either is missing or the denominator is 0."""
    if numerator is None or denominator is None:
        return None
    if math.isnan(numerator) or math.isnan(denominator) or denominator == 0:
        return None
    return numerator / denominator


def point_at(points: pd.DataFrame, rate: float) -> Mapping[str, Any] | None:
    """The summary row of ``rate`` (the last one if repeated), or None."""
    rows = points[np.isclose(points["rate"].to_numpy(np.float64), rate)]
    if rows.empty:
        return None
    return rows.iloc[-1].to_dict()


# ---- per-stage breakdown -----------------------------------------------------------------------

STAGE_COLUMNS = ("encode", "retrieve", "rank", "retrieval_wall", "rank_wall", "total", "queue")


def timings_frame(timings: Mapping[int, Mapping[str, float]]) -> pd.DataFrame:
    """Stage timings by schedule position -> a frame indexed by position, columns ``t_<name>``."""
    if not timings:
        return pd.DataFrame(index=pd.Index([], name="position"))
    frame = pd.DataFrame.from_dict({int(k): dict(v) for k, v in timings.items()}, orient="index")
    frame.index.name = "position"
    return frame.add_prefix("t_").sort_index()


def request_components(records: pd.DataFrame, timings: pd.DataFrame) -> pd.DataFrame:
    """Per good request, where its time went (ms). ``records`` rows are positions 0..n-1.

    * ``client``: latency from the scheduled arrival; ``send_lag``: the generator's delay.
    * ``outside_server``: answer time seen by the client minus the server's own ``total``:
      HTTP client, Serve proxy (or uvicorn), transport to and from the ingress.
    * ``encode`` / ``retrieve`` / ``rank``: compute of the batch the request was in.
    * When the ingress chains the stages (timings ``chain_wall``): ``chain_wait`` =
      ``chain_wall - encode - retrieve - rank``: every hop ingress -> encoder -> retriever ->
      ranker -> ingress with the batch waits and queues of the three stages; ``group_wait``:
      time queued in the ingress for a group slot (``recsys.coalesce``), ``group_size`` the
      size of the request's group; ``ingress_other`` = ``total - chain_wall - group_wait``:
      the ingress's own work (prepare, response building).
    * When it awaits retrieval, then the ranker (``retrieval_wall``, ``rank_wall``):
      ``encode_retrieve_wait`` = ``retrieval_wall - encode - retrieve`` (hops ingress ->
      encoder -> retriever -> ingress, batch waits and queues of both stages), ``rank_wait`` =
      ``rank_wall - rank`` and ``ingress_other`` = ``total - retrieval_wall - rank_wall``.
    * ``queue`` / ``compute``: (in-process, naive, monolith) time from arrival at the server
      to the start of its batch, and the pipeline's compute for the batch.
    """
    good = good_mask(records)
    base = pd.DataFrame(
        {
            "route": records["route"].astype(str).to_numpy(),
            "client": records["latency_ms"].to_numpy(np.float64),
            "response": records["response_ms"].to_numpy(np.float64),
            "send_lag": records["send_lag_ms"].to_numpy(np.float64),
        }
    )[good]
    t = timings.reindex(base.index)
    out = base.copy()

    def col(name: str) -> pd.Series:
        key = f"t_{name}"
        return t[key] if key in t.columns else pd.Series(np.nan, index=t.index)

    out["server_total"] = col("total")
    out["outside_server"] = base["response"] - out["server_total"]
    for name in ("encode", "retrieve", "rank", "queue", "compute", "batch_size"):
        out[name] = col(name)
    encode, retrieve, rank = (col(n).fillna(0.0) for n in ("encode", "retrieve", "rank"))
    if "t_chain_wall" in t.columns:  # encode -> retrieve -> rank handed on as one chain
        out["chain_wait"] = col("chain_wall") - encode - retrieve - rank
        out["group_wait"] = col("group_wait")
        out["group_size"] = col("group_size")
        out["ingress_other"] = (
            out["server_total"] - col("chain_wall") - col("group_wait").fillna(0.0)
        )
    else:  # the ingress awaits retrieval, then the ranker
        out["encode_retrieve_wait"] = col("retrieval_wall") - encode - retrieve
        out["rank_wait"] = col("rank_wall") - col("rank")
        out["ingress_other"] = (
            out["server_total"] - col("retrieval_wall") - col("rank_wall").fillna(0.0)
        )
    return out


def stage_breakdown(components: pd.DataFrame, route: str | None = "search") -> dict[str, Any]:
    """p50 and mean (ms) of every component, over good requests of ``route`` (None: all).

    Means add up (client = send_lag + outside_server + server_total on average); medians
    of parts do not add up to the median of the whole."""
    rows = components if route is None else components[components["route"] == route]
    out: dict[str, Any] = {"route": route or "all", "n": len(rows)}
    for name in rows.columns:
        if name == "route":
            continue
        values = rows[name].to_numpy(np.float64)
        values = values[~np.isnan(values)]
        if len(values):
            out[name] = {"p50": float(np.median(values)), "mean": float(values.mean())}
    return out


def cpu_per_request_ms(cpu_s: float, n_good: int) -> float:
    """CPU milliseconds per good request."""
    return cpu_s / n_good * 1000.0 if n_good else math.nan


def spread(values: Iterable[float | None]) -> dict[str, float | int | None]:
    """Median, min, max and interquartile range of the repeats' values (None ignored)."""
    x = np.asarray([v for v in values if v is not None], np.float64)
    x = x[~np.isnan(x)]
    if not len(x):
        return {"n": 0, "median": None, "min": None, "max": None, "iqr": None}
    q1, q3 = np.percentile(x, [25, 75])
    return {
        "n": len(x),
        "median": float(np.median(x)),
        "min": float(x.min()),
        "max": float(x.max()),
        "iqr": float(q3 - q1),
    }
