#!/usr/bin/env python
"""Compare autoscaling experiments (typically the same traffic under different policies).

Writes comparison.md (one table: time to scale up and down, peak replicas and nodes, SLO
attainment, p99 by phase, 503/degraded/failed counts, replica-seconds, GPU-node-seconds) and
comparison.png (SLO-view p99, running replicas and worker nodes over time, one line per run)
into --out, from the experiment directories written by scripts/experiment.py.

With --policies, first runs scripts/experiment.py once per policy (sequentially: one cluster
at a time), with the experiment arguments given after `--`, into <out>/<prefix>-<policy>.

examples:
  # compare runs that exist
  python scripts/compare_policies.py --out results/experiments \\
      results/experiments/step-reactive results/experiments/step-conservative
  # run the same step under two policies, then compare
  python scripts/compare_policies.py --policies reactive conservative --out /tmp/cmp -- \\
      --shape step --rate 0.35 --peak 3 --duration 240 --t-up 30 --t-down 150 \\
      --ranker-batch 1 --device-ms 1000 --deadline-ms 4000 --slo-ms 4000
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from recsys.experiments.compare import COMPARISON_FILE, write_comparison  # noqa: E402
from recsys.experiments.policies import POLICIES  # noqa: E402
from recsys.experiments.spec import SPEC_FILE  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="scripts/compare_policies.py",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("runs", nargs="*", type=Path, help="experiment directories to compare")
    p.add_argument("--out", type=Path, required=True, help="where comparison.md/.png go")
    p.add_argument(
        "--policies",
        nargs="+",
        choices=sorted(POLICIES),
        help="run scripts/experiment.py once per policy first (arguments after --)",
    )
    p.add_argument(
        "--prefix", default="step", help="result directory prefix for --policies (default step)"
    )
    p.add_argument("experiment_args", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    runs: list[Path] = list(args.runs)
    extra = [a for a in args.experiment_args if a != "--"]
    if args.policies:
        for policy in args.policies:
            out = args.out / f"{args.prefix}-{policy}"
            command = [
                sys.executable,
                str(ROOT / "scripts" / "experiment.py"),
                *extra,
                "--policy",
                policy,
                "--out",
                str(out),
            ]
            print(f"[compare] running {' '.join(command[1:])}", flush=True)
            done = subprocess.run(command, cwd=ROOT)
            if done.returncode != 0:
                print(f"[compare] the {policy} run failed ({done.returncode})", file=sys.stderr)
                return done.returncode
            runs.append(out)
    elif extra:
        print("experiment arguments after -- need --policies", file=sys.stderr)
        return 2
    missing = [str(r) for r in runs if not (r / SPEC_FILE).is_file()]
    if missing:
        print(f"not experiment directories: {', '.join(missing)}", file=sys.stderr)
        return 2
    if len(runs) < 2:
        print("give at least two experiment directories (or --policies)", file=sys.stderr)
        return 2
    write_comparison(runs, args.out)
    print(f"[compare] {args.out / COMPARISON_FILE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
