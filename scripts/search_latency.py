#!/usr/bin/env python
"""In-process search latency (``Pipeline.run``, the benchmark's in-process path), before/after.

Loads the pipeline of an artifact in this process (no Ray, no HTTP, one torch/FAISS thread,
what one stage replica has), answers distinct labelled queries one at a time and reports
p50/p90/p99 of the whole request and the mean of each stage. With ``--before DIR``, the same
measurement runs first with the code of another checkout (``git worktree add DIR COMMIT``)
on ``--before-artifacts``, then with this one, rounds alternating, so both sides share the
machine's state: the difference is what the change costs.

    git worktree add /tmp/before <commit>   # and build an artifact with that code
    python scripts/search_latency.py --artifacts artifacts/demo \\
        --before /tmp/before --before-artifacts /tmp/before-demo --out results/search_latency
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--artifacts", default="artifacts/demo", help="artifact of this checkout")
    p.add_argument("--requests", type=int, default=400, help="searches per round and side")
    p.add_argument("--rounds", type=int, default=3, help="alternating rounds (spread)")
    p.add_argument("--before", type=Path, default=None, help="checkout of the 'before' code")
    p.add_argument("--before-artifacts", default=None, help="artifact built by that code")
    p.add_argument("--out", type=Path, default=None, help="write report.md + rows.parquet here")
    p.add_argument("--measure", action="store_true", help=argparse.SUPPRESS)  # child mode
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


def measure(artifacts: str, n: int, seed: int) -> dict[str, object]:
    """One side, in this process: per-request wall ms and stage means."""
    import numpy as np
    import pandas as pd
    import torch

    torch.set_num_threads(1)
    import faiss

    faiss.omp_set_num_threads(1)
    from recsys.config import AppConfig
    from recsys.pipeline import Pipeline

    pipe = Pipeline.load(AppConfig(artifacts=artifacts))
    queries = pd.read_parquet(Path(artifacts) / "data" / "queries.parquet")["query"].tolist()
    rng = np.random.default_rng(seed)
    picked = [queries[i] for i in rng.permutation(len(queries))[: n + 20]]
    for text in picked[:20]:  # warm up
        pipe.search(text)
    wall, stages = [], []
    for text in picked[20:]:
        started = time.perf_counter()
        resp = pipe.search(text)
        wall.append((time.perf_counter() - started) * 1000.0)
        stages.append(resp.timings_ms)
    import recsys

    frame = pd.DataFrame(stages)
    return {
        "wall_ms": wall,
        "stages": {k: float(frame[k].mean()) for k in frame.columns},
        "code": str(Path(recsys.__file__).parent.parent),
    }


def run_side(checkout: Path, artifacts: str, n: int, seed: int) -> dict:
    env = dict(os.environ, PYTHONPATH=str(checkout), HF_HUB_OFFLINE="1")
    done = subprocess.run(
        [
            sys.executable,
            str(Path(__file__).resolve()),
            "--measure",
            "--artifacts",
            artifacts,
            "--requests",
            str(n),
            "--seed",
            str(seed),
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=checkout,
        check=True,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.measure:
        print(json.dumps(measure(args.artifacts, args.requests, args.seed)))
        return 0
    import numpy as np
    import pandas as pd

    sides = {"after": (ROOT, args.artifacts)}
    if args.before is not None:
        if args.before_artifacts is None:
            print("search_latency: --before needs --before-artifacts")
            return 2
        sides = {"before": (args.before, args.before_artifacts), **sides}
    rows = []
    for r in range(args.rounds):
        for side, (checkout, artifacts) in sides.items():
            got = run_side(checkout, artifacts, args.requests, args.seed + r)
            if Path(got["code"]).resolve() != Path(checkout).resolve():
                raise RuntimeError(f"{side} ran the code in {got['code']}, not {checkout}")
            rows += [{"side": side, "round": r, "wall_ms": w} for w in got["wall_ms"]]
            rows[-1].update({f"stage_{k}": v for k, v in got["stages"].items()})
            print(side, r, f"p50 {np.percentile(got['wall_ms'], 50):.2f} ms", flush=True)
    frame = pd.DataFrame(rows)
    table = [
        "| side | round p50s (ms) | p50 (median of rounds) | p90 | p99 |",
        "|---|---|---|---|---|",
    ]
    p50 = {}
    for side in sides:
        part = frame[frame["side"] == side]
        per_round = [float(np.percentile(g["wall_ms"], 50)) for _, g in part.groupby("round")]
        p50[side] = float(np.median(per_round))
        table.append(
            f"| {side} | {', '.join(f'{x:.2f}' for x in per_round)} | {p50[side]:.2f} | "
            f"{np.percentile(part['wall_ms'], 90):.2f} | {np.percentile(part['wall_ms'], 99):.2f} |"
        )
    sys.path.insert(0, str(ROOT))
    from recsys.reporting import git_state

    commit = git_state(ROOT)[0][:12]
    before_commit = git_state(args.before)[0][:12] if args.before is not None else ""
    text = "\n".join(
        [
            "# In-process search latency",
            "",
            f"After: commit `{commit}` on `{args.artifacts}`"
            + (
                f"; before: commit `{before_commit}` on `{args.before_artifacts}`"
                if before_commit
                else ""
            )
            + f". {args.requests} distinct labelled queries per round and side, one at a time, "
            f"one thread, {args.rounds} alternating rounds.",
            "",
            *table,
            "",
            *(
                [f"p50 difference (after - before): {p50['after'] - p50['before']:+.2f} ms", ""]
                if "before" in p50
                else []
            ),
            "Reproduce: `python scripts/search_latency.py "
            + " ".join(argv if argv is not None else sys.argv[1:])
            + "`",
            "",
        ]
    )
    print(text)
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        frame.to_parquet(args.out / "rows.parquet", index=False)
        (args.out / "report.md").write_text(text)
        (args.out / "summary.json").write_text(json.dumps({"p50_ms": p50}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
