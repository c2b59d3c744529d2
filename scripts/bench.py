#!/usr/bin/env python
"""Side-by-side serving benchmark: in-process bound, naive HTTP, Serve in two topologies.

In one run, on the same artifact, queries and models, every system gets the same seeded
open-loop Poisson schedules (recsys.traffic):

  inprocess    the library Pipeline behind a dynamic batcher, torch / FAISS on every core
               (no Ray, no HTTP): the bound
  naive        the project's FastAPI app (recsys.bench.naive_server) under
               `uvicorn --workers <cores>`: what a team would write first
  serve        the Serve app in the default local topology (local profile)
  serve_split  the same app with one deployment per stage (topology.layout=split)
  serve_fused  the same app with the stages inside the ingress replicas (layout=fused)
               (a topology that is the default's is measured once; one this recsys cannot
               express is reported as an error and the run goes on)
  monolith     one Serve replica with every stage and @serve.batch (not run by default)

Per system, per query stream, per repeat (own seed): the low-load points (200 requests at
each of 10, 20, 40 req/s on the main stream; p50 overhead over in-process), then a search for
the sustained rate (p99 <= SLO, >= 99% good) on a continuous rate: it starts near the system's
own capacity (from its CPU per request at low load), climbs until a rate fails, and bisects
until the bracket is within the tolerance, so no two systems share a grid point. The headline
is the median of the repeats, with min-max and IQR.

Query streams (--streams; the first is the main one, whose numbers are the old --json keys):
  longtail  a share of the artifact's head queries, the rest variants generated from the
            catalog (brand / attribute / category combinations, word order, typos): at most
            half of the searches repeat an earlier query, as a real shop's log
  cached    the artifact's queries by frequency (today's stream): most searches repeat one
Each stream's query-cache hit rate is replayed from what each system was sent
(recsys.bench.caches).

Outputs under --out: report.md (numbers, spread, the command), summary.json, plots, raw
records_<system>.parquet and points.parquet. Ray systems start one at a time, only when no
other Ray instance runs on this machine; each is shut down through its own handles.

examples:
  python scripts/bench.py --quick --json           # 1 repeat, 6 s points, < 15 min
  python scripts/bench.py --json                   # 20 s points, 3 repeats, < 45 min
  python scripts/bench.py --systems inprocess,naive --streams longtail --quick
  python scripts/bench.py --systems serve --variants proxy,nocache --experiments none

--json prints one object: the ratios (serve_vs_naive_sustained_ratio ... on the main stream,
serve_split_vs_naive_sustained_ratio, serve_vs_naive_sustained_ratio_cached_stream,
serve_p50_overhead_ms: median over the low rates of the p50 over in-process), the verdict,
sustained_rps / low_load_p50_ms per system (main stream), and per stream the sustained rates,
their spread, the cache hit rates and the stream's repeat share.

variants (each measured against its baseline in the same run, on the main stream; all but
threads1 are Serve apps compared with `serve`, threads1 is compared with `inprocess`).
  proxy        HTTP through Serve's proxy         classic    Serve's defaults, proxy
  uncoalesced  each request down the chain alone  inflight1 / inflight4  groups in flight
  batch8       stages batch 8 / 0 ms              batch32    stages batch 32 / 5 ms
  int8         encoder int8 quantisation          nocache    query caches off
  ingresscache cached searches skip the encoder (query cache at the ingress)
  dashboard    default Ray start (dashboard)      threads1   in-process, 1 thread
experiments: raw_throughput, int8, cache, nprobe, candidates

`python scripts/bench.py host --spec FILE` is the Ray host the benchmark starts for Serve
systems (not for direct use).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

if TYPE_CHECKING:
    from recsys.bench.config import BenchConfig

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def _csv(text: str) -> list[str]:
    return [] if text.strip().lower() in ("", "none") else [t.strip() for t in text.split(",")]


def _floats(text: str) -> list[float]:
    return [float(t) for t in _csv(text)]


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python scripts/bench.py",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--artifacts", default="artifacts/demo", help="artifact directory (read only)")
    p.add_argument("--out", type=Path, default=ROOT / "results" / "bench", help="output directory")
    p.add_argument(
        "--quick", action="store_true", help="1 repeat, 6 s points, coarser bracket (< 15 min)"
    )
    p.add_argument(
        "--systems",
        type=_csv,
        default=None,
        help="comma list of systems (default: inprocess,naive,serve,serve_split,serve_fused)",
    )
    p.add_argument(
        "--streams",
        type=_csv,
        default="longtail,cached",
        help="query streams, the first the main one (default: longtail,cached)",
    )
    p.add_argument(
        "--variants",
        type=_csv,
        default=None,
        help="comma list of Serve variants, or none (default: none)",
    )
    p.add_argument(
        "--experiments",
        type=_csv,
        default=None,
        help="comma list of offline experiments, or none (default: cache)",
    )
    p.add_argument("--low-rates", type=_floats, help="low-load rates, req/s (10,20,40)")
    p.add_argument("--low-requests", type=int, help="requests at each low rate (200)")
    p.add_argument("--repeats", type=int, help="repeats (3; 1 with --quick)")
    p.add_argument("--start-rate", type=float, help="first searched rate (default: estimate)")
    p.add_argument("--tolerance", type=float, help="bracket width to stop at (0.05; quick 0.12)")
    p.add_argument("--max-points", type=int, help="searched rates per repeat at most")
    p.add_argument("--duration", type=float, help="seconds of arrivals per searched rate")
    p.add_argument("--warmup", type=float, help="seconds of warm-up traffic per system")
    p.add_argument("--slo-ms", type=float, default=100.0, help="p99 SLO in ms (default 100)")
    p.add_argument(
        "--min-good", type=float, default=0.99, help="share of good answers a rate needs (0.99)"
    )
    p.add_argument("--timeout", type=float, default=5.0, help="client timeout per request (s)")
    p.add_argument("--seed", type=int, default=0, help="schedule seed (same for every system)")
    p.add_argument("--mix", help="route weights, e.g. search=0.7,recommend=0.2,similar=0.1")
    p.add_argument(
        "--torch-threads", type=int, default=1, help="torch / FAISS threads per naive worker"
    )
    p.add_argument(
        "--cores",
        type=int,
        default=None,
        help="cores: in-process threads and naive workers (default: the machine's)",
    )
    p.add_argument("--nice", type=int, default=15, help="niceness of load and non-Ray servers")
    p.add_argument(
        "--time-budget-min",
        type=float,
        default=None,
        help="skip remaining systems once the run has taken this long (default: none)",
    )
    p.add_argument(
        "--wait-for-ray-s",
        type=float,
        default=1800.0,
        help="how long to wait for a quiet machine (no other Ray, little load) per system",
    )
    p.add_argument(
        "--max-background-cores",
        type=float,
        default=0.5,
        help="busy cores of other work above which the machine is not quiet (0.5)",
    )
    p.add_argument(
        "--point-retries",
        type=int,
        default=2,
        help="times a rate overlapped by other work is measured again (2)",
    )
    p.add_argument("--notes", type=Path, help="markdown file included as the report's analysis")
    p.add_argument(
        "--rerender",
        action="store_true",
        help="only re-render report.md and plots from --out's summary.json (and notes.md)",
    )
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    return p


def bench_config(args: argparse.Namespace) -> BenchConfig:
    """The BenchConfig the flags describe."""
    from deployments.profiles import local_profile
    from recsys.bench.config import (
        DEFAULT_SYSTEMS,
        BenchConfig,
        SloConfig,
        full_sweep,
        quick_sweep,
        select_systems,
    )
    from recsys.traffic.__main__ import parse_mix

    sweep = quick_sweep() if args.quick else full_sweep()
    updates: dict[str, object] = {"timeout_s": args.timeout}
    flags = {
        "low_rates": args.low_rates,
        "low_requests": args.low_requests,
        "repeats": args.repeats,
        "start_rate": args.start_rate,
        "tolerance": args.tolerance,
        "max_points": args.max_points,
        "duration_s": args.duration,
        "warmup_s": args.warmup,
    }
    updates.update({k: v for k, v in flags.items() if v is not None})
    sweep = sweep.model_validate({**sweep.model_dump(), **updates})
    variants = args.variants if args.variants is not None else []
    experiments = args.experiments if args.experiments is not None else ["cache"]
    systems = args.systems if args.systems is not None else list(DEFAULT_SYSTEMS)
    artifacts = str(Path(args.artifacts).resolve())
    app = local_profile().model_copy(update={"artifacts": artifacts})
    data: dict[str, object] = {
        "artifacts": artifacts,
        "app": app,
        "systems": select_systems(systems, variants),
        "streams": args.streams,
        "sweep": sweep,
        "slo": SloConfig(p99_ms=args.slo_ms, min_good_share=args.min_good),
        "seed": args.seed,
        "torch_threads": args.torch_threads,
        "nice": args.nice,
        "experiments": experiments,
        "wait_for_ray_s": args.wait_for_ray_s,
        "max_background_cores": args.max_background_cores,
        "point_retries": args.point_retries,
    }
    if args.cores:
        data["cores"] = args.cores
    if args.mix:
        data["mix"] = parse_mix(args.mix)
    return BenchConfig.model_validate(data)


def print_table(summary: dict[str, Any], stream: TextIO) -> None:
    from recsys.bench.report import headline
    from recsys.reporting import markdown_table

    print(markdown_table(headline(summary)), file=stream)
    for key, value in summary["ratios"].items():
        shown = "-" if value is None else f"{value:.2f}"
        print(f"{key:40s} {shown}", file=stream)
    for key, value in summary["verdict"].items():
        print(f"{key:40s} {value}", file=stream)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["host"]:
        return host_main(argv[1:])
    args = parser().parse_args(argv)
    from recsys.bench.harness import ArtifactMissingError, Benchmark
    from recsys.bench.report import rerender, write_outputs
    from recsys.bench.summary import low_load_overheads

    if args.rerender:
        notes_path = args.notes if args.notes is not None else args.out / "notes.md"
        summary = rerender(args.out, notes_path)
        print_table(summary, sys.stdout)
        return 0

    info = sys.stderr if args.json else sys.stdout

    def log(message: str) -> None:
        stamp = time.strftime("%H:%M:%S")
        print(f"{stamp} {message}", file=sys.stderr if args.json else sys.stdout, flush=True)

    try:
        config = bench_config(args)
    except (ValueError, ArtifactMissingError) as exc:
        print(f"bench: invalid arguments: {exc}", file=sys.stderr)
        return 2
    command = "python scripts/bench.py " + " ".join(argv)
    try:
        bench = Benchmark(
            config,
            args.out,
            ray_host_command=[sys.executable, str(Path(__file__).resolve()), "host"],
            progress=not args.no_progress,
            log=log,
            cwd=ROOT,
            time_budget_s=args.time_budget_min * 60 if args.time_budget_min else None,
        )
    except ArtifactMissingError as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 2

    def interrupt(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt(signal.Signals(signum).name)

    # SIGTERM (and SIGINT even where a background shell ignores it) unwind through the
    # harness's finally blocks: every server it started is stopped through its own handle
    signal.signal(signal.SIGTERM, interrupt)
    signal.signal(signal.SIGINT, interrupt)
    result = bench.run()
    notes = args.notes if args.notes is not None else args.out / "notes.md"
    summary = write_outputs(result, args.out, command, notes)
    print_table(summary, info)
    print(f"[bench] report: {args.out / 'report.md'}", file=info)
    if args.json:
        out = {
            **summary["ratios"],
            "verdict": summary["verdict"],
            "sustained_rps": {k: s["sustained_rps"] for k, s in summary["systems"].items()},
            "streams": {
                name: {
                    "repeat_share": st["repeat_share"],
                    "sustained_rps": st["sustained_rps"],
                    "sustained_min_max": {
                        k: [v.get("min"), v.get("max")] for k, v in st["sustained_spread"].items()
                    },
                    "cache_hit_rate": st["cache_hit_rate"],
                }
                for name, st in summary["streams"].items()
            },
            "low_load_overhead_ms": {
                k: low_load_overheads(summary, k) for k in summary["systems"] if k != "inprocess"
            },
            "low_load_p50_ms": {
                k: (s.get("low_load") or {}).get("p50_ms") for k, s in summary["systems"].items()
            },
            "errors": {k: s["error"] for k, s in summary["systems"].items() if s["error"]},
            "outcome_problems": {
                k: s["outcome_problems"]
                for k, s in summary["systems"].items()
                if s["outcome_problems"]
            },
            "requests": {
                k: sum(p["n"] for p in s["points"]) for k, s in summary["systems"].items()
            },
            "wall_s": round(summary["duration_s"], 1),
            "report": str(args.out / "report.md"),
            "summary": str(args.out / "summary.json"),
        }
        print(json.dumps(out))
    failed = [k for k, s in summary["systems"].items() if s["error"]]
    return 1 if failed and len(failed) == len(summary["systems"]) else 0


# ---- the Ray host -------------------------------------------------------------------------------


def host_main(argv: list[str]) -> int:
    """Start a Ray instance, deploy one app, write the ready file, serve until SIGTERM."""
    import threading

    from deployments.serve_main import (
        apply_local_serve_env,
        direct_ingress_ports,
        starting_ingress_replicas,
    )
    from recsys.bench.config import HostSpec

    p = argparse.ArgumentParser(prog="python scripts/bench.py host")
    p.add_argument("--spec", type=Path, required=True, help="HostSpec JSON")
    args = p.parse_args(argv)
    spec = HostSpec.model_validate_json(args.spec.read_text())
    apply_local_serve_env()  # a variant's env (set by the harness) wins over the default

    import ray
    from ray import serve

    stop = threading.Event()
    ray.init(
        address="local",  # always a fresh instance, never a colleague's `ray start` cluster
        num_cpus=spec.num_cpus,
        include_dashboard=None if spec.include_dashboard else False,
        configure_logging=False,
        log_to_driver=False,
    )
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": spec.port})
        if spec.kind == "serve":
            from deployments.app import build_app

            application = build_app(spec.app)
        else:
            from deployments.monolith import MonolithArgs, build_monolith

            application = build_monolith(
                MonolithArgs(
                    app=spec.app,
                    max_batch_size=spec.batch.max_batch_size,
                    batch_wait_timeout_s=spec.batch.batch_wait_timeout_s,
                    torch_threads=spec.torch_threads,
                )
            )
        serve.run(application, name="recsys", route_prefix="/", blocking=False)
        # every ingress replica's own port: the load generator balances over them, as a
        # Kubernetes Service does over ingress pods (the monolith has one replica)
        expected = starting_ingress_replicas(spec.app) if spec.kind == "serve" else 1
        ports = direct_ingress_ports("recsys", spec.port, min_count=expected)
        urls = [f"http://127.0.0.1:{port}" for port in ports or [spec.port]]
        from ray.serve._private import constants

        info = {
            "url": urls[0],
            "urls": urls,
            "direct_ingress": bool(ports),
            "grpc_between_replicas": bool(constants.RAY_SERVE_USE_GRPC_BY_DEFAULT),
            "throughput_optimized": bool(constants.RAY_SERVE_THROUGHPUT_OPTIMIZED),
            "include_dashboard": spec.include_dashboard,
            "host_pid": os.getpid(),
        }
        tmp = Path(spec.ready_file + ".tmp")
        tmp.write_text(json.dumps(info))
        tmp.replace(spec.ready_file)
        print(f"[host] ready: {info}", flush=True)
        while not stop.wait(1.0):
            pass
        print("[host] stopping", flush=True)
    finally:
        try:
            serve.shutdown()
        finally:
            ray.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
