"""Summary, plots and ``report.md`` of an autoscaling experiment, from its parquet files.

Inputs (an experiment directory): ``experiment.json`` (:class:`ExperimentSpec`),
``requests.parquet`` (one row per scheduled request, :mod:`recsys.traffic.runner`) and
``samples.parquet`` (replicas and nodes over time, :mod:`recsys.experiments.sampler`). Time is
seconds from the traffic's zero (``t_s``); samples taken before it have negative times.

Definitions used throughout:

* *answered*: a 2xx answer. Latency percentiles are over answered requests, measured from the
  scheduled send time (generator lag counts against the service).
* *meets the SLO*: answered, not degraded (ranked, not retrieval order) and within ``slo_ms``.
  ``slo_attainment`` is the share of *sent* requests that meet it: 503s, timeouts, errors and
  degraded answers all count as misses.
* *failed*: sent, but no 2xx (``http_error``, ``timeout``, ``error``, ``cancelled``).
* the load *rises* at ``t_up`` and *falls* at ``t_down`` (a step's edges; for other shapes the
  crossings of the rate's midpoint). The *baseline* is the state in the last sample before
  ``t_up``.
* ``time_to_scale_up_s``: from ``t_up`` until the first added replica is RUNNING.
* ``time_to_scale_down_s``: from ``t_down`` until running replicas *and* worker nodes are both
  back at the baseline (replicas go first, then the autoscaler removes idle nodes).
* *SLO view of latency* (``p99_slo``): a request's latency if it was answered ranked (2xx, not
  degraded), else the client timeout -- a miss counts as the worst case. Its p99 is <= SLO
  exactly when at least ~99% of requests met the SLO; the latency of answered requests alone
  would hide misses (degraded answers come back fast, by design).
* ``p99_recovered_after_s``: from ``t_up`` to the start of the first window after which every
  window of the high phase has ``p99_slo`` <= SLO (None: it never did).
* cost over the window ``[0, duration + tail_s]``: ``replica_seconds`` (running replicas x s,
  per deployment and total), ``gpu_node_seconds`` (worker nodes x s; every worker type has
  GPUs) and ``gpu_seconds`` (logical GPUs of the worker nodes x s). The last sample's state is
  held to the end of the window when sampling stopped earlier.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from pydantic import Field

from recsys.config import StrictModel
from recsys.experiments.sampler import wide
from recsys.experiments.spec import (
    DECISIONS_FILE,
    REPORT_FILE,
    REQUESTS_FILE,
    SAMPLES_FILE,
    SUMMARY_FILE,
    ExperimentSpec,
)
from recsys.traffic.runner import SENT_OUTCOMES, read_records
from recsys.traffic.shapes import load_change_times, rate

FAILED_OUTCOMES = ("http_error", "timeout", "error", "cancelled")
PLOTS = {
    "latency": "latency.png",
    "scaling": "scaling.png",
    "load": "load.png",
    "policy": "policy.png",
}


@dataclass
class Experiment:
    """The raw data of one run, on one time axis."""

    spec: ExperimentSpec
    requests: pd.DataFrame
    """Requests (``requests.parquet``)."""
    samples: pd.DataFrame
    """Samples (``samples.parquet``) with ``t_s`` added."""
    t0_unix: float
    """Unix time of the traffic's zero."""
    facts: dict[str, str]
    """What the traffic run recorded about itself (``wall_s``, ``client_cpu_s``, ...)."""
    directory: Path | None = None
    decisions: pd.DataFrame | None = None
    """The predictive policy's decisions (``policy_decisions.jsonl``) with ``t_s``, if any."""


def load_experiment(directory: str | Path, window_s: float | None = None) -> Experiment:
    """Read an experiment directory written by ``scripts/experiment.py``; ``window_s``
    overrides the analysis window recorded in its spec."""
    directory = Path(directory)
    spec = ExperimentSpec.read(directory)
    if window_s is not None:
        spec = spec.model_copy(update={"window_s": window_s})
    requests, facts = read_records(directory / REQUESTS_FILE)
    samples = pd.read_parquet(directory / SAMPLES_FILE)
    if "t0_unix" not in facts:
        raise ValueError(f"{directory / REQUESTS_FILE} lacks t0_unix in its metadata")
    t0 = float(facts["t0_unix"])
    samples = samples.assign(t_s=samples["t_unix"] - t0)
    decisions = read_decisions(directory / DECISIONS_FILE, t0)
    return Experiment(spec, requests, samples, t0, facts, directory, decisions)


DECISION_COLUMNS = ("t", "load", "level", "seasonal", "predicted", "wanted", "held")


def read_decisions(path: Path, t0_unix: float) -> pd.DataFrame | None:
    """The predictive policy's decision log with ``t_s``; None when absent, empty or without
    the columns the plot needs. Lines that do not parse (the last one, cut when the cluster
    stopped mid-write) are skipped."""
    if not path.is_file():
        return None
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    frame = pd.DataFrame([r for r in rows if isinstance(r, dict)])
    if frame.empty or any(c not in frame.columns for c in DECISION_COLUMNS):
        return None
    return frame.assign(t_s=frame["t"] - t0_unix).sort_values("t_s")


# --------------------------------------------------------------------------------------------
# Series
# --------------------------------------------------------------------------------------------


def _pct(values: pd.Series | np.ndarray, q: float) -> float:
    arr = np.asarray(values, dtype=np.float64)
    arr = arr[np.isfinite(arr)]
    return float(np.percentile(arr, q)) if arr.size else math.nan


def slo_latency(requests: pd.DataFrame, miss_ms: float) -> np.ndarray:
    """Per request: its latency when answered ranked (2xx, not degraded), else ``miss_ms``;
    NaN for requests never sent."""
    outcome = requests["outcome"].astype(str).to_numpy()
    ranked = (outcome == "ok") & ~requests["degraded"].fillna(False).to_numpy(dtype=bool)
    latency = requests["latency_ms"].to_numpy(dtype=np.float64)
    sent = np.isin(outcome, SENT_OUTCOMES)
    return np.where(ranked, latency, np.where(sent, miss_ms, np.nan))


