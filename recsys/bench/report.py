"""Benchmark outputs: ``report.md``, plots, raw parquet, next to ``summary.json``.

Everything here reads the plain-data summary of :mod:`recsys.bench.summary`; only
:func:`write_outputs` looks at the raw result (for the parquet files).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from recsys.bench.analysis import ratio
from recsys.bench.summary import (
    MAIN,
    build_summary,
    clean,
    get_path,
    low_load_overheads,
    point_rows,
    records_frame,
)
from recsys.reporting import markdown_table

if TYPE_CHECKING:
    from recsys.bench.harness import BenchResult

# ---- markdown --------------------------------------------------------------------------------


def _f(value: Any, digits: int = 1, suffix: str = "") -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int | float):
        return f"{value:,.{digits}f}{suffix}"
    return str(value)


def _change(before: Any, after: Any, lower_is_better: bool) -> str:
    if not isinstance(before, int | float) or not isinstance(after, int | float) or not before:
        return "-"
    rel = (after - before) / abs(before) * 100.0
    better = (rel < 0) == lower_is_better
    mark = "better" if better and abs(rel) >= 3 else ("worse" if abs(rel) >= 3 else "same")
    return f"{rel:+.0f}% ({mark})"


def headline(summary: Mapping[str, Any]) -> list[dict[str, str]]:
    """The headline table rows (also printed by the CLI)."""
    rows = []
    serve_sustained = get_path(summary, "serve", "sustained_rps")
    for name, s in summary["systems"].items():
        if s.get("baseline"):
            continue
        low, ref = s.get("low_load") or {}, s.get("reference") or {}
        sus = s.get("at_sustained") or {}
        rows.append(
            {
                "system": name,
                "sustained req/s": _f(s.get("sustained_rps"), 0) if not s.get("error") else "error",
                "serve / this": _f(ratio(serve_sustained, s.get("sustained_rps")), 2),
                f"p50 @{summary['low_load_rate']:g}": _f(low.get("p50_ms"), 1),
                f"p99 @{summary['low_load_rate']:g}": _f(low.get("p99_ms"), 1),
                f"p50 @{summary['reference_rate']:g}": _f(ref.get("p50_ms"), 1),
                f"p99 @{summary['reference_rate']:g}": _f(ref.get("p99_ms"), 1),
                f"CPU ms/req @{summary['reference_rate']:g}": _f(ref.get("cpu_ms_per_req"), 1),
                "CPU ms/req (machine)": _f(ref.get("cpu_ms_per_req_machine"), 1),
                "CPU ms/req @sustained": _f(sus.get("cpu_ms_per_req"), 1),
                "client CPU ms/req": _f(ref.get("client_cpu_ms_per_req"), 2),
                "RSS MB": _f(s.get("rss_mb_max"), 0),
                "idle CPU cores": _f((s.get("idle") or {}).get("cpu_cores"), 3),
            }
        )
    return rows


def _points_table(summary: Mapping[str, Any]) -> str:
    rows = []
    for name, s in summary["systems"].items():
        for p in s.get("points", []):
            rows.append(
                {
                    "system": name,
                    "stream": p.get("stream", ""),
                    "repeat": str(int(p.get("repeat", 0)) + 1),
                    "phase": p.get("phase", ""),
                    "rate": _f(p.get("rate"), 1),
                    "n": p.get("n"),
                    "good %": _f(100 * (p.get("good_share") or 0), 1),
                    "p50 ms": _f(p.get("p50_ms")),
                    "p90 ms": _f(p.get("p90_ms")),
                    "p99 ms": _f(p.get("p99_ms")),
                    "pass": "yes" if p.get("passes") else "no",
                    "server cores": _f(p.get("server_cores"), 2),
                    "CPU ms/req": _f(p.get("cpu_ms_per_req")),
                    "send lag p99": _f(p.get("send_lag_p99_ms")),
                    "other cores": _f(p.get("background_cores"), 2),
                    "tries": p.get("attempts", 1),
                    "other Ray": "yes" if p.get("contended") else "",
                }
            )
    return markdown_table(rows)


STAGE_ORDER = (
    ("client", "client latency (from scheduled arrival)"),
    ("send_lag", "  load generator lag"),
    ("outside_server", "  outside the server (HTTP client, proxy/uvicorn, transport)"),
    ("server_total", "  server total (the answer's timings_ms.total)"),
    ("ingress_other", "    ingress own work"),
    ("group_wait", "    arrival to group start (prepare + wait for a group slot)"),
    ("chain_wait", "    hops ingress->encoder->retriever->ranker->ingress, queues, batch waits"),
    ("encode_retrieve_wait", "    encode+retrieve hops, queues, batch waits"),
    ("encode", "    encode compute (batch)"),
    ("retrieve", "    retrieve compute (batch)"),
    ("rank_wait", "    rank hop, queue, batch wait"),
    ("rank", "    rank compute (batch)"),
    ("queue", "    queue + batch wait (arrival to batch start)"),
    ("compute", "    pipeline compute (encode + retrieve + rank)"),
    ("batch_size", "  batch size (encode/pipeline)"),
    ("group_size", "  ingress group size (requests per stage call)"),
)


def _stage_table(breakdowns: Mapping[str, Any] | None, which: str = "search") -> str:
    if not breakdowns or not breakdowns.get(which):
        return "(not measured)\n"
    b = breakdowns[which]
    rows = [
        {"component": label, "p50 ms": _f(b[key]["p50"], 2), "mean ms": _f(b[key]["mean"], 2)}
        for key, label in STAGE_ORDER
        if isinstance(b.get(key), Mapping)
    ]
    return (
        f"{b.get('n', 0)} good {which} requests at {breakdowns['rate']:g} req/s\n\n"
        + markdown_table(rows)
    )


def _role_table(summary: Mapping[str, Any], names: Sequence[str]) -> str:
    roles: dict[str, dict[str, str]] = {}
    for name in names:
        ref = get_path(summary, name, "reference") or {}
        for role, ms in (ref.get("cpu_ms_per_req_by_role") or {}).items():
            roles.setdefault(role, {"process role": role})[name] = _f(ms, 2)
    if not roles:
        return "(not measured)\n"
    rows = sorted(roles.values(), key=lambda r: r["process role"])
    return markdown_table(rows, ["process role", *names])


def _optimisation_table(summary: Mapping[str, Any]) -> str:
    rows = []
    for o in summary.get("optimisations", []):
        for key, label, lower in (
            ("sustained_rps", "sustained req/s", False),
            ("p50_low_ms", f"p50 @{summary['low_load_rate']:g} ms", True),
            ("p99_ref_ms", f"p99 @{summary['reference_rate']:g} ms", True),
            ("cpu_ms_per_req_ref", f"CPU ms/req @{summary['reference_rate']:g}", True),
            ("rss_mb", "RSS MB (tree)", True),
            ("idle_cpu_cores", "idle CPU cores", True),
            ("idle_processes", "processes", True),
        ):
            before, after = o[key]
            rows.append(
                {
                    "variant": o["variant"] if key == "sustained_rps" else "",
                    "metric": label,
                    "baseline": _f(before, 1),
                    "variant value": _f(after, 1) if not o.get("error") else "error",
                    "change": _change(before, after, lower),
                }
            )
    return markdown_table(rows) if rows else "(no variants in this run)\n"


def _experiments_md(exp: Mapping[str, Any]) -> str:
    parts = []
    if exp.get("raw_throughput"):
        parts.append(
            "### Raw batched throughput of the in-process pipeline (closed loop, cache off)\n"
        )
        parts.append(
            markdown_table([{k: _f(v, 1) for k, v in r.items()} for r in exp["raw_throughput"]])
        )
    int8 = exp.get("int8")
    if isinstance(int8, Mapping) and "fp32" in int8:
        parts.append("### Encoder int8 dynamic quantisation vs fp32\n")
        b16 = next(
            (k for k in int8["fp32"] if k.startswith("batch") and k != "batch1_p50_ms"), None
        )
        rows = [
            {
                "metric": "encode batch-1 p50 ms",
                "fp32": _f(int8["fp32"]["batch1_p50_ms"], 2),
                "int8": _f(int8["int8"]["batch1_p50_ms"], 2),
                "change": _change(
                    int8["fp32"]["batch1_p50_ms"], int8["int8"]["batch1_p50_ms"], True
                ),
            },
        ]
        if b16:
            rows.append(
                {
                    "metric": f"encode {b16.replace('_', ' ')}",
                    "fp32": _f(int8["fp32"][b16], 0),
                    "int8": _f(int8["int8"][b16], 0),
                    "change": _change(int8["fp32"][b16], int8["int8"][b16], False),
                }
            )
        rows += [
            {
                "metric": "model size MB (state dict)",
                "fp32": _f(int8["fp32"]["model_mb"], 1),
                "int8": _f(int8["int8"]["model_mb"], 1),
                "change": _change(int8["fp32"]["model_mb"], int8["int8"]["model_mb"], True),
            },
            {
                "metric": "recall@100 of labelled exact items",
                "fp32": _f(int8["label_recall_at_100"]["fp32"], 4),
                "int8": _f(int8["label_recall_at_100"]["int8"], 4),
                "change": _change(
                    int8["label_recall_at_100"]["fp32"], int8["label_recall_at_100"]["int8"], False
                ),
            },
        ]
        parts.append(markdown_table(rows))
        c = int8["cosine_int8_fp32"]
        parts.append(
            f"\nCosine(int8, fp32) over {int8['n_queries']} labelled queries: "
            + f"mean {c['mean']:.4f}, 1st percentile {c['p1']:.4f}, min {c['min']:.4f}. "
            + "Top-100 overlap of IVF retrieval "
            f"with int8 vs fp32 query vectors: {int8['retrieval_overlap_at_100']:.4f}. "
            f"({int8['threads']} torch thread.)\n"
        )
    cache = exp.get("cache")
    if isinstance(cache, Mapping) and cache.get("rows"):
        parts.append(
            f"### Query-embedding cache hit ratio (replay of the {cache['n_queries']} search "
            "queries the sweep sent, in order, cold start)\n"
        )
        parts.append(
            markdown_table(
                [
                    {
                        "capacity": r["capacity"],
                        "encoder replicas": r["replicas"],
                        "distinct queries": r["distinct_queries"],
                        "hit ratio": _f(r["hit_ratio"], 3),
                    }
                    for r in cache["rows"]
                ]
            )
        )
    if exp.get("nprobe") and isinstance(exp["nprobe"], list):
        parts.append("### IVF nprobe vs recall vs search time (1 thread)\n")
        parts.append(
            markdown_table(
                [
                    {
                        "nprobe": r["nprobe"]
                        if not r.get("served_default")
                        else f"{r['nprobe']} (served)",
                        "recall@100 vs exact": _f(r["recall_at_100_vs_exact"], 4),
                        "labelled-exact recall@100": _f(r["label_recall_at_100"], 4),
                        "batch-1 p50 ms": _f(r["batch1_p50_ms"], 3),
                        "batch-16 ms": _f(r["batch16_ms"], 2),
                    }
                    for r in exp["nprobe"]
                ]
            )
        )
    if exp.get("candidates") and isinstance(exp["candidates"], list):
        parts.append("### Candidates N vs nDCG@10 on the labelled queries vs time (1 thread)\n")
        parts.append(
            markdown_table(
                [
                    {
                        "N": r["n_candidates"],
                        "nDCG@10 ranked": _f(r["ndcg_at_10_ranker"], 4),
                        "nDCG@10 retrieval order": _f(r["ndcg_at_10_retrieval"], 4),
                        "exact-label recall@N": _f(r["label_recall_at_n"], 4),
                        "retrieve ms/req": _f(r["retrieve_ms_per_req"], 2),
                        "rank ms/req": _f(r["rank_ms_per_req"], 2),
                        "rank ms per batch of 16": _f(r["rank_ms_per_batch16"], 1),
                    }
                    for r in exp["candidates"]
                ]
            )
        )
    for name, value in exp.items():
        if isinstance(value, Mapping) and value.get("error"):
            parts.append(f"\nExperiment `{name}` failed: {value['error']}\n")
    return "\n".join(parts) if parts else "(none in this run)\n"


def overhead_story(summary: Mapping[str, Any]) -> str:
    """Where Serve's time goes compared with the in-process pipeline, in sentences."""
    lines = []
    for label, key in (("low load", "stages_low"), ("reference load", "stages_reference")):
        b = (get_path(summary, "serve", key) or {}).get("search")
        base = (get_path(summary, "inprocess", key) or {}).get("search")
        if not b or "client" not in b:
            continue

        def m(node: Mapping[str, Any] | None, name: str) -> float:
            if not node or not isinstance(node.get(name), Mapping):
                return 0.0
            return float(node[name]["mean"])

        compute = m(b, "encode") + m(b, "retrieve") + m(b, "rank")
        parts = {
            "outside the server (proxy, HTTP, transport)": m(b, "outside_server"),
            "stage hops + queues + batch waits": m(b, "chain_wait")
            + m(b, "encode_retrieve_wait")
            + m(b, "rank_wait"),
            "ingress own work": m(b, "ingress_other"),
            "wait for a group slot": m(b, "group_wait"),
            "stage compute (encode + retrieve + rank)": compute,
            "load generator lag": m(b, "send_lag"),
        }
        total = m(b, "client")
        ordered = sorted(parts.items(), key=lambda kv: -kv[1])
        text = ", ".join(f"{name} {ms:.1f} ms" for name, ms in ordered)
        rate = get_path(summary, "serve", key)["rate"]
        line = (
            f"- Serve, search requests at {label} ({rate:g} req/s): "
            f"mean client latency {total:.1f} ms = {text}."
        )
        if base:
            base_compute = m(base, "encode") + m(base, "retrieve") + m(base, "rank")
            line += (
                f" In-process at the same rate: mean {m(base, 'client'):.1f} ms, of which compute "
                f"{base_compute:.1f} ms and queue + batch wait {m(base, 'queue'):.1f} ms."
            )
        lines.append(line)
    return "\n".join(lines) + "\n" if lines else ""


