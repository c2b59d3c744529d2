#!/usr/bin/env python
"""Cold start of ``recsys serve`` per stage, and the first requests after its ready banner.

For each ``--tp`` value: starts ``recsys serve`` on the artifact (a new local Ray instance),
waits for the banner (printed once ``/readyz`` answers 200), reads every stage's cold start
from ``/readyz`` (artifact open, load, gang start, warm-up, in seconds), sends the next
``--requests`` mixed requests one after another and counts answers that are 200, ranked
(not degraded) and within the app's deadline; then stops the server with SIGTERM. Writes
``report.md`` and ``summary.json`` to ``--out`` with the commit.

Run one Ray instance at a time on a small machine (wrap it as the tests do:
``flock /tmp/recsys-ray.lock python scripts/cold_start.py ...``).

    python scripts/cold_start.py --artifacts artifacts/demo --tp 1,2 --out results/cold_start
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BANNER_END = "Ctrl-C stops it."


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--artifacts", default="artifacts/demo", help="artifact to serve")
    p.add_argument("--tp", default="1,2", help="comma-separated ranks per ranker replica")
    p.add_argument("--requests", type=int, default=50, help="requests after the banner")
    p.add_argument("--deadline-ms", type=float, default=1000.0, help="the app's deadline")
    p.add_argument("--out", type=Path, default=ROOT / "results" / "cold_start")
    p.add_argument("--timeout-s", type=float, default=900.0, help="give up on a start after")
    return p.parse_args(argv)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def requests_for(artifacts: Path) -> list[tuple[str, str, dict | None]]:
    import pandas as pd

    queries = pd.read_parquet(artifacts / "data" / "queries.parquet")["query"].tolist()
    users = pd.read_parquet(artifacts / "data" / "shoppers.parquet")["user_id"].tolist()
    items = pd.read_parquet(artifacts / "data" / "items.parquet", columns=["item_id"])
    out: list[tuple[str, str, dict | None]] = []
    for i in range(200):
        kind = i % 4
        if kind == 0 or not users:
            out.append(("POST", "/v1/search", {"query": queries[i % len(queries)], "k": 10}))
        elif kind == 1:
            body = {"query": queries[(7 * i) % len(queries)], "user_id": users[i % len(users)]}
            out.append(("POST", "/v1/search", body))
        elif kind == 2:
            out.append(("POST", "/v1/recommend", {"user_id": users[(3 * i) % len(users)]}))
        else:
            item = items["item_id"].iloc[(11 * i) % len(items)]
            out.append(("GET", f"/v1/items/{item}/similar?k=10", None))
    return out


def run_once(args: argparse.Namespace, tp: int) -> dict:
    import httpx

    port = free_port()
    env = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    cmd = [
        sys.executable,
        "-m",
        "recsys.cli",
        "serve",
        "--artifacts",
        args.artifacts,
        "--port",
        str(port),
        "--tp",
        str(tp),
    ]
    started = time.monotonic()
    proc = subprocess.Popen(
        cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    lines: list[str] = []
    banner = threading.Event()

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line.rstrip("\n"))
            if BANNER_END in line:
                banner.set()

    threading.Thread(target=read, daemon=True).start()
    try:
        while not banner.wait(1):
            if proc.poll() is not None or time.monotonic() - started > args.timeout_s:
                raise RuntimeError("recsys serve did not get ready:\n" + "\n".join(lines[-30:]))
        ready_s = time.monotonic() - started
        base = f"http://127.0.0.1:{port}"
        with httpx.Client(base_url=base, timeout=30) as client:
            ready = client.get("/readyz").json()
            outcomes = []
            for method, path, body in requests_for(Path(args.artifacts))[: args.requests]:
                t0 = time.perf_counter()
                r = client.request(method, path, json=body)
                ms = (time.perf_counter() - t0) * 1000.0
                degraded = r.status_code == 200 and r.json().get("degraded", False)
                outcomes.append({"status": r.status_code, "ms": ms, "degraded": degraded})
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(120)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
    good = [
        o
        for o in outcomes
        if o["status"] == 200 and not o["degraded"] and o["ms"] <= args.deadline_ms
    ]
    stages = {
        name: {"phases": s.get("cold_start_s", {}), "total": s.get("cold_start_total_s")}
        for name, s in ready["stages"].items()
    }
    return {
        "tp": tp,
        "seconds_to_ready_banner": round(ready_s, 1),
        "stages": stages,
        "first_requests": len(outcomes),
        "first_requests_good": len(good),
        "first_requests_max_ms": round(max(o["ms"] for o in outcomes), 1),
    }


def report(runs: list[dict], commit: str, command: str) -> str:
    phases = ["artifact_open", "load", "gang_start", "stages_wait", "warmup"]
    lines = [
        "# Cold start per stage (`recsys serve`)",
        "",
        f"Commit `{commit}`, this repository's 2-core CPU machine. Reproduce: `{command}`.",
        "",
        "Seconds per phase of each stage's start (from `/readyz`, measured in each replica), "
        "the wall time from `recsys serve` to its ready banner (includes starting Ray and "
        "the replicas' processes and imports), and the requests sent right after the banner "
        "that were answered 200, ranked and within the deadline.",
        "",
        "| tp | stage | " + " | ".join(phases) + " | total |",
        "|" + " --- |" * (3 + len(phases)),
    ]
    for run in runs:
        for name, s in run["stages"].items():
            cells = " | ".join(f"{s['phases'][p]:.2f}" if p in s["phases"] else "-" for p in phases)
            lines.append(f"| {run['tp']} | {name} | {cells} | {s['total']:.2f} |")
    lines += [
        "",
        "| tp | to ready banner (s) | first requests good | slowest (ms) |",
        "| --- | --- | --- | --- |",
    ]
    for run in runs:
        lines.append(
            f"| {run['tp']} | {run['seconds_to_ready_banner']} | "
            f"{run['first_requests_good']}/{run['first_requests']} | "
            f"{run['first_requests_max_ms']} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    sys.path.insert(0, str(ROOT))
    from recsys.reporting import git_state

    commit = git_state(ROOT)[0][:12]
    runs = [run_once(args, int(tp)) for tp in args.tp.split(",")]
    command = "python scripts/cold_start.py " + " ".join(argv if argv is not None else sys.argv[1:])
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "summary.json").write_text(
        json.dumps({"commit": commit, "command": command, "runs": runs}, indent=2) + "\n"
    )
    text = report(runs, commit, command)
    (args.out / "report.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