def request_windows(
    requests: pd.DataFrame, window_s: float, slo_ms: float, miss_ms: float | None = None
) -> pd.DataFrame:
    """Per window of scheduled time: counts by outcome and latency percentiles.

    Columns: ``t_s`` (window start), ``offered`` (scheduled), ``sent``, ``ok``, ``degraded``,
    ``http_503``, ``http_other``, ``timeout``, ``error`` (error + cancelled), ``met_slo``,
    ``p50``, ``p90``, ``p99``, ``max`` (answered 2xx, ms), ``p99_slo`` (SLO view: misses count
    as ``miss_ms``, default 10 x the SLO), ``lag_p99`` (send lag, ms), ``offered_rps``.
    """
    miss = 10.0 * slo_ms if miss_ms is None else miss_ms
    if requests.empty:
        return pd.DataFrame(columns=["t_s"])
    r = requests
    bins = np.floor(r["scheduled_s"].to_numpy(dtype=np.float64) / window_s).astype(np.int64)
    outcome = r["outcome"].astype(str).to_numpy()
    status = r["status"].to_numpy()
    answered = outcome == "ok"
    degraded = answered & r["degraded"].fillna(False).to_numpy(dtype=bool)
    latency = r["latency_ms"].to_numpy(dtype=np.float64)
    met = answered & ~degraded & (latency <= slo_ms)
    frame = pd.DataFrame(
        {
            "bin": bins,
            "sent": np.isin(outcome, SENT_OUTCOMES),
            "ok": answered,
            "degraded": degraded,
            "http_503": (outcome == "http_error") & (status == 503),
            "http_other": (outcome == "http_error") & (status != 503),
            "timeout": outcome == "timeout",
            "error": np.isin(outcome, ("error", "cancelled")),
            "met_slo": met,
            "lat_ok": np.where(answered, latency, np.nan),
            "lat_slo": slo_latency(r, miss),
            "lag": r["send_lag_ms"].to_numpy(dtype=np.float64),
        }
    )
    grouped = frame.groupby("bin")
    out = grouped[
        ["sent", "ok", "degraded", "http_503", "http_other", "timeout", "error", "met_slo"]
    ].sum()
    out.insert(0, "offered", grouped.size())
    out["p50"] = grouped["lat_ok"].apply(lambda s: _pct(s, 50))
    out["p90"] = grouped["lat_ok"].apply(lambda s: _pct(s, 90))
    out["p99"] = grouped["lat_ok"].apply(lambda s: _pct(s, 99))
    out["max"] = grouped["lat_ok"].max()
    out["p99_slo"] = grouped["lat_slo"].apply(lambda s: _pct(s, 99))
    out["lag_p99"] = grouped["lag"].apply(lambda s: _pct(s, 99))
    full = np.arange(int(bins.min()), int(bins.max()) + 1)
    out = out.reindex(full)
    counts = [
        "offered",
        "sent",
        "ok",
        "degraded",
        "http_503",
        "http_other",
        "timeout",
        "error",
        "met_slo",
    ]
    out[counts] = out[counts].fillna(0).astype(np.int64)
    out.insert(0, "t_s", out.index.to_numpy(dtype=np.float64) * window_s)
    out["offered_rps"] = out["offered"] / window_s
    return out.reset_index(drop=True)


def replica_series(samples: pd.DataFrame, metric: str = "running_replicas") -> pd.DataFrame:
    """Replicas per deployment over time (index ``t_s``), forward-filled."""
    return _series(samples, metric)


def node_series(samples: pd.DataFrame, metric: str = "worker_nodes") -> pd.DataFrame:
    """Worker nodes per type over time (index ``t_s``), forward-filled."""
    return _series(samples, metric)


def _series(samples: pd.DataFrame, metric: str) -> pd.DataFrame:
    if "t_s" not in samples.columns:
        raise ValueError("samples need a t_s column (see load_experiment)")
    table = wide(samples.assign(t_unix=samples["t_s"]), metric)
    table.index.name = "t_s"
    return table


def hold_integral(series: pd.DataFrame, t_start: float, t_end: float) -> pd.Series:
    """Integral over ``[t_start, t_end]`` of each column read as a step function (each value
    held until the next sample; the last one held to ``t_end``; zero before the first)."""
    if series.empty or t_end <= t_start:
        return pd.Series(dtype=np.float64)
    t = series.index.to_numpy(dtype=np.float64)
    values = series.to_numpy(dtype=np.float64)
    edges = np.append(t, max(t_end, t[-1]))
    lo = np.clip(edges[:-1], t_start, t_end)
    hi = np.clip(edges[1:], t_start, t_end)
    widths = np.maximum(hi - lo, 0.0)
    return pd.Series(widths @ values, index=series.columns)


def _state_before(series: pd.DataFrame, t: float) -> pd.Series | None:
    before = series[series.index < t]
    if before.empty:
        return None
    return before.iloc[-1]


def _first_time(t: np.ndarray, values: np.ndarray, start: float, predicate: Any) -> float | None:
    for ti, vi in zip(t, values, strict=True):
        if ti >= start and predicate(vi):
            return float(ti - start)
    return None


# --------------------------------------------------------------------------------------------
# Summary
# --------------------------------------------------------------------------------------------


class LatencySummary(StrictModel):
    """Latency of answered requests, ms from the scheduled send time."""

    p50: float | None = None
    p90: float | None = None
    p99: float | None = None
    max: float | None = None


