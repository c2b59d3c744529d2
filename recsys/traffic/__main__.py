"""``python -m recsys.traffic``: send one bounded run of open-loop traffic, record it to parquet."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

from recsys.traffic.config import SHAPE_KINDS, RouteMix, TrafficConfig, shape_from_params
from recsys.traffic.runner import read_records, run, write_records
from recsys.traffic.schedule import Workload, build_schedule

DESCRIPTION = """\
Open-loop synthetic traffic against the recsys HTTP API. Every request's send time is drawn
in advance from the load shape (Poisson arrivals with a time-varying rate) and never waits for
earlier answers. Queries are drawn from the artifact's queries.parquet by their long-tailed
frequency, shoppers and similar-items seeds with a popular head and a long tail. Every
scheduled request gets exactly one recorded outcome (ok, http_error, timeout, error, ...) in
--out (parquet). The run is bounded by --duration and --max-requests and stops by itself.
Targets other than loopback are refused unless --allow-non-loopback.

examples:
  python -m recsys.traffic --artifacts artifacts/demo --shape constant --rate 20 \\
      --duration 30 --out /tmp/requests.parquet
  python -m recsys.traffic --artifacts artifacts/demo --shape step --rate 10 --peak 60 \\
      --duration 240 --t-up 30 --t-down 150 --out /tmp/step.parquet
  python -m recsys.traffic --config traffic.json --artifacts artifacts/demo --out r.parquet
"""


def parse_mix(text: str) -> RouteMix:
    """``search=0.7,recommend=0.2,similar=0.1`` -> RouteMix."""
    weights: dict[str, float] = {}
    for part in text.split(","):
        name, _, value = part.partition("=")
        if not value:
            raise argparse.ArgumentTypeError(f"mix entry {part!r} is not name=weight")
        weights[name.strip()] = float(value)
    try:
        return RouteMix(**weights)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m recsys.traffic",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--artifacts", required=True, help="local artifact directory (its data/)")
    p.add_argument("--out", type=Path, required=True, help="requests parquet to write")
    p.add_argument("--config", type=Path, help="TrafficConfig JSON; the flags below override it")
    p.add_argument(
        "--target",
        action="append",
        help="base URL (default http://127.0.0.1:8000); repeat it for several replicas of one "
        "service (for example each ingress replica's direct port): each request goes to the "
        "one with the fewest in flight",
    )
    p.add_argument("--shape", choices=SHAPE_KINDS, help="load shape (default constant)")
    p.add_argument("--duration", type=float, help="seconds of arrivals (default 30)")
    p.add_argument("--rate", type=float, help="base rate, req/s (constant rate, step low, ...)")
    p.add_argument("--peak", type=float, help="high rate, req/s (step high, ramp end, ...)")
    p.add_argument("--t-up", type=float, help="seconds to the rise (default 15%% of duration)")
    p.add_argument("--t-down", type=float, help="seconds to the fall (default 55%% of duration)")
    p.add_argument("--period", type=float, help="diurnal period in seconds (default duration)")
    p.add_argument(
        "--mix", type=parse_mix, help="route weights, e.g. search=0.7,recommend=0.2,similar=0.1"
    )
    p.add_argument("--seed", type=int, help="seed of every random draw (default 0)")
    p.add_argument("--timeout", type=float, help="per-request timeout in seconds (default 5)")
    p.add_argument("--max-requests", type=int, help="cap on scheduled requests")
    p.add_argument("--allow-non-loopback", action="store_true", help="allow a non-loopback target")
    p.add_argument(
        "--dry-run", action="store_true", help="print the schedule's summary, send nothing"
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def config_from_args(args: argparse.Namespace) -> TrafficConfig:
    data: dict[str, Any] = {}
    if args.config is not None:
        data = json.loads(args.config.read_text())
    duration = float(args.duration if args.duration is not None else data.get("duration_s", 30.0))
    data["duration_s"] = duration
    if args.shape is not None or "shape" not in data:
        if args.rate is None:
            raise SystemExit("--rate is required unless --config gives a shape")
        data["shape"] = shape_from_params(
            args.shape or "constant",
            duration,
            rate=args.rate,
            peak=args.peak,
            t_up=args.t_up,
            t_down=args.t_down,
            period_s=args.period,
        ).model_dump()
    for key, value in (
        ("target", args.target),
        ("seed", args.seed),
        ("timeout_s", args.timeout),
        ("max_requests", args.max_requests),
        ("mix", args.mix.model_dump() if args.mix is not None else None),
    ):
        if value is not None:
            data[key] = value
    if args.allow_non_loopback:
        data["allow_non_loopback"] = True
    return TrafficConfig.model_validate(data)


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        config = config_from_args(args)
    except ValueError as exc:
        print(f"invalid traffic config: {exc}", file=sys.stderr)
        return 2
    workload = Workload.from_artifact(args.artifacts, config.sampling, config.seed)
    schedule = build_schedule(config, workload)
    print(
        f"[traffic] {len(schedule)} requests over {config.duration_s:g}s "
        f"({config.shape.kind}) -> {', '.join(config.targets)}",
        file=sys.stderr,
    )
    if args.dry_run:
        print(schedule["route"].value_counts().to_string())
        return 0
    result = run(schedule, config, progress=not args.no_progress)
    write_records(result, args.out, config)
    records, _ = read_records(args.out)
    ok = records[records["outcome"] == "ok"]["latency_ms"]
    lag = records["send_lag_ms"].dropna()
    print(
        f"[traffic] sent {result.sent}/{len(records)}; outcomes "
        f"{records['outcome'].value_counts().to_dict()}; "
        f"ok p50 {np.nanpercentile(ok, 50) if len(ok) else float('nan'):.1f} ms "
        f"p99 {np.nanpercentile(ok, 99) if len(ok) else float('nan'):.1f} ms; "
        f"send lag p99 {np.percentile(lag, 99) if len(lag) else float('nan'):.1f} ms; "
        f"client cpu {result.client_cpu_s:.1f}s -> {args.out}",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
