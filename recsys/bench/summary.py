"""The benchmark's numbers as plain data: ``summary.json``.

:func:`build_summary` turns a :class:`~recsys.bench.harness.BenchResult` into the summary
(per system: sustained rate, latency at fixed rates, CPU per request by both methods and by
process role, memory, stage breakdowns; the headline ratios; the Done verdict; every variant
against its baseline). :mod:`recsys.bench.report` renders only this summary, so a report can
be re-rendered from a saved ``summary.json`` and tested without running anything.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from recsys.bench.analysis import (
    cpu_per_request_ms,
    passes,
    point_at,
    ratio,
    request_components,
    spread,
    stage_breakdown,
    timings_frame,
)
from recsys.bench.caches import cache_tiers, stream_hit_rates
from recsys.bench.config import BenchConfig, SloConfig
from recsys.bench.streams import STREAM_DESCRIPTIONS, repeat_share

if TYPE_CHECKING:
    from recsys.bench.harness import BenchResult, SystemRun

SCHEMA_VERSION = 1
MAIN = ("inprocess", "naive", "monolith", "serve", "serve_split", "serve_fused")
P50_BUDGET_MS = 8.0
"""The issue's bound on Serve's low-load p50 over the in-process pipeline."""
CACHED_STREAM_MIN_RATIO = 0.8
"""The issue's bound on Serve / naive sustained on the cached stream."""

DEFINITIONS = {
    "good": "outcome ok (HTTP 200 / an in-process answer) and not degraded (ranker not skipped)",
    "latency": "from the request's scheduled arrival to its answer (generator lag counts)",
    "passes": "good share >= min_good_share and p99 latency of good requests <= SLO",
    "sustained_rps": "highest offered rate that passes with every lower rate tried passing",
    "cpu_tree": "utime+stime of every process in the server's process tree over the point "
    "(Ray: driver, GCS, raylet, dashboard, controller, proxy, replicas); in-process: this "
    "process minus the dispatcher thread",
    "cpu_machine": "machine busy CPU (/proc/stat) over the point minus the benchmark process's "
    "own CPU (the load generator); a cross-check that also sees processes outside the tree",
    "other_cores": "machine busy CPU over a point minus the server tree and the benchmark "
    "process, in cores: someone else's work (a point with a high value is suspect)",
    "niceness": "load generator, in-process pipeline and naive server run at niceness 15, "
    "like Ray's workers; Ray's daemons (GCS, raylet, dashboard) keep Ray's own niceness 0",
    "outside_server": "client answer time minus the server's timings_ms.total: HTTP client, "
    "Serve proxy / uvicorn, transport to and from the ingress",
    "chain_wait": "chain_wall - encode - retrieve - rank (ingress chaining the stages): every "
    "hop ingress -> encoder -> retriever -> ranker -> ingress with the batch waits and queues",
    "encode_retrieve_wait": "retrieval_wall - encode - retrieve (ingress awaiting retrieval "
    "first): hops ingress -> encoder -> retriever -> ingress with batch waits and queues",
    "rank_wait": "rank_wall - rank: hops to and from the ranker, its batch wait and queue",
    "ingress_other": "total - chain_wall (or total - retrieval_wall - rank_wall): the "
    "ingress's own work",
}


# ---- summary ---------------------------------------------------------------------------------