class ExperimentSummary(StrictModel):
    """``summary.json``: the numbers of one run (definitions: this module's docstring)."""

    name: str
    policy: str
    shape: str
    duration_s: float
    slo_ms: float
    window_s: float
    """Width of the windows the series and the recovery time were computed on."""
    load_up_s: float | None
    """When the load rose (seconds from the start)."""
    load_down_s: float | None
    """When the load fell."""
    low_rate_rps: float
    """Offered rate before the rise (scheduled arrivals per second)."""
    high_rate_rps: float | None
    """Offered rate between the rise and the fall."""
    requests_scheduled: int
    requests_sent: int
    requests_with_outcome: int
    """Sent requests with a recorded outcome (must equal ``requests_sent``)."""
    outcomes: dict[str, int]
    ok: int
    degraded: int
    http_503: int
    http_other: int
    timeouts: int
    errors: int
    failed: int
    """Sent requests without a 2xx answer."""
    latency_ms: LatencySummary
    p50_ms: float | None
    p99_ms: float | None
    p99_by_phase_ms: dict[str, float | None]
    """p99 of answered requests before the rise, during the high phase, after the fall."""
    p99_slo_ms: float | None
    """p99 in the SLO view (a request not answered ranked counts as the client timeout)."""
    p99_slo_by_phase_ms: dict[str, float | None]
    """The SLO-view p99 before the rise, during the high phase, after the fall."""
    slo_attainment: float | None
    """Share of sent requests that met the SLO (2xx, not degraded, within ``slo_ms``)."""
    slo_attainment_high: float | None
    """The same over requests scheduled in the high phase."""
    latency_slo_attainment: float | None
    """Share of sent requests answered 2xx within ``slo_ms`` (degraded answers count)."""
    p99_recovered_after_s: float | None
    baseline_replicas: dict[str, int]
    baseline_worker_nodes: dict[str, int]
    max_replicas: dict[str, int]
    max_replicas_total: int
    max_worker_nodes: int
    max_worker_nodes_by_type: dict[str, int]
    time_to_scale_up_s: float | None
    time_to_first_node_s: float | None
    time_to_peak_replicas_s: float | None
    time_to_replicas_down_s: float | None
    time_to_nodes_down_s: float | None
    time_to_scale_down_s: float | None
    cost_window_s: float
    replica_seconds: dict[str, float]
    replica_seconds_total: float
    gpu_node_seconds: float
    gpu_seconds: float
    send_lag_ms: LatencySummary
    client_cpu_s: float | None
    """CPU seconds of the traffic generator's sending thread (it shares the machine)."""
    client_cpu_wait_s: float | None = None
    """Seconds the generator's sending thread was runnable but waited for a CPU."""
    client_nice: int | None = None
    """Niceness the generator ran at (Ray's system processes run at 0, its workers at 15)."""
    sustainable_rate_rps: float | None
    """Highest offered rate of a window whose SLO-view p99 was within the SLO."""
    peak_goodput_rps: float | None
    """Highest rate of SLO-meeting answers in any window."""
    notes: list[str] = Field(default_factory=list)
    """Anything the analysis could not establish."""
    time_to_scale_up_s_by_deployment: dict[str, float | None] = Field(default_factory=dict)
    """Per deployment: from ``t_up`` until its first replica above its count at t=0 was
    RUNNING (negative: capacity was there before the rise; None: never added)."""
    slo_recovery_s: float | None = None
    """From ``t_up`` to the start of the first window after which every window to the end of
    the traffic has ``p99_slo`` <= SLO (0: never above it; None: not back by the end)."""
    degraded_share: float | None = None
    """Degraded answers / sent requests."""
    degraded_by_reason: dict[str, int] = Field(default_factory=dict)
    degraded_by_scale_down: int = 0
    """Degraded answers whose reason says the ranker failed or was unavailable
    (``ranker_failed``/``ranker_unavailable``) scheduled while ranker replicas were being
    removed, one SLO either side (:func:`scale_down_intervals`): what a gang torn down under
    load causes. The same reasons at other times (a breaker that an overloaded gang opened)
    and a late ranker (deadline) are in ``degraded_by_reason`` only."""
    requests_without_outcome: int = 0
    pending_gpu_node_seconds: float = 0.0
    """Node-seconds of nodes requested but not yet arrived (billed on a real cloud)."""
    hindsight_gpu_node_seconds: float | None = None
    """The cheapest per-minute allocation meeting the SLO, from the trace
    (:mod:`recsys.experiments.hindsight`), over the same cost window."""
    hindsight_gangs_per_minute: list[int] = Field(default_factory=list)
    static_peak_gpu_node_seconds: float | None = None
    """The hindsight allocation's largest minute held for the whole cost window."""
    gpu_node_seconds_vs_hindsight: float | None = None
    gpu_node_seconds_vs_static_peak: float | None = None
    usd_per_gpu_hour: float | None = None
    cost_per_million_requests: float | None = None
    """Dollars of GPU-seconds per million sent requests at ``usd_per_gpu_hour``."""
    commit: str = ""
    dirty_files: list[str] = Field(default_factory=list)


SCALE_DOWN_REASONS = ("ranker_failed", "ranker_unavailable")


def scale_down_intervals(
    samples: pd.DataFrame, margin_s: float, prefix: str = "Ranker"
) -> list[tuple[float, float]]:
    """When ranker replicas were being removed, widened by ``margin_s`` on both sides: from
    ``margin_s`` before a deployment's target fell below its running replicas (requests then in
    flight) to ``margin_s`` after the running count came down to the target (drained)."""
    running = replica_series(samples)
    target = replica_series(samples, "target_replicas")
    intervals: list[tuple[float, float]] = []
    for name in running.columns:
        if not str(name).startswith(prefix):
            continue
        run = running[name]
        tgt = target[name] if name in target.columns else run
        both = pd.concat([run, tgt], axis=1, keys=["run", "tgt"]).ffill()
        times = both.index.to_numpy(dtype=np.float64)
        runs = both["run"].to_numpy(dtype=np.float64)
        # being removed: the target below the running count, or the running count falling
        removing = both["tgt"].to_numpy(dtype=np.float64) < runs
        removing[1:] |= runs[1:] < runs[:-1]
        start: float | None = None
        for i, flag in enumerate(removing):
            if flag and start is None:
                start = float(times[i - 1] if i > 0 and not removing[i - 1] else times[i])
            elif not flag and start is not None:
                intervals.append((start - margin_s, float(times[i]) + margin_s))
                start = None
        if start is not None:
            intervals.append((start - margin_s, float(times[-1]) + margin_s))
    return intervals


def count_scale_down_degraded(
    r: pd.DataFrame, degraded: pd.Series, samples: pd.DataFrame, margin_s: float
) -> int:
    """Degraded answers whose reason says the ranker failed or was unavailable and that were
    scheduled while ranker replicas were being removed (:func:`scale_down_intervals`); the same
    reasons at other times (a breaker opened by an overloaded gang) are not scale-down's."""
    if "degraded_reason" not in r or "running_replicas" not in set(samples["metric"]):
        return 0
    hit = degraded & r["degraded_reason"].isin(SCALE_DOWN_REASONS)
    at = r.loc[hit, "scheduled_s"].to_numpy(dtype=np.float64)
    intervals = scale_down_intervals(samples, margin_s)
    return int(sum(any(a <= t <= b for a, b in intervals) for t in at))


def _int_dict(row: pd.Series | None) -> dict[str, int]:
    return {} if row is None else {str(k): int(round(float(v))) for k, v in row.items()}


def _round(x: float | None, digits: int = 1) -> float | None:
    return None if x is None or not math.isfinite(x) else round(float(x), digits)


def _latency(values: np.ndarray) -> LatencySummary:
    if values.size == 0:
        return LatencySummary()
    return LatencySummary(
        p50=_round(_pct(values, 50)),
        p90=_round(_pct(values, 90)),
        p99=_round(_pct(values, 99)),
        max=_round(float(np.nanmax(values))),
    )