def streams_md(summary: Mapping[str, Any]) -> str:
    """Per stream: what it is, its repeat share, and a row per system."""
    out = []
    for stream, st in (summary.get("streams") or {}).items():
        share = st.get("repeat_share")
        out += [
            f"**{stream}**: {st.get('description', '')}. Over {st.get('searches', 0):,} "
            f"searches one system was sent, {_f(None if share is None else 100 * share, 0)}% "
            "repeat an earlier query.",
            "",
        ]
        rows = []
        for name, s in summary["systems"].items():
            node = (s.get("streams") or {}).get(stream)
            if node is None:
                continue
            sp = node.get("sustained_spread") or {}
            cache = (s.get("cache") or {}).get(stream) or {}
            rows.append(
                {
                    "system": name + (f" (= {s['same_as']})" if s.get("same_as") else ""),
                    "sustained req/s": _f(node.get("sustained_rps"), 1),
                    "min-max": f"{_f(sp.get('min'), 1)}-{_f(sp.get('max'), 1)}",
                    "IQR": _f(sp.get("iqr"), 1),
                    "repeats": ", ".join(_f(x, 1) for x in node.get("sustained_rps_repeats", [])),
                    "first failing": ", ".join(
                        _f(x, 1) for x in node.get("failing_rps_repeats", [])
                    ),
                    "pinned": _f(node.get("pinned")),
                    "cache hit %": _f(
                        None if cache.get("hit_rate") is None else 100 * cache["hit_rate"], 1
                    ),
                    "caches": "; ".join(cache.get("tiers", [])),
                }
            )
        out += [markdown_table(rows), ""]
    out += [
        "Cache hit rates are computed, not read from metrics: every search a system was sent, "
        "in order, replayed through LRU caches of its own sizes (one per process holding one, "
        "searches spread at random), see `recsys.bench.caches`.",
        "",
    ]
    return "\n".join(out) + "\n"


