#!/usr/bin/env python
"""Side-by-side serving benchmark: in-process bound, naive HTTP, monolithic Serve, composed Serve.

In one run, on the same artifact, queries and models, every system gets the same seeded
open-loop Poisson schedules (recsys.traffic) at a sweep of rates:

  inprocess  the library Pipeline behind a dynamic batcher (no Ray, no HTTP): the bound
  naive      one FastAPI/uvicorn process, Pipeline.run([one]) per request
  monolith   one Serve replica with every stage and @serve.batch (deployments/monolith.py)
  serve      the composed Serve app (deployments.app.build_app, local profile)

and reports the highest rate each sustains under the SLO, p50/p99 at fixed rates, CPU per
request (process-tree and machine-wide methods), memory, a per-stage breakdown of Serve's
latency, Serve variants against Serve (--variants), and offline speed/quality experiments
(--experiments). Outputs under --out: report.md, summary.json, latency_vs_rate.png, raw
records_*.parquet and points.parquet. Ray systems start one at a time, only when no other Ray
instance runs on this machine; each is shut down through its own handles.

examples:
  python scripts/bench.py --quick                       # 4 systems, reduced sweep, < 10 min
  python scripts/bench.py                               # full sweep, variants, experiments
  python scripts/bench.py --systems inprocess,naive --quick --json
  python scripts/bench.py --variants proxy,classic,uncoalesced --experiments none

variants (each measured against its baseline in the same run; all but threads2 are Serve
apps compared with `serve`, threads2 is compared with `inprocess`). `serve` itself is the local
default (deployments.serve_main.LOCAL_SERVE_ENV, local profile): throughput-optimised Serve
with direct ingress, ingress coalescing (2 groups of up to 16 in flight), stages batching 16
with no wait. The monolith runs under the same Serve settings.
  proxy        HTTP through Serve's proxy         classic    Serve's defaults, proxy
  uncoalesced  each request down the chain alone  inflight1 / inflight4  groups in flight
  batch8       stages batch 8 / 0 ms              batch32    stages batch 32 / 5 ms
  int8         encoder int8 quantisation          nocache    query caches off
  ingresscache cached searches skip the encoder (query cache at the ingress)
  dashboard    default Ray start (dashboard)      threads2   in-process, 2 threads
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
    p.add_argument("--quick", action="store_true", help="reduced sweep (< 10 min for 4 systems)")
    p.add_argument(
        "--systems",
        type=_csv,
        default="inprocess,naive,monolith,serve",
        help="comma list of systems (default: all four)",
    )
    p.add_argument(
        "--variants",
        type=_csv,
        default=None,
        help="comma list of Serve variants, or none (default: all; none with --quick)",
    )
    p.add_argument(
        "--experiments",
        type=_csv,
        default=None,
        help="comma list of offline experiments, or none (default: all)",
    )
    p.add_argument("--rates", type=_floats, help="coarse rate grid, req/s (ascending)")
    p.add_argument("--fixed-rates", type=_floats, help="rates every system reports p50/p99 at")
    p.add_argument("--low-rate", type=float, help="low-load rate (default: first rate)")
    p.add_argument("--duration", type=float, help="seconds of arrivals per rate")
    p.add_argument("--warmup", type=float, help="seconds of warm-up traffic per system")
    p.add_argument("--slo-ms", type=float, default=100.0, help="p99 SLO in ms (default 100)")
    p.add_argument(
        "--min-good", type=float, default=0.99, help="share of good answers a rate needs (0.99)"
    )
    p.add_argument("--timeout", type=float, default=5.0, help="client timeout per request (s)")
    p.add_argument("--seed", type=int, default=0, help="schedule seed (same for every system)")
    p.add_argument("--mix", help="route weights, e.g. search=0.7,recommend=0.2,similar=0.1")
    p.add_argument("--torch-threads", type=int, default=1, help="in-process / naive threads")
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


def bench_config(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    """The BenchConfig the flags describe."""
    from deployments.profiles import local_profile
    from recsys.bench.config import (
        EXPERIMENTS,
        VARIANTS,
        BenchConfig,
        SloConfig,
        full_sweep,
        quick_sweep,
        select_systems,
    )
    from recsys.traffic.__main__ import parse_mix

    sweep = quick_sweep() if args.quick else full_sweep()
    updates: dict[str, object] = {"timeout_s": args.timeout}
    if args.rates:
        updates["rates"] = args.rates
    if args.duration:
        updates["duration_s"] = args.duration
    if args.warmup is not None:
        updates["warmup_s"] = args.warmup
    sweep = sweep.model_validate({**sweep.model_dump(), **updates})
    variants = (
        args.variants if args.variants is not None else ([] if args.quick else list(VARIANTS))
    )
    experiments = args.experiments if args.experiments is not None else list(EXPERIMENTS)
    fixed = (
        args.fixed_rates
        if args.fixed_rates is not None
        else ([5.0, 10.0, 25.0] if args.quick else [5.0, 10.0, 20.0, 40.0])
    )
    artifacts = str(Path(args.artifacts).resolve())
    app = local_profile().model_copy(update={"artifacts": artifacts})
    data: dict[str, object] = {
        "artifacts": artifacts,
        "app": app,
        "systems": select_systems(args.systems, variants),
        "sweep": sweep,
        "slo": SloConfig(p99_ms=args.slo_ms, min_good_share=args.min_good),
        "seed": args.seed,
        "fixed_rates": fixed,
        "low_load_rate": args.low_rate,
        "torch_threads": args.torch_threads,
        "nice": args.nice,
        "experiments": experiments,
        "wait_for_ray_s": args.wait_for_ray_s,
        "max_background_cores": args.max_background_cores,
        "point_retries": args.point_retries,
    }
    if args.mix:
        data["mix"] = parse_mix(args.mix)
    return BenchConfig.model_validate(data)


def print_table(summary: dict, stream) -> None:  # type: ignore[no-untyped-def,type-arg]
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

    from deployments.serve_main import apply_local_serve_env, direct_ingress_port
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
        direct_port = direct_ingress_port("recsys", spec.port)
        direct = f"http://127.0.0.1:{direct_port}" if direct_port else None
        from ray.serve._private import constants

        info = {
            "url": direct or f"http://127.0.0.1:{spec.port}",
            "direct_ingress": direct is not None,
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