def summarize(exp: Experiment) -> ExperimentSummary:
    """All the numbers of one run."""
    spec = exp.spec
    r = exp.requests
    slo = spec.slo_ms
    duration = spec.traffic.duration_s
    t_up, t_down = load_change_times(spec.traffic.shape, duration)
    notes: list[str] = []
    outcome = r["outcome"].astype(str)
    sent = r["sent_s"].notna()
    answered = outcome == "ok"
    degraded = answered & r["degraded"].fillna(False).astype(bool)
    latency = r["latency_ms"].astype(float)
    met = answered & ~degraded & (latency <= slo)
    status = r["status"]
    n_sent = int(sent.sum())

    def share(mask: pd.Series, within: pd.Series) -> float | None:
        n = int(within.sum())
        return None if n == 0 else round(float((mask & within).sum()) / n, 4)

    phase = pd.Series("before", index=r.index)
    if t_up is not None:
        phase[r["scheduled_s"] >= t_up] = "high"
    if t_down is not None:
        phase[r["scheduled_s"] >= t_down] = "after"
    miss_ms = spec.traffic.timeout_s * 1000.0
    lat_slo = pd.Series(slo_latency(r, miss_ms), index=r.index)
    p99_by_phase = {
        name: _round(_pct(latency[answered & (phase == name)], 99))
        for name in ("before", "high", "after")
    }
    p99_slo_by_phase = {
        name: _round(_pct(lat_slo[phase == name], 99)) for name in ("before", "high", "after")
    }
    high = sent & (phase == "high")
    low_mask = phase == "before"
    low_rate = float(low_mask.sum()) / t_up if t_up else float(len(r)) / duration
    high_rate = (
        float((phase == "high").sum()) / ((t_down or duration) - t_up) if t_up is not None else None
    )

    windows = request_windows(r, spec.window_s, slo, miss_ms)
    recovered = _p99_recovery(windows, t_up, t_down or duration, spec.window_s, slo)
    sustainable, goodput = _capacity(windows, spec.window_s, slo)

    # ---- replicas and nodes ----
    running = replica_series(exp.samples, "running_replicas")
    nodes = node_series(exp.samples, "worker_nodes")
    end = spec.cost_window_s
    if running.empty:
        notes.append("no replica samples")
    if nodes.empty:
        notes.append("no node samples")
    anchor = t_up if t_up is not None else 0.0
    base_replicas = _state_before(running, anchor) if not running.empty else None
    base_nodes = _state_before(nodes, anchor) if not nodes.empty else None
    if base_replicas is None and not running.empty:
        base_replicas = running.iloc[0]
        notes.append("no sample before the rise: baseline taken from the first sample")
    if base_nodes is None and not nodes.empty:
        base_nodes = nodes.iloc[0]
    in_run = running[running.index >= 0] if not running.empty else running
    in_run_nodes = nodes[nodes.index >= 0] if not nodes.empty else nodes
    total_replicas = in_run.sum(axis=1) if not in_run.empty else pd.Series(dtype=float)
    total_nodes = in_run_nodes.sum(axis=1) if not in_run_nodes.empty else pd.Series(dtype=float)
    base_total = float(base_replicas.sum()) if base_replicas is not None else math.nan
    base_nodes_total = float(base_nodes.sum()) if base_nodes is not None else math.nan

    up = first_node = peak = rep_down = node_down = down = None
    if t_up is not None and not total_replicas.empty:
        t = total_replicas.index.to_numpy(dtype=np.float64)
        v = total_replicas.to_numpy()
        up = _first_time(t, v, t_up, lambda x: x > base_total)
        horizon = total_replicas[(total_replicas.index >= t_up)]
        if t_down is not None:
            horizon = horizon[horizon.index <= t_down + spec.window_s]
        if not horizon.empty and horizon.max() > base_total:
            peak = float(horizon.idxmax()) - t_up
    if t_up is not None and not total_nodes.empty:
        t = total_nodes.index.to_numpy(dtype=np.float64)
        first_node = _first_time(t, total_nodes.to_numpy(), t_up, lambda x: x > base_nodes_total)
    if t_down is not None and not total_replicas.empty:
        t = total_replicas.index.to_numpy(dtype=np.float64)
        rep_down = _first_time(t, total_replicas.to_numpy(), t_down, lambda x: x <= base_total)
    if t_down is not None and not total_nodes.empty:
        t = total_nodes.index.to_numpy(dtype=np.float64)
        node_down = _first_time(t, total_nodes.to_numpy(), t_down, lambda x: x <= base_nodes_total)
    if t_down is not None and not total_replicas.empty and not total_nodes.empty:
        both = pd.concat([total_replicas.rename("r"), total_nodes.rename("n")], axis=1).ffill()
        t = both.index.to_numpy(dtype=np.float64)
        ok_rows = (both["r"] <= base_total) & (both["n"] <= base_nodes_total)
        down = _first_time(t, ok_rows.to_numpy(), t_down, bool)
        if down is None:
            notes.append(
                "replicas and nodes were not both back at the baseline when sampling ended"
            )

    replica_seconds = (
        hold_integral(running, 0.0, end) if not running.empty else pd.Series(dtype=float)
    )
    node_seconds = hold_integral(nodes, 0.0, end) if not nodes.empty else pd.Series(dtype=float)
    gpus_per_type = {t.name: t.gpus for t in spec.cluster.worker_types}
    gpu_node_seconds = float(
        sum(v for k, v in node_seconds.items() if gpus_per_type.get(str(k), 0) > 0)
    )
    gpu_seconds = float(sum(v * gpus_per_type.get(str(k), 0) for k, v in node_seconds.items()))

    lag = r.loc[sent, "send_lag_ms"].to_numpy(dtype=np.float64)
    cpu = exp.facts.get("client_cpu_s")
    outcomes = {str(k): int(v) for k, v in outcome.value_counts().items()}
    with_outcome = int((sent & outcome.isin(SENT_OUTCOMES)).sum())
    if with_outcome != n_sent:
        notes.append(f"{n_sent - with_outcome} sent requests have no outcome")
    lat_answered = latency[answered].to_numpy(dtype=np.float64)
    summary_latency = _latency(lat_answered)
    extra = _honest_metrics(exp, windows, running, nodes, t_up, gpu_node_seconds, gpu_seconds)
    reasons = r.loc[degraded, "degraded_reason"].astype(str) if "degraded_reason" in r else None
    by_reason = (
        {} if reasons is None else {str(k): int(v) for k, v in reasons.value_counts().items()}
    )
    return ExperimentSummary(
        **extra,
        degraded_share=share(degraded, sent),
        degraded_by_reason=by_reason,
        degraded_by_scale_down=count_scale_down_degraded(r, degraded, exp.samples, slo / 1000.0),
        requests_without_outcome=n_sent - with_outcome,
        commit=spec.commit,
        dirty_files=spec.dirty_files,
        name=spec.name,
        policy=spec.policy.name,
        shape=spec.traffic.shape.kind,
        duration_s=duration,
        slo_ms=slo,
        window_s=spec.window_s,
        load_up_s=t_up,
        load_down_s=t_down,
        low_rate_rps=round(low_rate, 2),
        high_rate_rps=None if high_rate is None else round(high_rate, 2),
        requests_scheduled=len(r),
        requests_sent=n_sent,
        requests_with_outcome=with_outcome,
        outcomes=outcomes,
        ok=int(answered.sum()),
        degraded=int(degraded.sum()),
        http_503=int(((outcome == "http_error") & (status == 503)).sum()),
        http_other=int(((outcome == "http_error") & (status != 503)).sum()),
        timeouts=int((outcome == "timeout").sum()),
        errors=int(outcome.isin(("error", "cancelled")).sum()),
        failed=int((sent & outcome.isin(FAILED_OUTCOMES)).sum()),
        latency_ms=summary_latency,
        p50_ms=summary_latency.p50,
        p99_ms=summary_latency.p99,
        p99_by_phase_ms=p99_by_phase,
        p99_slo_ms=_round(_pct(lat_slo, 99)),
        p99_slo_by_phase_ms=p99_slo_by_phase,
        slo_attainment=share(met, sent),
        slo_attainment_high=share(met, high) if t_up is not None else None,
        latency_slo_attainment=share(answered & (latency <= slo), sent),
        p99_recovered_after_s=recovered,
        baseline_replicas=_int_dict(base_replicas),
        baseline_worker_nodes=_int_dict(base_nodes),
        max_replicas={str(k): int(v) for k, v in in_run.max().items()} if not in_run.empty else {},
        max_replicas_total=int(total_replicas.max()) if not total_replicas.empty else 0,
        max_worker_nodes=int(total_nodes.max()) if not total_nodes.empty else 0,
        max_worker_nodes_by_type=(
            {str(k): int(v) for k, v in in_run_nodes.max().items()}
            if not in_run_nodes.empty
            else {}
        ),
        time_to_scale_up_s=_round(up),
        time_to_first_node_s=_round(first_node),
        time_to_peak_replicas_s=_round(peak),
        time_to_replicas_down_s=_round(rep_down),
        time_to_nodes_down_s=_round(node_down),
        time_to_scale_down_s=_round(down),
        cost_window_s=end,
        replica_seconds={str(k): round(float(v), 1) for k, v in replica_seconds.items()},
        replica_seconds_total=round(float(replica_seconds.sum()), 1),
        gpu_node_seconds=round(gpu_node_seconds, 1),
        gpu_seconds=round(gpu_seconds, 1),
        send_lag_ms=_latency(lag),
        client_cpu_s=None if cpu is None else round(float(cpu), 2),
        client_nice=int(exp.facts["client_nice"]) if "client_nice" in exp.facts else None,
        client_cpu_wait_s=_fact_float(exp.facts, "client_cpu_wait_s"),
        sustainable_rate_rps=_round(sustainable, 2),
        peak_goodput_rps=_round(goodput, 2),
        notes=notes,
    )