def low_load_rows(summary: Mapping[str, Any]) -> list[dict[str, str]]:
    main = next(iter(summary.get("streams") or {"longtail": None}))
    rows = []
    for name, s in summary["systems"].items():
        low = ((s.get("streams") or {}).get(main) or {}).get("low") or {}
        if not low:
            continue
        over = low_load_overheads(summary, name)
        row = {"system": name}
        for rate, node in low.items():
            row[f"@{rate} p50 / p99"] = f"{_f(node.get('p50_ms'))} / {_f(node.get('p99_ms'))}"
            row[f"@{rate} n"] = str(node.get("n"))
            row[f"@{rate} over in-process"] = _f(over.get(rate), 1)
        rows.append(row)
    return rows


def _git_line(git: Mapping[str, Any] | None) -> str:
    """`` at commit X (clean tree)`` / ``(N changed files)``; empty for older summaries."""
    if not git:
        return ""
    dirty = git.get("dirty_files") or []
    state = "clean tree" if not dirty else f"{len(dirty)} changed files: {', '.join(dirty)}"
    return f" at commit `{str(git.get('commit'))[:12]}` ({state})"


def render_markdown(summary: Mapping[str, Any], notes: str = "") -> str:
    """The report."""
    env = summary["environment"]
    art = env["artifact"]
    r = summary["ratios"]
    v = summary["verdict"]
    slo = summary["slo"]
    sweep = summary["sweep"]

    def yes_no(value: Any) -> str:
        return "not measured" if value is None else ("**yes**" if value else "**no**")

    lines = [
        "# Side-by-side serving benchmark",
        "",
        f"Generated {summary['generated_at']} in {summary['duration_s'] / 60:.1f} min on "
        f"{env['cpus']} CPUs (load average {env['load_average_start']:.2f} at start, "
        f"{(env.get('load_average_end') or 0):.2f} at end). Artifact `{art['path']}` "
        f"({art['version']}, {art['n_items']} items, `{art['index']}`, nprobe {art['nprobe']}). "
        + ", ".join(f"{k} {val}" for k, val in env["versions"].items())
        + ".",
        "",
        f"Command: `{summary['command']}`" + _git_line(env.get("git")),
        "",
        f"SLO: p99 <= {slo['p99_ms']:g} ms and >= {100 * slo['min_good_share']:g}% good "
        f"requests. Open-loop Poisson arrivals, mix "
        + ", ".join(f"{k} {val:g}" for k, val in summary["mix"].items())
        + f", seed {summary['seed']} (+1009 per repeat; one rate and repeat give the same "
        f"schedule for every system). Sustained rate: per system, a search on a continuous "
        f"rate ({sweep['duration_s']:g} s per rate, starting near the system's own CPU "
        f"estimate, climbing by {sweep['step']:g}x, then bisecting until the failing rate is "
        f"within {100 * sweep['tolerance']:g}% of the passing one), {sweep['repeats']} "
        f"repeat(s); the headline is the median, the spread is min-max. Low load: "
        f"{sweep['low_requests']} requests at each of "
        + ", ".join(f"{x:g}" for x in sweep["low_rates"])
        + f" req/s per repeat; reference load (highest low rate every system keeps up with: "
        f">= {100 * slo['min_good_share']:g}% good, p50 within the SLO): "
        f"{summary['reference_rate']:g} req/s. CPU per request: process-tree method (the "
        "machine-wide cross-check is in the table too).",
        "",
        "## Verdict",
        "",
        "- Serve (default local topology) sustains at least the naive baseline's rate on the "
        "long-tail stream: "
        + yes_no(v["serve_sustains_at_least_naive"])
        + f" (serve / naive = {_f(r['serve_vs_naive_sustained_ratio'], 2)}).",
        "- Serve sustains at least 0.8 of the naive rate on the cached stream: "
        + yes_no(v.get("serve_sustains_0.8_of_naive_cached_stream"))
        + f" (serve / naive = {_f(r.get('serve_vs_naive_sustained_ratio_cached_stream'), 2)}).",
        f"- Serve's low-load p50 within {v['p50_budget_ms']:g} ms of in-process: "
        f"{yes_no(v.get('serve_p50_overhead_within_budget'))} "
        f"(median overhead over the low rates {_f(r['serve_p50_overhead_ms'], 1)} ms).",
        f"- Split topology / naive sustained (long-tail): "
        f"{_f(r.get('serve_split_vs_naive_sustained_ratio'), 2)}; fused / naive: "
        f"{_f(r.get('serve_fused_vs_naive_sustained_ratio'), 2)}.",
        f"- Serve / in-process sustained: {_f(r['serve_vs_inprocess_sustained_ratio'], 2)}; "
        f"Serve / monolith: {_f(r['serve_vs_monolithic_sustained_ratio'], 2)}; "
        f"CPU per request Serve / in-process: {_f(r['serve_vs_inprocess_cpu_per_req_ratio'], 2)}, "
        f"Serve / monolith: {_f(r['serve_vs_monolith_cpu_per_req_ratio'], 2)}.",
        "",
        "## Systems",
        "",
        markdown_table(headline(summary)),
        "",
    ]
    for name, s in summary["systems"].items():
        extra = f" **Error:** {s['error']}" if s.get("error") else ""
        if s.get("outcome_problems"):
            extra += f" Outcome problems: {'; '.join(s['outcome_problems'])}."
        if s.get("contended_points"):
            extra += f" Another Ray instance ran during rates {s['contended_points']}."
        lines.append(f"- `{name}`: {s.get('description', '')}.{extra}")
    lines += [
        "",
        "## Query streams: sustained rate (median of the repeats, min-max) and cache hits",
        "",
        streams_md(summary),
        "## Low load: p50 / p99 (ms, median of the repeats) and p50 over in-process",
        "",
        markdown_table(low_load_rows(summary)),
        "",
        "![latency vs rate](latency_vs_rate.png)",
        "",
        *(
            ["![Serve variants](variants_latency_vs_rate.png)", ""]
            if any(s.get("baseline") for s in summary["systems"].values())
            else []
        ),
        "## Where Serve's time goes",
        "",
        overhead_story(summary),
        "### Serve, per stage, low load",
        "",
        _stage_table(get_path(summary, "serve", "stages_low")),
        "",
        "### Serve, per stage, reference load",
        "",
        _stage_table(get_path(summary, "serve", "stages_reference")),
        "",
        "### Monolith, per stage, reference load",
        "",
        _stage_table(get_path(summary, "monolith", "stages_reference")),
        "",
        "### In-process, per stage, reference load",
        "",
        _stage_table(get_path(summary, "inprocess", "stages_reference")),
        "",
        f"### CPU per request by process role at {summary['reference_rate']:g} req/s (ms)",
        "",
        _role_table(summary, [n for n in MAIN if n in summary["systems"]]),
        "",
    ]
    if notes.strip():
        lines += ["## Analysis", "", notes.strip(), ""]
    lines += [
        "## Optimisations: before / after (each measured in the same run as its baseline)",
        "",
        _optimisation_table(summary),
        "",
        "## Offline experiments (speed and quality)",
        "",
        _experiments_md(summary.get("experiments", {})),
        "",
        "## Every rate measured",
        "",
        _points_table(summary),
        "",
        "## Definitions and method",
        "",
    ]
    lines += [f"- **{k}**: {text}" for k, text in summary["definitions"].items()]
    lines += [
        "",
        "Raw records (one row per scheduled request, with the answer's stage timings) are in "
        "`records_<system>.parquet`, one row per rate in `points.parquet`; `summary.json` holds "
        "every number of this report.",
        "",
    ]
    return "\n".join(lines)