def clean(value: Any) -> Any:
    """JSON-safe: NaN / inf -> None, numpy scalars -> Python, recursively."""
    if isinstance(value, Mapping):
        return {str(k): clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [clean(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def point_rows(run: SystemRun) -> list[dict[str, Any]]:
    """One row per measured rate: latency summary, CPU (both methods), memory, roles."""
    rows = []
    for point in run.points:
        s, r = point.summary, point.run
        n_good = int(s["n_good"])
        rows.append(
            {
                "system": run.spec.name,
                **s,
                "wall_s": r.wall_s,
                "server_cpu_s": r.server_cpu_s,
                "machine_cpu_s": r.machine_cpu_s,
                "client_cpu_s": r.client_cpu_s,
                "cpu_ms_per_req": cpu_per_request_ms(r.server_cpu_s, n_good),
                "cpu_ms_per_req_machine": cpu_per_request_ms(r.machine_cpu_s, n_good),
                "client_cpu_ms_per_req": cpu_per_request_ms(r.client_cpu_s, n_good),
                "server_cores": r.server_cpu_s / r.wall_s if r.wall_s > 0 else math.nan,
                "rss_mb": float(r.extra.get("rss_bytes", 0)) / 1e6,
                "cpu_ms_per_req_by_role": {
                    k: cpu_per_request_ms(v, n_good)
                    for k, v in r.extra.get("cpu_by_role", {}).items()
                },
                "roles": r.extra.get("roles", {}),
                "batch_size_mean": r.extra.get("batch_size_mean"),
                "background_cores": max(0.0, r.machine_cpu_s - r.server_cpu_s) / r.wall_s
                if r.wall_s > 0
                else math.nan,
                "attempts": r.extra.get("attempts", 1),
                "contended": bool(r.extra.get("foreign_ray")),
            }
        )
    return rows


def records_frame(run: SystemRun) -> pd.DataFrame:
    """All records of a system (one row per scheduled request per rate) with timings."""
    frames = []
    for point in run.points:
        rec = point.run.records.copy()
        t = timings_frame(point.run.timings)
        rec = rec.join(t, how="left")
        rec.insert(0, "phase", point.summary.get("phase", "search"))
        rec.insert(0, "repeat", int(point.summary.get("repeat", 0)))
        rec.insert(0, "stream", point.summary.get("stream", ""))
        rec.insert(0, "rate", float(point.summary["rate"]))
        rec.insert(0, "system", run.spec.name)
        frames.append(rec)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def _breakdowns(run: SystemRun, rate: float, stream: str) -> dict[str, Any] | None:
    for point in reversed(run.points):
        if point.summary.get("stream", stream) != stream:
            continue
        if math.isclose(float(point.summary["rate"]), rate):
            comps = request_components(point.run.records, timings_frame(point.run.timings))
            return {
                "rate": rate,
                "search": stage_breakdown(comps, "search"),
                "all": stage_breakdown(comps, None),
            }
    return None


def stream_summary(
    run: SystemRun, stream: str, low_rates: Sequence[float]
) -> dict[str, Any] | None:
    """One system on one stream: the sustained rate of each repeat with its spread, and the
    p50 / p99 at each low rate (median over the repeats); None if not measured there."""
    repeats = [r for r in run.searches_by_repeat if r["stream"] == stream]
    rows = [p.summary for p in run.points if p.summary.get("stream") == stream]
    if not repeats and not rows:
        return None
    low: dict[str, Any] = {}
    for rate in low_rates:
        at_rate = [r for r in rows if r.get("phase") == "low" and math.isclose(r["rate"], rate)]
        if not at_rate:
            continue
        p50s = [float(r["p50_ms"]) for r in at_rate]
        low[f"{rate:g}"] = {
            "n": int(sum(r["n"] for r in at_rate)),
            "p50_ms": spread(p50s)["median"],
            "p50_ms_repeats": p50s,
            "p99_ms": spread(float(r["p99_ms"]) for r in at_rate)["median"],
            "good_share": min(float(r["good_share"]) for r in at_rate),
        }
    values = [float(r["sustained"]) for r in repeats]
    return {
        "sustained_rps": spread(values)["median"] if values else None,
        "sustained_rps_repeats": values,
        "sustained_spread": spread(values),
        "failing_rps_repeats": [r["failing"] for r in repeats],
        "pinned": all(r["pinned"] for r in repeats) if repeats else None,
        "points": len([r for r in rows if r.get("phase") == "search"]),
        "low": low,
    }


def _system_summary(
    run: SystemRun, config: BenchConfig, ref_rate: float, caches: Mapping[str, Any]
) -> dict[str, Any]:
    slo, low_rate, low_rates = config.slo, config.low_rate, config.sweep.low_rates
    main = config.main_stream
    all_rows = point_rows(run)
    rows = [r for r in all_rows if r.get("stream", main) == main]
    frame = pd.DataFrame(rows) if rows else pd.DataFrame(columns=["rate", "passes"])
    if rows:
        frame["passes"] = [passes(r, slo) for r in rows]
    streams = {
        s: stream_summary(run, s, low_rates)
        for s in config.streams
        if stream_summary(run, s, low_rates) is not None
    }
    sustained = (streams.get(main) or {}).get("sustained_rps")
    last_repeat = next((r for r in reversed(run.searches_by_repeat) if r["stream"] == main), None)

    def at(rate: float | None) -> dict[str, Any] | None:
        if not rows or rate is None:
            return None
        row = point_at(frame, rate)
        if row is None:
            return None
        keys = (
            "rate", "n", "good_share", "p50_ms", "p90_ms", "p99_ms", "passes",
            "cpu_ms_per_req", "cpu_ms_per_req_machine", "client_cpu_ms_per_req",
            "server_cores", "rss_mb", "cpu_ms_per_req_by_role", "roles", "degraded_share",
        )  # fmt: skip
        return {k: row.get(k) for k in keys}

    low = at(low_rate)
    low_main = (streams.get(main) or {}).get("low", {}).get(f"{low_rate:g}")
    if low is not None and low_main is not None:  # medians over the repeats
        low = {**low, "p50_ms": low_main["p50_ms"], "p99_ms": low_main["p99_ms"]}
    return {
        "kind": run.spec.kind,
        "description": run.spec.description,
        "baseline": run.spec.baseline,
        "topology": run.info.get("topology"),
        "same_as": run.same_as,
        "error": run.error,
        "sustained_rps": sustained if run.error is None or rows else None,
        "streams": streams,
        "cache": caches,
        "low_load": low,
        "reference": at(ref_rate),
        "at_sustained": at(last_repeat["sustained"]) if last_repeat else None,
        "fixed": {f"{r:g}": at(r) for r in low_rates},
        "rss_mb_max": float(frame["rss_mb"].max()) if rows else None,
        "startup_s": run.startup_s,
        "idle": run.idle,
        "info": {k: v for k, v in run.info.items() if k != "env"},
        "env": run.spec.env,
        "stopped": run.stopped,
        "outcome_problems": run.outcome_problems,
        "contended_points": [r["rate"] for r in all_rows if r["contended"]],
        "stages_low": _breakdowns(run, low_rate, main),
        "stages_reference": _breakdowns(run, ref_rate, main),
        "searches": run.searches_by_repeat,
        "points": [
            {k: v for k, v in r.items() if k != "outcomes"} | {"outcomes": r["outcomes"]}
            for r in all_rows
        ],
    }


def keeps_up(summary: Mapping[str, Any], slo: SloConfig) -> bool:
    """Whether a system kept up with a rate: enough good answers and a median within the
    SLO (its p99 may be over: then it does not *sustain* the rate, but its CPU per request
    and stage costs are still those of a system that is not drowning in a backlog)."""
    p50 = summary.get("p50_ms")
    return bool(
        float(summary["good_share"]) >= slo.min_good_share
        and p50 is not None
        and not math.isnan(float(p50))
        and float(p50) <= slo.p99_ms
    )


def reference_rate(result: BenchResult, low_rate: float) -> float:
    """The highest fixed rate every main system that ran keeps up with (:func:`keeps_up`),
    else the low rate: where CPU per request and stage costs are compared on equal load."""
    slo = result.config.slo
    runs = [r for r in result.systems if r.spec.name in MAIN and r.points]
    main = result.config.main_stream
    for rate in sorted(result.config.sweep.low_rates, reverse=True):
        rows = [
            next(
                (
                    p.summary
                    for p in run.points
                    if math.isclose(p.summary["rate"], rate)
                    and p.summary.get("stream", main) == main
                ),
                None,
            )
            for run in runs
        ]
        if runs and all(row is not None and keeps_up(row, slo) for row in rows):
            return float(rate)
    return low_rate


def build_summary(result: BenchResult, command: str = "") -> dict[str, Any]:
    """Everything the report shows, as plain data."""
    config = result.config
    low = config.low_rate
    ref = reference_rate(result, low)
    systems = {
        run.spec.name: _system_summary(run, config, ref, system_caches(run, config))
        for run in result.systems
    }
    summary: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "generated_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(result.finished_at)),
        "duration_s": result.finished_at - result.started_at,
        "command": command,
        "environment": result.environment,
        "slo": config.slo.model_dump(),
        "sweep": config.sweep.model_dump(),
        "seed": config.seed,
        "mix": config.mix.model_dump(),
        "torch_threads": config.torch_threads,
        "nice": config.nice,
        "low_load_rate": low,
        "reference_rate": ref,
        "definitions": DEFINITIONS,
        "systems": systems,
        "streams": streams_summary(result, systems),
        "experiments": result.experiments,
    }
    summary["ratios"] = ratios(summary)
    summary["verdict"] = verdict(summary)
    summary["optimisations"] = optimisations(summary)
    return clean(summary)


def system_caches(run: SystemRun, config: BenchConfig) -> dict[str, Any]:
    """Per stream, the query-cache hit rate the system's caches had (``recsys.bench.caches``:
    replayed from what it was sent, not read from metrics)."""
    try:
        app = run.spec.app_config(config.app)
    except ValueError:
        return {}
    tiers = cache_tiers(run.spec.kind, app, workers=config.cores)
    return stream_hit_rates(run.searches, tiers, seed=config.seed)


def streams_summary(result: BenchResult, systems: Mapping[str, Any]) -> dict[str, Any]:
    """Per stream: what it is, the share of its searches repeating an earlier one (over the
    longest run of one system on it), and every system's sustained rate, spread and hit
    rate."""
    out: dict[str, Any] = {}
    for stream in result.config.streams:
        sent = max(
            ([q for s, q in run.searches if s == stream] for run in result.systems),
            key=len,
            default=[],
        )
        per_system = {
            name: s["streams"][stream]
            for name, s in systems.items()
            if stream in (s.get("streams") or {})
        }
        out[stream] = {
            "description": STREAM_DESCRIPTIONS.get(stream, ""),
            "searches": len(sent),
            "repeat_share": repeat_share(sent) if sent else None,
            "sustained_rps": {k: v["sustained_rps"] for k, v in per_system.items()},
            "sustained_spread": {k: v["sustained_spread"] for k, v in per_system.items()},
            "cache_hit_rate": {
                name: (s.get("cache") or {}).get(stream, {}).get("hit_rate")
                for name, s in systems.items()
                if stream in (s.get("cache") or {})
            },
        }
    return out


def low_load_overheads(summary: Mapping[str, Any], system: str) -> dict[str, float]:
    """``system``'s p50 minus the in-process p50 at each low rate of the main stream (both
    medians over the repeats)."""
    main = next(iter(summary.get("streams") or {"longtail": None}))
    mine = get_path(summary, system, "streams", main, "low") or {}
    bound = get_path(summary, "inprocess", "streams", main, "low") or {}
    out = {}
    for rate, row in mine.items():
        other = bound.get(rate)
        if other is not None and row.get("p50_ms") is not None and other.get("p50_ms") is not None:
            out[rate] = float(row["p50_ms"]) - float(other["p50_ms"])
    return out


def get_path(summary: Mapping[str, Any], system: str, *path: str) -> Any:
    node: Any = summary.get("systems", {}).get(system)
    for key in path:
        if not isinstance(node, Mapping):
            return None
        node = node.get(key)
    return node


def ratios(summary: Mapping[str, Any]) -> dict[str, float | None]:
    """The headline ratios (Serve over each baseline) and low-load p50 overheads."""

    def sustained(name: str) -> float | None:
        return get_path(summary, name, "sustained_rps")

    def overhead(name: str) -> float | None:
        """Median over the low rates of the p50 over in-process."""
        return spread(low_load_overheads(summary, name).values())["median"]

    def cached(name: str) -> float | None:
        return get_path(summary, name, "streams", "cached", "sustained_rps")

    def cpu(name: str) -> float | None:
        return get_path(summary, name, "reference", "cpu_ms_per_req")

    return {
        "serve_vs_naive_sustained_ratio": ratio(sustained("serve"), sustained("naive")),
        "serve_vs_inprocess_sustained_ratio": ratio(sustained("serve"), sustained("inprocess")),
        "serve_vs_monolithic_sustained_ratio": ratio(sustained("serve"), sustained("monolith")),
        "monolith_vs_naive_sustained_ratio": ratio(sustained("monolith"), sustained("naive")),
        "naive_vs_inprocess_sustained_ratio": ratio(sustained("naive"), sustained("inprocess")),
        "serve_p50_overhead_ms": overhead("serve"),
        "monolith_p50_overhead_ms": overhead("monolith"),
        "naive_p50_overhead_ms": overhead("naive"),
        "serve_vs_inprocess_cpu_per_req_ratio": ratio(cpu("serve"), cpu("inprocess")),
        "serve_vs_naive_cpu_per_req_ratio": ratio(cpu("serve"), cpu("naive")),
        "serve_vs_monolith_cpu_per_req_ratio": ratio(cpu("serve"), cpu("monolith")),
        "serve_split_vs_naive_sustained_ratio": ratio(sustained("serve_split"), sustained("naive")),
        "serve_fused_vs_naive_sustained_ratio": ratio(sustained("serve_fused"), sustained("naive")),
        "serve_vs_naive_sustained_ratio_cached_stream": ratio(cached("serve"), cached("naive")),
    }


def verdict(summary: Mapping[str, Any]) -> dict[str, Any]:
    """The issue's conditions, with their numbers (None: not measured in this run)."""
    r = summary["ratios"]
    vs_naive = r.get("serve_vs_naive_sustained_ratio")
    cached = r.get("serve_vs_naive_sustained_ratio_cached_stream")
    overhead = r.get("serve_p50_overhead_ms")
    return {
        "serve_sustains_at_least_naive": None if vs_naive is None else vs_naive >= 1.0,
        "serve_sustains_0.8_of_naive_cached_stream": None
        if cached is None
        else cached >= CACHED_STREAM_MIN_RATIO,
        "serve_p50_overhead_within_budget": None if overhead is None else overhead <= P50_BUDGET_MS,
        "p50_budget_ms": P50_BUDGET_MS,
    }


def optimisations(summary: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Each variant against its baseline: speed, CPU, memory (quality: from the experiments)."""
    out = []
    for name, s in summary["systems"].items():
        base_name = s.get("baseline")
        if not base_name or base_name not in summary["systems"]:
            continue
        b = summary["systems"][base_name]

        def pair(*path: str, _b: Any = b, _s: Any = s) -> tuple[Any, Any]:
            def dig(node: Any) -> Any:
                for key in path:
                    node = node.get(key) if isinstance(node, Mapping) else None
                return node

            return dig(_b), dig(_s)

        out.append(
            {
                "variant": name,
                "baseline": base_name,
                "description": s.get("description"),
                "error": s.get("error"),
                "sustained_rps": pair("sustained_rps"),
                "p50_low_ms": pair("low_load", "p50_ms"),
                "p99_low_ms": pair("low_load", "p99_ms"),
                "p50_ref_ms": pair("reference", "p50_ms"),
                "p99_ref_ms": pair("reference", "p99_ms"),
                "cpu_ms_per_req_ref": pair("reference", "cpu_ms_per_req"),
                "rss_mb": pair("rss_mb_max"),
                "idle_cpu_cores": pair("idle", "cpu_cores"),
                "idle_processes": pair("idle", "n_processes"),
                "startup_s": pair("startup_s"),
            }
        )
    return out