def _honest_metrics(
    exp: Experiment,
    windows: pd.DataFrame,
    running: pd.DataFrame,
    nodes: pd.DataFrame,
    t_up: float | None,
    gpu_node_seconds: float,
    gpu_seconds: float,
) -> dict[str, Any]:
    """Per-deployment scale-up, SLO recovery, pending nodes, hindsight/static cost."""
    from recsys.experiments.hindsight import cost_per_million, hindsight_allocation

    spec = exp.spec
    out: dict[str, Any] = {"usd_per_gpu_hour": spec.usd_per_gpu_hour}
    by_dep: dict[str, float | None] = {}
    if t_up is not None and not running.empty:
        at_zero = _state_before(running, 0.0)
        start = running.iloc[0] if at_zero is None else at_zero
        for name in running.columns:
            col = running[name]
            col = col[col.index >= 0]
            grew = col[col > float(start[name])]
            by_dep[str(name)] = None if grew.empty else round(float(grew.index[0]) - t_up, 1)
    out["time_to_scale_up_s_by_deployment"] = by_dep
    duration = spec.traffic.duration_s
    if t_up is not None and not windows.empty:
        after = windows[(windows["t_s"] >= t_up) & (windows["t_s"] + spec.window_s <= duration)]
        good = (after["p99_slo"] <= spec.slo_ms).to_numpy()
        if good.size and good[-1]:
            bad = np.flatnonzero(~good)
            first = 0 if bad.size == 0 else int(bad[-1]) + 1
            out["slo_recovery_s"] = round(max(0.0, float(after["t_s"].iloc[first]) - t_up), 1)
    pending = node_series(exp.samples, "pending_nodes")
    if not pending.empty:
        out["pending_gpu_node_seconds"] = round(
            float(hold_integral(pending, 0.0, spec.cost_window_s).sum()), 1
        )
    sent_n = int(exp.requests["sent_s"].notna().sum())
    out["cost_per_million_requests"] = _round(
        cost_per_million(gpu_seconds, sent_n, spec.usd_per_gpu_hour), 2
    )
    if spec.ranker_service_s and spec.ranker_budget_s:
        small = [t for t in spec.cluster.worker_types if t.name != "gpu-multi"]
        multi = [t for t in spec.cluster.worker_types if t.name == "gpu-multi"]
        alloc = hindsight_allocation(
            exp.requests["scheduled_s"].to_numpy(dtype=np.float64),
            spec.cost_window_s,
            service_s=spec.ranker_service_s,
            budget_s=spec.ranker_budget_s,
            fixed_nodes=sum(t.min_workers for t in small),
            min_gangs=max(1, sum(t.min_workers for t in multi)),
        )
        hs, st = alloc.gpu_node_seconds, alloc.static_peak_gpu_node_seconds
        out.update(
            hindsight_gpu_node_seconds=round(hs, 1),
            hindsight_gangs_per_minute=alloc.gangs,
            static_peak_gpu_node_seconds=round(st, 1),
            gpu_node_seconds_vs_hindsight=round(gpu_node_seconds / hs, 3) if hs else None,
            gpu_node_seconds_vs_static_peak=round(gpu_node_seconds / st, 3) if st else None,
        )
    return out


def _fact_float(facts: Mapping[str, str], key: str) -> float | None:
    try:
        return round(float(facts[key]), 2)
    except (KeyError, ValueError):
        return None


def _p99_recovery(
    windows: pd.DataFrame, t_up: float | None, t_end: float, window_s: float, slo_ms: float
) -> float | None:
    if t_up is None or windows.empty:
        return None
    # whole windows inside the high phase
    high = windows[(windows["t_s"] >= t_up) & (windows["t_s"] + window_s <= t_end + 1e-9)]
    if high.empty:
        return None
    good = (high["p99_slo"] <= slo_ms).to_numpy()
    if not good[-1]:
        return None
    last_bad = np.flatnonzero(~good)
    first_good = 0 if last_bad.size == 0 else int(last_bad[-1]) + 1
    return round(float(high["t_s"].iloc[first_good]) - t_up, 1)


def _capacity(
    windows: pd.DataFrame, window_s: float, slo_ms: float
) -> tuple[float | None, float | None]:
    if windows.empty:
        return None, None
    good = (windows["p99_slo"] <= slo_ms) & (windows["offered"] > 0)
    sustainable = float(windows.loc[good, "offered_rps"].max()) if good.any() else None
    goodput = float((windows["met_slo"] / window_s).max())
    return sustainable, goodput


# --------------------------------------------------------------------------------------------
# Plots (matplotlib's object API: no pyplot state, no display needed)
# --------------------------------------------------------------------------------------------


def _mark_phases(ax: Any, summary: ExperimentSummary) -> None:
    if summary.load_up_s is not None:
        end = summary.load_down_s if summary.load_down_s is not None else summary.duration_s
        ax.axvspan(summary.load_up_s, end, color="tab:orange", alpha=0.08, lw=0)


