#!/usr/bin/env python
"""Low-load latency per endpoint of the composed Serve app on this machine.

Starts a local Ray instance with the app (the ``local`` profile, or --config) and the local
default's Serve settings, sends requests one at a time with a pause between them (no
queueing: what one shopper sees), alternating rounds between the ingress replica's own port
(direct ingress) and Serve's proxy, and reports p50/p90/p99 per endpoint and port plus the
server-side stage timings. Writes raw rows to parquet and a
markdown report; prints the table.

    python scripts/latency.py --artifacts artifacts/demo --requests 300 --out results/latency
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--artifacts", default="artifacts/demo", help="artifact directory to serve")
    p.add_argument(
        "--config", type=Path, default=None, help="AppConfig YAML (default: the local profile)"
    )
    p.add_argument(
        "--requests", type=int, default=300, help="requests per endpoint (split over the ports)"
    )
    p.add_argument("--pause-ms", type=float, default=20.0, help="pause between requests")
    p.add_argument("--port", type=int, default=8123)
    p.add_argument("--out", type=Path, default=ROOT / "results" / "latency")
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


def request_plan(artifacts: Path, n: int, seed: int) -> list[tuple[str, str, dict]]:
    """(endpoint, method+path, json body) for n requests of each endpoint, interleaved."""
    import pandas as pd

    rng = random.Random(seed)
    queries = pd.read_parquet(artifacts / "data" / "queries.parquet")
    weights = queries["frequency"].tolist()
    picked = rng.choices(queries["query"].tolist(), weights=weights, k=2 * n)
    users = pd.read_parquet(artifacts / "data" / "shoppers.parquet")["user_id"].tolist()
    items = pd.read_parquet(artifacts / "data" / "items.parquet", columns=["item_id"])
    item_ids = items["item_id"].tolist()
    plan = []
    for i in range(n):
        plan.append(("search", "/v1/search", {"query": picked[i], "k": 10}))
        plan.append(
            (
                "search_personal",
                "/v1/search",
                {"query": picked[n + i], "k": 10, "user_id": rng.choice(users)},
            )
        )
        plan.append(("recommend", "/v1/recommend", {"user_id": rng.choice(users), "k": 10}))
        plan.append(("similar", f"/v1/items/{rng.choice(item_ids)}/similar?k=10", {}))
    return plan


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from deployments.serve_main import apply_local_serve_env, direct_ingress_port

    apply_local_serve_env()  # the local default's Serve settings, before Ray is imported

    import httpx
    import numpy as np
    import pandas as pd
    import ray
    from ray import serve
    from tqdm import tqdm

    from deployments.app import build_app
    from deployments.profiles import local_profile
    from recsys.config import AppConfig
    from recsys.reporting import markdown_table

    config = AppConfig.from_file(args.config) if args.config else local_profile()
    config.artifacts = str(Path(args.artifacts).resolve())
    plan = request_plan(Path(args.artifacts), args.requests, args.seed)
    rows = []
    ray.init(address="local", include_dashboard=False, configure_logging=False, log_to_driver=False)
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": args.port})
        serve.run(build_app(config), name="recsys", route_prefix="/", blocking=False)
        ports = {"proxy": args.port}
        direct = direct_ingress_port("recsys", args.port)
        if direct is not None:
            ports = {"direct": direct, **ports}
        clients = {
            via: httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30)
            for via, port in ports.items()
        }
        try:
            for client in clients.values():
                for _ in range(20):  # warm up every path
                    client.post("/v1/search", json={"query": "warm up", "k": 10})
            vias = list(clients)
            # the plan repeats (search, personal, recommend, similar); rounds alternate between
            # the ports, so both see the same mix and the same query-cache warmth
            for i, (name, path, body) in enumerate(tqdm(plan, desc="requests", unit="req")):
                via = vias[(i // 4) % len(vias)]
                client = clients[via]
                started = time.perf_counter()
                r = client.post(path, json=body) if body else client.get(path)
                ms = (time.perf_counter() - started) * 1000
                payload = r.json()
                rows.append(
                    {
                        "endpoint": name,
                        "via": via,
                        "status": r.status_code,
                        "latency_ms": ms,
                        "degraded": payload.get("degraded"),
                        **{f"server_{k}_ms": v for k, v in payload.get("timings_ms", {}).items()},
                    }
                )
                time.sleep(args.pause_ms / 1000)
        finally:
            for client in clients.values():
                client.close()
    finally:
        serve.shutdown()
        ray.shutdown()

    frame = pd.DataFrame(rows)
    args.out.mkdir(parents=True, exist_ok=True)
    frame.to_parquet(args.out / "latency.parquet")
    table = []
    for (via, name), g in frame.groupby(["via", "endpoint"], sort=False):
        ok = g[g["status"] == 200]
        p50, p90, p99 = np.percentile(ok["latency_ms"], [50, 90, 99])
        table.append(
            {
                "via": via,
                "endpoint": name,
                "requests": len(g),
                "ok": len(ok),
                "p50_ms": round(p50, 1),
                "p90_ms": round(p90, 1),
                "p99_ms": round(p99, 1),
                "server_total_p50_ms": round(float(ok["server_total_ms"].median()), 1),
                "degraded": int(ok["degraded"].sum()),
            }
        )
    summary = pd.DataFrame(table)
    command = "python scripts/latency.py " + " ".join(argv if argv is not None else sys.argv[1:])
    report = (
        "# Low-load latency per endpoint\n\n"
        f"One request at a time ({args.pause_ms:g} ms pause), {args.requests} per endpoint "
        "(rounds alternating between the two ports), "
        f"the `local` profile on a local Ray instance, artifact `{args.artifacts}`, on this "
        "2-core CPU machine, with the local default's Serve settings "
        "(`deployments.serve_main.LOCAL_SERVE_ENV`). Client-side wall time over loopback HTTP, "
        "`via` `direct`: the ingress replica's own port (direct ingress), `proxy`: Serve's "
        "proxy port; `server_total` is the ingress's own measurement.\n\n"
        + markdown_table(table)
        + f"\n\nReproduce: `{command.strip()}`\n"
    )
    (args.out / "report.md").write_text(report)
    (args.out / "summary.json").write_text(json.dumps(table, indent=2))
    print(summary.to_string(index=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
