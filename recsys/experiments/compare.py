"""One comparison across experiments (typically the same traffic under different policies)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from matplotlib.figure import Figure

from recsys.experiments.report import (
    Experiment,
    ExperimentSummary,
    fmt_number,
    fmt_share,
    load_experiment,
    node_series,
    replica_series,
    request_windows,
    summarize,
)
from recsys.experiments.spec import SUMMARY_FILE

COMPARISON_FILE = "comparison.md"
COMPARISON_PLOT = "comparison.png"
COST_PLOT = "cost-vs-slo.png"


def _phases(values: dict[str, float | None]) -> str:
    return " / ".join(fmt_number(values.get(k), digits=0) for k in ("before", "high", "after"))


def comparison_table(summaries: Sequence[ExperimentSummary]) -> str:
    """Markdown table, one column per experiment."""
    rows: list[tuple[str, list[str]]] = [
        ("policy", [s.policy for s in summaries]),
        (
            "load (req/s): low -> high",
            [f"{s.low_rate_rps:g} -> {fmt_number(s.high_rate_rps)}" for s in summaries],
        ),
        (
            "requests sent / with outcome",
            [f"{s.requests_sent} / {s.requests_with_outcome}" for s in summaries],
        ),
        ("time to scale up (s)", [fmt_number(s.time_to_scale_up_s) for s in summaries]),
        ("time to first added node (s)", [fmt_number(s.time_to_first_node_s) for s in summaries]),
        ("time to peak replicas (s)", [fmt_number(s.time_to_peak_replicas_s) for s in summaries]),
        (
            "replicas back to baseline after the drop (s)",
            [fmt_number(s.time_to_replicas_down_s) for s in summaries],
        ),
        (
            "nodes back to baseline after the drop (s)",
            [fmt_number(s.time_to_nodes_down_s) for s in summaries],
        ),
        (
            "max replicas (total)",
            [
                f"{s.max_replicas_total} ("
                + ", ".join(f"{k} {v}" for k, v in sorted(s.max_replicas.items()))
                + ")"
                for s in summaries
            ],
        ),
        (
            "max worker nodes",
            [
                f"{s.max_worker_nodes} ("
                + ", ".join(f"{k} {v}" for k, v in sorted(s.max_worker_nodes_by_type.items()))
                + ")"
                for s in summaries
            ],
        ),
        ("SLO attainment (whole run)", [fmt_share(s.slo_attainment) for s in summaries]),
        ("SLO attainment (high phase)", [fmt_share(s.slo_attainment_high) for s in summaries]),
        (
            "p99, SLO view: before / high / after (ms)",
            [_phases(s.p99_slo_by_phase_ms) for s in summaries],
        ),
        (
            "p99 of 2xx: before / high / after (ms)",
            [_phases(s.p99_by_phase_ms) for s in summaries],
        ),
        (
            "p99 back under SLO after (s)",
            [
                fmt_number(s.p99_recovered_after_s)
                if s.p99_recovered_after_s is not None
                else "never"
                for s in summaries
            ],
        ),
        (
            "degraded / 503 / timeouts / errors",
            [f"{s.degraded} / {s.http_503} / {s.timeouts} / {s.errors}" for s in summaries],
        ),
        (
            "degraded by reason",
            [
                ", ".join(f"{k} {v}" for k, v in sorted(s.degraded_by_reason.items())) or "none"
                for s in summaries
            ],
        ),
        (
            "degraded caused by scale-down (ranker failed/unavailable)",
            [str(s.degraded_by_scale_down) for s in summaries],
        ),
        ("requests without an outcome", [str(s.requests_without_outcome) for s in summaries]),
        (
            "SLO-view p99 back under the SLO and staying there, after the rise (s)",
            [
                fmt_number(s.slo_recovery_s) if s.slo_recovery_s is not None else "never"
                for s in summaries
            ],
        ),
        (
            "time to scale up by deployment (s from the rise)",
            [
                ", ".join(
                    f"{k} {fmt_number(v)}"
                    for k, v in sorted(s.time_to_scale_up_s_by_deployment.items())
                )
                for s in summaries
            ],
        ),
        ("replica-seconds", [f"{s.replica_seconds_total:.0f}" for s in summaries]),
        ("GPU-node-seconds", [f"{s.gpu_node_seconds:.0f}" for s in summaries]),
        (
            "GPU-node-seconds: hindsight / static peak (ratio of the run to each)",
            [
                f"{fmt_number(s.hindsight_gpu_node_seconds, digits=0)} / "
                f"{fmt_number(s.static_peak_gpu_node_seconds, digits=0)} "
                f"({fmt_number(s.gpu_node_seconds_vs_hindsight, 'x', digits=2)} / "
                f"{fmt_number(s.gpu_node_seconds_vs_static_peak, 'x', digits=2)})"
                for s in summaries
            ],
        ),
        (
            "cost per 1M requests (USD)",
            [
                f"{fmt_number(s.cost_per_million_requests, digits=0)} "
                f"at {fmt_number(s.usd_per_gpu_hour, digits=2)}/GPU-hour"
                for s in summaries
            ],
        ),
        ("GPU-seconds", [f"{s.gpu_seconds:.0f}" for s in summaries]),
        ("cost window (s)", [f"{s.cost_window_s:.0f}" for s in summaries]),
    ]
    header = "| metric | " + " | ".join(f"`{s.name}`" for s in summaries) + " |"
    sep = "| --- |" + " --- |" * len(summaries)
    body = ["| " + name + " | " + " | ".join(values) + " |" for name, values in rows]
    return "\n".join([header, sep, *body])


def comparison_figure(experiments: Sequence[Experiment]) -> Figure:
    """p99 per window, total running replicas and worker nodes over time, one line per run."""
    fig = Figure(figsize=(10, 8), layout="constrained")
    ax_p, ax_r, ax_n = fig.subplots(3, 1, sharex=True)
    for i, exp in enumerate(experiments):
        label = f"{exp.spec.name} ({exp.spec.policy.name})"
        windows = request_windows(
            exp.requests, exp.spec.window_s, exp.spec.slo_ms, exp.spec.traffic.timeout_s * 1000.0
        )
        centres = windows["t_s"] + exp.spec.window_s / 2
        ax_p.plot(centres, windows["p99_slo"], color=f"C{i}", label=label)
        running = replica_series(exp.samples)
        if not running.empty:
            ax_r.step(running.index, running.sum(axis=1), where="post", color=f"C{i}", label=label)
        nodes = node_series(exp.samples)
        if not nodes.empty:
            ax_n.step(nodes.index, nodes.sum(axis=1), where="post", color=f"C{i}", label=label)
    if experiments:
        slo = experiments[0].spec.slo_ms
        ax_p.axhline(slo, color="red", ls=":", lw=1, label=f"SLO {slo:g} ms")
    ax_p.set_yscale("log")
    ax_p.set_ylabel("p99, SLO view (ms)")
    ax_r.set_ylabel("running replicas (all)")
    ax_n.set_ylabel("worker nodes")
    ax_n.set_xlabel("seconds from the start of traffic")
    for ax in (ax_p, ax_r, ax_n):
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8, loc="upper right")
    ax_p.set_title("policies compared on the same traffic")
    return fig


def cost_slo_figure(summaries: Sequence[ExperimentSummary]) -> Figure:
    """SLO attainment against GPU-node-seconds (as a multiple of the hindsight allocation),
    one point per run: the trade-off each policy picks."""
    fig = Figure(figsize=(7, 5), layout="constrained")
    ax = fig.subplots()
    for i, s in enumerate(summaries):
        x, attained = s.gpu_node_seconds_vs_hindsight, s.slo_attainment
        if x is None or attained is None:
            continue
        ax.scatter([x], [100.0 * attained], color=f"C{i}", s=60)
        ax.annotate(
            f"{s.name} ({s.policy})",
            (x, 100.0 * attained),
            textcoords="offset points",
            xytext=(6, 4),
            fontsize=8,
        )
    ax.axhline(99.0, color="red", ls=":", lw=1, label="SLO attainment 99%")
    ax.axvline(1.3, color="grey", ls="--", lw=1, label="1.3x hindsight")
    ax.set_xlabel("GPU-node-seconds / hindsight allocation's")
    ax.set_ylabel("SLO attainment, whole run (%)")
    ax.set_title("cost against SLO, per run")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    return fig


def write_comparison(directories: Sequence[str | Path], out_dir: str | Path, dpi: int = 90) -> str:
    """Write ``comparison.md`` and ``comparison.png`` into ``out_dir``; return the markdown."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    experiments = [load_experiment(d) for d in directories]
    summaries = []
    for d, exp in zip(directories, experiments, strict=True):
        path = Path(d) / SUMMARY_FILE
        summaries.append(
            ExperimentSummary.model_validate(json.loads(path.read_text()))
            if path.is_file()
            else summarize(exp)
        )
    comparison_figure(experiments).savefig(out / COMPARISON_PLOT, dpi=dpi)
    cost_slo_figure(summaries).savefig(out / COST_PLOT, dpi=dpi)
    commands = "\n".join(f"    {e.spec.command}" for e in experiments if e.spec.command)
    text = "\n".join(
        [
            "# Autoscaling policies compared",
            "",
            comparison_table(summaries),
            "",
            f"![comparison]({COMPARISON_PLOT})",
            "",
            f"![cost against SLO]({COST_PLOT})",
            "",
            "Reports: "
            + ", ".join(
                f"[{Path(d).name}]({_relative(Path(d), out)}/report.md)" for d in directories
            ),
            "",
            "Commands:",
            "",
            commands,
            "",
        ]
    )
    (out / COMPARISON_FILE).write_text(text)
    return text


def _relative(path: Path, start: Path) -> str:
    import os

    return os.path.relpath(path.resolve(), start.resolve())