def plot_latency(exp: Experiment, summary: ExperimentSummary, windows: pd.DataFrame) -> Figure:
    """Latency percentiles per window against the SLO, with failed requests below."""
    fig = Figure(figsize=(10, 5.5), layout="constrained")
    ax, ax_fail = fig.subplots(2, 1, sharex=True, height_ratios=[3, 1])
    centres = windows["t_s"] + exp.spec.window_s / 2
    for col, style in (("p50", "-"), ("p90", "--"), ("p99", "-")):
        ax.plot(centres, windows[col], style, label=f"{col} of 2xx", lw=1, marker=".")
    ax.plot(
        centres,
        windows["p99_slo"],
        "-",
        color="black",
        lw=2,
        label="p99, SLO view (misses = client timeout)",
    )
    ax.axhline(summary.slo_ms, color="red", lw=1, ls=":", label=f"SLO {summary.slo_ms:g} ms")
    ax.set_yscale("log")
    ax.set_ylabel("latency (ms)")
    ax.set_title(f"{exp.spec.name}: latency per {exp.spec.window_s:g} s window")
    _mark_phases(ax, summary)
    ax.legend(loc="upper right", fontsize=8)
    ax.grid(True, which="both", alpha=0.3)
    width = exp.spec.window_s
    bottom = np.zeros(len(windows))
    for col, colour in (
        ("degraded", "tab:olive"),
        ("http_503", "tab:red"),
        ("timeout", "tab:purple"),
        ("http_other", "tab:brown"),
        ("error", "black"),
    ):
        values = windows[col].to_numpy(dtype=np.float64) / width
        ax_fail.bar(
            windows["t_s"],
            values,
            width=width,
            bottom=bottom,
            align="edge",
            color=colour,
            label=col,
        )
        bottom += values
    _mark_phases(ax_fail, summary)
    ax_fail.set_ylabel("req/s")
    ax_fail.set_xlabel("seconds from the start of traffic")
    ax_fail.legend(loc="upper right", fontsize=7, ncols=5)
    ax_fail.grid(True, alpha=0.3)
    return fig


def plot_scaling(exp: Experiment, summary: ExperimentSummary) -> Figure:
    """Running (solid) and target (dashed) replicas per deployment; worker nodes per type."""
    fig = Figure(figsize=(10, 6), layout="constrained")
    ax_r, ax_n = fig.subplots(2, 1, sharex=True)
    running = replica_series(exp.samples, "running_replicas")
    target = replica_series(exp.samples, "target_replicas")
    colours: dict[str, Any] = {}
    for i, name in enumerate(running.columns):
        colours[name] = f"C{i}"
        ax_r.step(running.index, running[name], where="post", color=colours[name], label=name)
        if name in target.columns:
            ax_r.step(
                target.index, target[name], where="post", color=colours[name], ls="--", lw=0.8
            )
    ax_r.set_ylabel("replicas (solid: running,\ndashed: target)")
    ax_r.set_title(f"{exp.spec.name}: replicas and worker nodes (policy {exp.spec.policy.name})")
    ax_r.legend(loc="upper right", fontsize=8)
    _mark_phases(ax_r, summary)
    ax_r.grid(True, alpha=0.3)
    nodes = node_series(exp.samples, "worker_nodes")
    pending = node_series(exp.samples, "pending_nodes")
    for i, name in enumerate(nodes.columns):
        ax_n.step(nodes.index, nodes[name], where="post", color=f"C{i}", label=f"{name} active")
        if name in pending.columns and pending[name].max() > 0:
            ax_n.step(
                pending.index,
                pending[name],
                where="post",
                color=f"C{i}",
                ls=":",
                label=f"{name} pending",
            )
    ax_n.set_ylabel("worker nodes")
    for axis in (ax_r, ax_n):
        axis.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax_n.set_xlabel("seconds from the start of traffic")
    ax_n.legend(loc="upper right", fontsize=8)
    _mark_phases(ax_n, summary)
    ax_n.grid(True, alpha=0.3)
    return fig


def plot_load(exp: Experiment, summary: ExperimentSummary, windows: pd.DataFrame) -> Figure:
    """Arrival rate (the shape, and what was scheduled and answered) and the generator's lag."""
    fig = Figure(figsize=(10, 4.5), layout="constrained")
    ax = fig.subplots()
    grid = np.linspace(0.0, exp.spec.traffic.duration_s, 600)
    ax.plot(grid, rate(exp.spec.traffic.shape, grid), color="grey", lw=1, label="shape (req/s)")
    width = exp.spec.window_s
    ax.step(windows["t_s"], windows["offered_rps"], where="post", label="scheduled (req/s)")
    ax.step(windows["t_s"], windows["ok"] / width, where="post", label="answered 2xx (req/s)")
    ax.step(windows["t_s"], windows["met_slo"] / width, where="post", label="met SLO (req/s)")
    ax.set_ylabel("requests per second")
    ax.set_xlabel("seconds from the start of traffic")
    ax.set_title(f"{exp.spec.name}: arrival rate and goodput")
    _mark_phases(ax, summary)
    ax.grid(True, alpha=0.3)
    lag = ax.twinx()
    lag.plot(
        windows["t_s"] + width / 2,
        windows["lag_p99"],
        color="black",
        lw=0.8,
        ls=":",
        label="send lag p99 (ms)",
    )
    lag.set_ylabel("send lag p99 (ms)")
    lines, labels = ax.get_legend_handles_labels()
    lines2, labels2 = lag.get_legend_handles_labels()
    ax.legend(lines + lines2, labels + labels2, loc="upper right", fontsize=8)
    return fig


def plot_policy(exp: Experiment, summary: ExperimentSummary) -> Figure:
    """The predictive policy at work: the ranker load it measured and what it predicted one
    lead time ahead (drawn where it predicted for), and the gangs it wanted and held."""
    d = exp.decisions
    assert d is not None
    fig = Figure(figsize=(10, 6), layout="constrained")
    ax_l, ax_r = fig.subplots(2, 1, sharex=True)
    lead = max(exp.spec.node_arrival_s.values(), default=0.0) + exp.spec.replica_start_s
    ax_l.plot(d["t_s"], d["load"], color="lightgrey", lw=0.8, label="ongoing requests (tick)")
    ax_l.plot(d["t_s"], d["level"], color="C0", label="level (window mean)")
    ax_l.plot(
        d["t_s"] + lead, d["predicted"], color="C1", lw=1, label=f"predicted, drawn +{lead:g} s"
    )
    if d["seasonal"].notna().any():
        ax_l.plot(
            d["t_s"] + lead,
            d["seasonal"],
            color="C2",
            ls="--",
            lw=1,
            label=f"earlier day x ratio, drawn +{lead:g} s",
        )
    ax_l.set_ylabel("ranker load\n(ongoing requests)")
    ax_l.set_title(f"{exp.spec.name}: predictive policy (ranker)")
    ax_l.legend(loc="upper right", fontsize=8)
    _mark_phases(ax_l, summary)
    ax_l.grid(True, alpha=0.3)
    ax_r.step(d["t_s"], d["wanted"], where="post", color="C1", lw=0.8, label="wanted now")
    ax_r.step(d["t_s"], d["held"], where="post", color="C3", label="asked for (after the hold)")
    running = replica_series(exp.samples, "running_replicas")
    for ranker in [c for c in running.columns if str(c).startswith("Ranker")][:1]:
        ax_r.step(
            running.index, running[ranker], where="post", color="black", lw=1, label="serving"
        )
    ax_r.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax_r.set_ylabel("ranker gangs")
    ax_r.set_xlabel("seconds from the start of traffic")
    ax_r.set_xlim(right=exp.spec.cost_window_s)
    ax_r.legend(loc="upper right", fontsize=8)
    _mark_phases(ax_r, summary)
    ax_r.grid(True, alpha=0.3)
    return fig