# ---- files -----------------------------------------------------------------------------------


def latency_figure(summary: Mapping[str, Any], names: Sequence[str] | None = None) -> Any:
    """p50 and p99 latency vs offered rate on the main stream, one line per system, the SLO
    dashed."""
    import matplotlib.pyplot as plt

    main = next(iter(summary.get("streams") or {"": None}))
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), sharey=True)
    for name in names or list(summary["systems"]):
        points = sorted(
            (
                p
                for p in summary["systems"][name].get("points", [])
                if p.get("stream", main) == main
            ),
            key=lambda p: p["rate"],
        )
        if not points:
            continue
        rates = [p["rate"] for p in points]
        for ax, key in zip(axes, ("p50_ms", "p99_ms"), strict=True):
            values = [p[key] if p[key] is not None else np.nan for p in points]
            ax.plot(rates, values, marker="o", ms=3, label=name)
    for ax, title in zip(axes, ("p50", "p99"), strict=True):
        ax.axhline(summary["slo"]["p99_ms"], color="grey", ls="--", lw=1)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("offered rate (req/s)")
        ax.set_title(f"{title} latency (ms)")
        ax.grid(True, which="both", alpha=0.3)
    if axes[0].get_lines():
        axes[0].legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_latency(
    summary: Mapping[str, Any], path: Path, names: Sequence[str] | None = None
) -> None:
    """:func:`latency_figure` saved as a small PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig = latency_figure(summary, names)
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _write_plots(summary: Mapping[str, Any], out_dir: Path) -> None:
    main = [n for n in MAIN if n in summary["systems"]]
    if main:
        plot_latency(summary, out_dir / "latency_vs_rate.png", main)
    variants = [n for n, s in summary["systems"].items() if s.get("baseline")]
    if variants:
        bases = sorted({summary["systems"][n]["baseline"] for n in variants})
        plot_latency(summary, out_dir / "variants_latency_vs_rate.png", [*bases, *variants])


def write_outputs(
    result: BenchResult, out_dir: Path, command: str = "", notes_path: Path | None = None
) -> dict[str, Any]:
    """Write ``summary.json``, ``report.md``, the plots and the raw parquet; return the
    summary."""
    out_dir.mkdir(parents=True, exist_ok=True)
    summary = build_summary(result, command)
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    points = [row for run in result.systems for row in point_rows(run)]
    if points:
        frame = pd.DataFrame(points)
        for col in ("outcomes", "cpu_ms_per_req_by_role", "roles"):
            frame[col] = frame[col].map(lambda v: json.dumps(clean(v)))
        frame.to_parquet(out_dir / "points.parquet", index=False)
    for run in result.systems:
        records = records_frame(run)
        if not records.empty:
            safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in run.spec.name)
            records.to_parquet(out_dir / f"records_{safe}.parquet", index=False)
    _write_plots(summary, out_dir)
    notes = notes_path.read_text() if notes_path is not None and notes_path.is_file() else ""
    (out_dir / "report.md").write_text(render_markdown(summary, notes))
    return summary


def rerender(out_dir: Path, notes_path: Path | None = None) -> dict[str, Any]:
    """Re-render ``report.md`` and the plots from ``out_dir/summary.json`` (e.g. after
    writing ``notes.md``); the raw parquet files are left as they are."""
    summary: dict[str, Any] = json.loads((out_dir / "summary.json").read_text())
    _write_plots(summary, out_dir)
    notes = notes_path.read_text() if notes_path is not None and notes_path.is_file() else ""
    (out_dir / "report.md").write_text(render_markdown(summary, notes))
    return summary
