#!/usr/bin/env python
"""Search relevance and session re-ranking of freshly built artifacts, side by side.

Builds each world (the demo, and small worlds where a ranker has little data to learn from)
with ``recsys build`` at this commit, runs ``recsys eval`` on it, and writes
``results/quality/report.md`` (tables), ``summary.json`` (every metric) and per-world
``eval_<world>.json``. Search relevance (held-out labelled queries, complete judgments from
the synthetic world's own relevance rule, and labels only) is shown next to session
re-ranking, so neither can hide a regression in the other.

Refuses to run from a dirty tree (the report records the commit) unless --allow-dirty.

    python scripts/quality.py --out results/quality            # ~15 min on 2 cores
    python scripts/quality.py --worlds small0 --keep artifacts  # one small world, ~2 min
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

WORLDS: dict[str, list[str]] = {
    "demo": [],
    "small0": ["--items", "3000", "--shoppers", "400", "--seed", "0"],
    "small11": ["--items", "3000", "--shoppers", "400", "--seed", "11"],
}
"""World name -> ``recsys build`` flags (demo: the defaults, 50K items, 20K shoppers)."""


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--worlds",
        default=",".join(WORLDS),
        help=f"comma-separated worlds to build and evaluate (of {', '.join(WORLDS)})",
    )
    p.add_argument("--out", type=Path, default=ROOT / "results" / "quality")
    p.add_argument(
        "--keep",
        type=Path,
        default=None,
        help="keep the built artifacts under this folder (default: a temporary folder)",
    )
    p.add_argument("--allow-dirty", action="store_true", help="run from a tree with changes")
    return p.parse_args(argv)


def build_and_evaluate(world: str, where: Path) -> dict:
    out = where / world
    cmd = [sys.executable, "-m", "recsys.cli", "build", *WORLDS[world], "--out", str(out)]
    started = time.perf_counter()
    subprocess.run([*cmd, "--force"], check=True, cwd=ROOT)
    build_s = time.perf_counter() - started
    from recsys.evaluate import evaluate

    metrics = evaluate(str(out))
    metrics["build_seconds"] = round(build_s, 1)
    metrics["build_command"] = "recsys build " + " ".join(WORLDS[world])
    return metrics


def report(results: dict[str, dict], commit: str, dirty: bool, command: str) -> str:
    lines = [
        "# Search and recommendation quality",
        "",
        f"Commit `{commit}`{' (dirty tree)' if dirty else ''}, "
        f"{time.strftime('%Y-%m-%d')}, this repository's 2-core CPU machine. "
        f"Reproduce: `{command}`.",
        "",
        "Each world is built from scratch at that commit (`recsys build`, seeded: the same "
        "commit gives the same numbers) and evaluated with `recsys eval`. Search: the "
        "held-out test queries (25% of the labelled queries, split by query, never trained "
        "on, nor their sessions). `complete`: every returned item judged with the synthetic "
        "world's own relevance rule, ideal from the whole catalog; `labelled`: only the judged "
        "pairs (what a real dataset has). `ranked` is the served answer (the ranker over the "
        "hybrid candidates, anonymous shopper); the others are each candidate order alone.",
        "",
    ]
    orders = ["ranked", "dense", "lexical", "hybrid"]
    head = "| world | view | " + " | ".join(f"nDCG@10 {o}" for o in orders)
    head += " | recall@100 exact dense | lexical | hybrid |"
    lines += [head, "|" + " --- |" * (2 + len(orders) + 3)]
    for world, m in results.items():
        s = m["search"]
        for view, v in ((s["judgments"], s), ("labelled", s["labelled"])):
            nd = " | ".join(f"{v['ndcg_at_10'].get(o, float('nan')):.4f}" for o in orders)
            rc = " | ".join(
                f"{v['recall_at_100_exact'].get(o, float('nan')):.4f}" for o in orders[1:]
            )
            lines.append(f"| {world} | {view} | {nd} | {rc} |")
    lines += [
        "",
        "Session re-ranking (held-out later sessions of known shoppers; each session's logged "
        "impressions re-ranked; gains from funnel labels; `oracle` = the hidden utility, "
        "the ceiling):",
        "",
        "| world | ranker | retrieval order | popularity | oracle | test sessions |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for world, m in results.items():
        nd = m["ndcg_at_10"]
        lines.append(
            f"| {world} | {nd['ranker']:.4f} | {nd['retrieval_order']:.4f} | "
            f"{nd['popularity']:.4f} | {nd['oracle']:.4f} | {m['n_test_sessions']:,} |"
        )
    lines += ["", "Search nDCG@10 by query kind (main view):", ""]
    lines += ["| world | kind | queries | " + " | ".join(orders) + " |"]
    lines += ["|" + " --- |" * (3 + len(orders))]
    for world, m in results.items():
        for kind, v in m["search"]["by_kind"].items():
            cells = " | ".join(f"{v.get(o, float('nan')):.4f}" for o in orders)
            lines.append(f"| {world} | {kind} | {v['n']} | {cells} |")
    lines += [
        "",
        "| world | build command | build s | items | ANN recall@100 vs exact | coverage |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for world, m in results.items():
        lines.append(
            f"| {world} | `{m['build_command']}` | {m['build_seconds']:.0f} | "
            f"{m['n_items']:,} | {m['ann_recall_at_100_vs_exact']:.4f} | "
            f"{m['catalog_coverage']:.4f} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from recsys.reporting import git_state

    full, changed = git_state(ROOT)
    commit, dirty = full[:12], bool(changed)
    if dirty and not args.allow_dirty:
        print("quality: the tree has uncommitted changes; commit or pass --allow-dirty")
        return 2
    worlds = [w.strip() for w in args.worlds.split(",") if w.strip()]
    unknown = [w for w in worlds if w not in WORLDS]
    if unknown:
        print(f"quality: unknown worlds {unknown}; choose from {list(WORLDS)}")
        return 2
    where = args.keep or Path(ROOT / ".cache" / "quality")
    where.mkdir(parents=True, exist_ok=True)
    results = {}
    for world in worlds:
        print(f"== {world}", flush=True)
        results[world] = build_and_evaluate(world, where)
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / f"eval_{world}.json").write_text(json.dumps(results[world], indent=2))
    command = "python scripts/quality.py " + " ".join(argv if argv is not None else sys.argv[1:])
    summary = {"commit": commit, "dirty": dirty, "command": command.strip(), "worlds": results}
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    (args.out / "report.md").write_text(report(results, commit, dirty, command.strip()))
    if args.keep is None:
        shutil.rmtree(where, ignore_errors=True)
    print((args.out / "report.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