def figures(exp: Experiment, summary: ExperimentSummary | None = None) -> dict[str, Figure]:
    """The report's figures by name (``latency``, ``scaling``, ``load``, and ``policy`` when
    the run has the predictive policy's decisions)."""
    summary = summary or summarize(exp)
    windows = request_windows(
        exp.requests, exp.spec.window_s, exp.spec.slo_ms, exp.spec.traffic.timeout_s * 1000.0
    )
    out = {
        "latency": plot_latency(exp, summary, windows),
        "scaling": plot_scaling(exp, summary),
        "load": plot_load(exp, summary, windows),
    }
    if exp.decisions is not None:
        out["policy"] = plot_policy(exp, summary)
    return out


# --------------------------------------------------------------------------------------------
# report.md
# --------------------------------------------------------------------------------------------


def fmt_number(value: float | int | None, unit: str = "", digits: int = 1) -> str:
    """``value`` with ``digits`` decimals and ``unit``; "n/a" for None or non-finite."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    if isinstance(value, int):
        return f"{value}{unit}"
    return f"{value:.{digits}f}{unit}"


def fmt_share(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}%"


def result_rows(s: ExperimentSummary) -> list[tuple[str, str]]:
    """The report's result table as (metric, value) rows."""
    reps = ", ".join(f"{k} {v}" for k, v in sorted(s.max_replicas.items()))
    base = ", ".join(f"{k} {v}" for k, v in sorted(s.baseline_replicas.items()))
    nodes = ", ".join(f"{k} {v}" for k, v in sorted(s.max_worker_nodes_by_type.items()))
    base_nodes = ", ".join(f"{k} {v}" for k, v in sorted(s.baseline_worker_nodes.items()))
    return [
        (
            "load",
            f"{s.low_rate_rps:g} req/s, {fmt_number(s.high_rate_rps)} req/s from "
            f"t={fmt_number(s.load_up_s, ' s', 0)} to t={fmt_number(s.load_down_s, ' s', 0)}",
        ),
        (
            "requests sent / with an outcome",
            f"{s.requests_sent} / {s.requests_with_outcome} (scheduled {s.requests_scheduled})",
        ),
        (
            "time to scale up (first added replica of any deployment serving)",
            fmt_number(s.time_to_scale_up_s, " s"),
        ),
        (
            "time to scale up by deployment (from the rise; negative: before it)",
            ", ".join(
                f"{k} {fmt_number(v, ' s')}"
                for k, v in sorted(s.time_to_scale_up_s_by_deployment.items())
            )
            or "-",
        ),
        (
            "p99 (SLO view) back under the SLO and staying there, after the rise",
            fmt_number(s.slo_recovery_s, " s") if s.slo_recovery_s is not None else "no",
        ),
        ("time to first added worker node", fmt_number(s.time_to_first_node_s, " s")),
        ("time to peak replicas", fmt_number(s.time_to_peak_replicas_s, " s")),
        (
            "time to scale down: replicas back to baseline",
            fmt_number(s.time_to_replicas_down_s, " s"),
        ),
        (
            "time to scale down: worker nodes back to baseline",
            fmt_number(s.time_to_nodes_down_s, " s"),
        ),
        ("time to scale down (both)", fmt_number(s.time_to_scale_down_s, " s")),
        ("replicas: baseline -> max", f"{base} -> {reps} (total {s.max_replicas_total})"),
        ("worker nodes: baseline -> max", f"{base_nodes} -> {nodes} (total {s.max_worker_nodes})"),
        (
            f"SLO attainment (2xx, ranked, <= {s.slo_ms:g} ms)",
            f"{fmt_share(s.slo_attainment)} (high phase {fmt_share(s.slo_attainment_high)})",
        ),
        ("latency-only SLO attainment (degraded allowed)", fmt_share(s.latency_slo_attainment)),
        (
            "p50 / p99 of 2xx (whole run)",
            f"{fmt_number(s.p50_ms, ' ms')} / {fmt_number(s.p99_ms, ' ms')}",
        ),
        (
            "p99, SLO view (misses count as the client timeout): whole run",
            fmt_number(s.p99_slo_ms, " ms"),
        ),
        (
            "p99, SLO view: before / high / after",
            " / ".join(
                fmt_number(s.p99_slo_by_phase_ms.get(k), " ms") for k in ("before", "high", "after")
            ),
        ),
        (
            "p99 of 2xx before / high / after",
            " / ".join(
                fmt_number(s.p99_by_phase_ms.get(k), " ms") for k in ("before", "high", "after")
            ),
        ),
        (
            "p99 back under the SLO after the step",
            fmt_number(s.p99_recovered_after_s, " s")
            if s.p99_recovered_after_s is not None
            else "no (not by the end of the high phase)",
        ),
        (
            "degraded (ranker skipped) / 503 / other HTTP errors",
            f"{s.degraded} / {s.http_503} / {s.http_other}",
        ),
        ("timeouts / connection errors", f"{s.timeouts} / {s.errors}"),
        (
            "cost: replica-seconds",
            f"{s.replica_seconds_total:.0f} ("
            + ", ".join(f"{k} {v:.0f}" for k, v in sorted(s.replica_seconds.items()))
            + f") over {s.cost_window_s:.0f} s",
        ),
        ("cost: GPU-node-seconds / GPU-seconds", f"{s.gpu_node_seconds:.0f} / {s.gpu_seconds:.0f}"),
        (
            "GPU-node-seconds: hindsight / static peak (ratio of this run to each)",
            f"{fmt_number(s.hindsight_gpu_node_seconds, '', 0)} / "
            f"{fmt_number(s.static_peak_gpu_node_seconds, '', 0)} "
            f"({fmt_number(s.gpu_node_seconds_vs_hindsight, 'x', 2)} / "
            f"{fmt_number(s.gpu_node_seconds_vs_static_peak, 'x', 2)})",
        ),
        ("node-seconds pending (requested, not yet arrived)", f"{s.pending_gpu_node_seconds:.0f}"),
        (
            f"cost per million requests at ${fmt_number(s.usd_per_gpu_hour, '', 2)}/GPU-hour",
            fmt_number(s.cost_per_million_requests, " $", 2),
        ),
        (
            "degraded share / by reason / caused by scale-down (ranker failed or unavailable "
            "while ranker replicas were being removed)",
            f"{fmt_share(s.degraded_share)} / "
            + (", ".join(f"{k} {v}" for k, v in sorted(s.degraded_by_reason.items())) or "-")
            + f" / {s.degraded_by_scale_down}",
        ),
        ("requests without an outcome", str(s.requests_without_outcome)),
        ("commit", (s.commit[:12] or "?") + (" (dirty)" if s.dirty_files else "")),
        (
            "generator send lag p50 / p99 / max",
            " / ".join(
                fmt_number(v, " ms")
                for v in (s.send_lag_ms.p50, s.send_lag_ms.p99, s.send_lag_ms.max)
            ),
        ),
        (
            "generator CPU used / waited for a CPU / niceness",
            f"{fmt_number(s.client_cpu_s, ' s')} / {fmt_number(s.client_cpu_wait_s, ' s')} / "
            + fmt_number(s.client_nice),
        ),
    ]


