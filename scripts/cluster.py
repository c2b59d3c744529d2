#!/usr/bin/env python
"""A local Ray cluster whose GPU worker nodes come and go with load (simulated, one machine).

Ray's own autoscaler runs over its fake multi-node provider: each worker "node" is another
raylet on this machine, started and stopped by the autoscaler, advertising logical resources.
Node types mirror the production worker groups of k8s/cluster.yaml:

  gpu-small   CPU 6,  GPU 1   QueryEncoder / Retriever replicas (0.5 GPU each), Ingress
  gpu-multi   CPU 16, GPU 2   Ranker gangs (2 bundles of {CPU 4, GPU 1}, STRICT_PACK)

The head advertises 0 CPUs, as on Kubernetes: it runs only Serve's controller and the HTTP
proxy (deploy with proxy_location: HeadOnly, as deployments/configs/gpu.yaml does). Logical
CPUs and GPUs are scheduling labels; all compute shares the machine's real cores.

commands:
  up       start the head detached (pid, token, autoscaler config and logs in --state-dir)
           and wait until the minimum worker nodes are up
  down     stop the head by its pid and wait; then stop what the fake nodes left behind
           (processes of the cluster's own session only)
  status   nodes by type (active / pending) and Serve deployments with replica counts

examples:
  python scripts/cluster.py up
  serve run / serve deploy need RAY_ADDRESS and the token: `python scripts/cluster.py env`
  python scripts/cluster.py status
  python scripts/cluster.py down

Only one Ray instance at a time on this machine: `up` refuses while another raylet or GCS
server runs (--allow-other-ray to override).
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import yaml  # noqa: E402

from recsys.experiments.cluster_spec import format_status, spec_from_k8s  # noqa: E402
from recsys.experiments.local_cluster import DEFAULT_STATE_DIR, ClusterError, LocalCluster  # noqa: E402
from recsys.k8s.spec import ClusterSpec  # noqa: E402

K8S_CLUSTER = ROOT / "k8s" / "cluster.yaml"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="scripts/cluster.py",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--state-dir",
        type=Path,
        default=DEFAULT_STATE_DIR,
        help=f"where the cluster's pid, token, config and logs live (default {DEFAULT_STATE_DIR})",
    )
    sub = p.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="start the cluster and wait until it is ready")
    up.add_argument("--gpu-small-max", type=int, default=3, help="max gpu-small nodes (default 3)")
    up.add_argument(
        "--gpu-multi-max",
        type=int,
        default=4,
        help="max gpu-multi nodes (default 4, as in production)",
    )
    up.add_argument(
        "--idle-timeout",
        type=float,
        default=20.0,
        help="seconds before an idle node is removed (default 20)",
    )
    up.add_argument(
        "--gcs-port", type=int, default=6390, help="GCS port of the head (default 6390)"
    )
    up.add_argument(
        "--timeout", type=float, default=180.0, help="seconds to wait for readiness (default 180)"
    )
    up.add_argument(
        "--allow-other-ray", action="store_true", help="start even if another Ray instance runs"
    )
    down = sub.add_parser("down", help="stop the cluster and every process it started")
    down.add_argument(
        "--timeout", type=float, default=60.0, help="seconds before SIGKILL (default 60)"
    )
    status = sub.add_parser("status", help="nodes by type and Serve replicas")
    status.add_argument("--app", default="recsys", help="Serve application name (default recsys)")
    status.add_argument("--json", action="store_true", help="print JSON")
    sub.add_parser("env", help="print the environment a client needs (eval it in a shell)")
    return p.parse_args(argv)


def cmd_up(cluster: LocalCluster, args: argparse.Namespace) -> int:
    k8s = ClusterSpec.model_validate(yaml.safe_load(K8S_CLUSTER.read_text()))
    spec = spec_from_k8s(
        k8s,
        max_workers={"gpu-small": args.gpu_small_max, "gpu-multi": args.gpu_multi_max},
        idle_timeout_s=args.idle_timeout,
        gcs_port=args.gcs_port,
    )
    state = cluster.up(
        spec,
        timeout_s=args.timeout,
        allow_other_ray=args.allow_other_ray,
        code_from=ROOT if args.snapshot_code else None,
    )
    print(f"address {state.address}; head pid {state.pid}; logs {cluster.state_dir / 'ray-logs'}")
    print(f'clients: eval "$(python scripts/cluster.py --state-dir {cluster.state_dir} env)"')
    return 0


def cmd_status(cluster: LocalCluster, args: argparse.Namespace) -> int:
    state = cluster.running()
    if state is None:
        print(f"no cluster running from {cluster.state_dir}")
        return 1
    from deployments import cluster_probe

    cluster_probe.connect(state)
    try:
        nodes = cluster_probe.nodes()
        try:
            app_status = cluster_probe.app_status(args.app)
            replicas = cluster_probe.replicas(args.app) if app_status else {}
        except Exception:  # Serve not started on this cluster
            app_status, replicas = None, {}
    finally:
        cluster_probe.disconnect()
    if args.json:
        print(
            json.dumps(
                {
                    "address": state.address,
                    "head_pid": state.pid,
                    "nodes": {
                        "active": nodes.active,
                        "pending": nodes.pending,
                        "failures": nodes.failures,
                    },
                    "application": app_status,
                    "replicas": {k: asdict(v) for k, v in replicas.items()},
                },
                indent=2,
            )
        )
    else:
        print(f"cluster at {state.address} (head pid {state.pid})")
        print(format_status(nodes, replicas, app_status))
    return 0


def cmd_env(cluster: LocalCluster) -> int:
    state = cluster.running()
    if state is None:
        print(f"no cluster running from {cluster.state_dir}", file=sys.stderr)
        return 1
    for key, value in state.client_env().items():
        print(f"export {key}={value}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    cluster = LocalCluster(args.state_dir)
    try:
        if args.command == "up":
            return cmd_up(cluster, args)
        if args.command == "down":
            report = cluster.down(timeout_s=args.timeout)
            if not report.was_running and not report.stragglers_terminated:
                print(f"no cluster running from {cluster.state_dir}")
            return 0
        if args.command == "status":
            return cmd_status(cluster, args)
        return cmd_env(cluster)
    except ClusterError as exc:
        print(f"cluster: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