def _table(rows: Sequence[Sequence[str]], header: Sequence[str]) -> str:
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join("---" for _ in header) + " |"]
    lines += ["| " + " | ".join(str(c).replace("|", "\\|") for c in row) + " |" for row in rows]
    return "\n".join(lines)


def render_markdown(exp: Experiment, s: ExperimentSummary, plots: Mapping[str, str]) -> str:
    """``report.md`` text; ``plots`` maps figure names to file names beside it."""
    spec = exp.spec
    shape = spec.traffic.shape
    policy = spec.policy
    out = [
        f"# Autoscaling experiment `{spec.name}`",
        "",
        f"Policy **{policy.name}** ({policy.description}); load shape **{shape.kind}** over "
        f"{spec.traffic.duration_s:g} s; SLO: 2xx, ranked (not degraded), within "
        f"**{spec.slo_ms:g} ms** of the scheduled send time. Serve profile `{spec.profile}` "
        f"(the serve config that goes to Kubernetes) on Ray's autoscaler with the fake "
        f"multi-node provider.",
        "",
        "## Result",
        "",
        _table(result_rows(s), ["metric", "value"]),
        "",
    ]
    if s.notes:
        out += ["Notes from the analysis:", ""] + [f"- {n}" for n in s.notes] + [""]
    out += ["## Plots", ""]
    for name, file in plots.items():
        out += [f"![{name}]({file})", ""]
    out += [
        "## Setup",
        "",
        "Worker node types (logical resources; all compute shares the machine's cores):",
        "",
        _table(
            [
                (t.name, str(t.cpus), str(t.gpus), str(t.min_workers), str(t.max_workers))
                for t in spec.cluster.worker_types
            ],
            ["type", "CPU", "GPU", "min", "max"],
        ),
        "",
        f"Idle timeout {spec.cluster.idle_timeout_s:g} s, autoscaler period "
        f"{spec.cluster.update_interval_s:g} s, upscaling speed {spec.cluster.upscaling_speed:g}; "
        "head with 0 CPUs (Serve controller and the HTTP proxy only, `proxy_location: HeadOnly`).",
        "",
        f"Policy `{policy.name}`: upscale delay {policy.upscale_delay_s:g} s, downscale delay "
        f"{policy.downscale_delay_s:g} s, look-back {policy.look_back_period_s:g} s."
        + (
            f" Predictive stages ({', '.join(policy.predictive)}): headroom "
            f"{policy.headroom:g}x, scale-down hold {policy.downscale_hold_s:g} s; "
            + (
                "given an earlier day's load (ranker ongoing requests per 30 s: "
                + ", ".join(f"{x:.2f}" for x in spec.daily_profile)
                + ")."
                if spec.daily_profile
                else "no earlier day's load given."
            )
            if policy.predictive
            else ""
        ),
        "",
        _table(
            [
                (
                    stage,
                    f"{sp.target_ongoing_requests:g}",
                    "profile" if sp.max_replicas is None else str(sp.max_replicas),
                )
                for stage, sp in policy.stages.items()
            ],
            ["stage", "target ongoing requests", "max replicas (cap)"],
        ),
        "",
        "Overrides of the serve profile (everything else, every resource request included, is "
        "exactly the committed config):",
        "",
        _table(
            [(k, json.dumps(a), json.dumps(b)) for k, a, b in spec.config_diff],
            ["field", "profile", "experiment"],
        )
        if spec.config_diff
        else "(none)",
        "",
        f"Traffic: open loop, seed {spec.traffic.seed}, mix "
        + ", ".join(f"{k} {v:.0%}" for k, v in spec.traffic.mix.probabilities().items())
        + f", client timeout {spec.traffic.timeout_s:g} s, shape `{shape.model_dump_json()}`.",
        "",
        "Host: " + ", ".join(f"{k} {v}" for k, v in spec.host.items()) if spec.host else "",
        "",
        "## Reproduce",
        "",
        "```",
        spec.command or "(command not recorded)",
        "```",
        "",
        "Definitions: see the docstring of `recsys/experiments/report.py`.",
        "",
    ]
    return "\n".join(out)


def write_report(
    directory: str | Path, dpi: int = 90, window_s: float | None = None
) -> ExperimentSummary:
    """Write ``summary.json``, the PNG plots and ``report.md`` into an experiment directory
    (``window_s`` overrides the analysis window recorded in its spec)."""
    directory = Path(directory)
    exp = load_experiment(directory, window_s)
    summary = summarize(exp)
    (directory / SUMMARY_FILE).write_text(
        json.dumps(summary.model_dump(mode="json"), indent=2) + "\n"
    )
    drawn = figures(exp, summary)
    for name, fig in drawn.items():
        fig.savefig(directory / PLOTS[name], dpi=dpi)
    plots = {name: PLOTS[name] for name in drawn}
    (directory / REPORT_FILE).write_text(render_markdown(exp, summary, plots))
    return summary


def main(argv: list[str] | None = None) -> int:
    """``python -m recsys.experiments.report DIR...``: (re)write the reports of experiments."""
    import argparse

    parser = argparse.ArgumentParser(
        prog="python -m recsys.experiments.report",
        description="Write summary.json, report.md and the PNG plots of experiment directories "
        "(written by scripts/experiment.py) from their parquet files.",
    )
    parser.add_argument("directories", nargs="+", type=Path, help="experiment directories")
    parser.add_argument("--window", type=float, default=None, help="analysis window, seconds")
    args = parser.parse_args(argv)
    for directory in args.directories:
        summary = write_report(directory, window_s=args.window)
        print(f"{directory}: SLO attainment {summary.slo_attainment}, p99 {summary.p99_ms} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
