#!/usr/bin/env python
"""Deploy the Serve application to Kubernetes as a KubeRay RayService, and wait for it.

Renders the RayService from the Serve config and k8s/cluster.yaml (exactly what
`render_k8s.py` writes to k8s/rayservice.yaml), then:

  1. checks that the cluster is reachable and the KubeRay CRD (rayservices.ray.io) installed;
  2. shows what will change against the live RayService (or that it will be created);
  3. creates it, or patches exactly the fields that differ;
  4. follows the rollout (pending -> upgrading -> running) on one status line until it is
     running, failed, or --timeout passes;
  5. prints the in-cluster Serve endpoint, <name>-serve-svc.<namespace>.svc:8000.

A changed image or worker group makes KubeRay start a second cluster and switch traffic once
it serves (blue/green, no downtime); a changed Serve config alone (e.g. the artifact URI) is
rolled out in place by Serve.

Credentials come from --kubeconfig/--context, $KUBECONFIG, ~/.kube/config, or the pod's
service account when run inside the cluster.

examples:
  python scripts/deploy.py --dry-run          # print the manifest, touch nothing
  python scripts/deploy.py --diff-only        # show the changes against the cluster, apply nothing
  python scripts/deploy.py --timeout 1800     # apply and wait up to 30 minutes

exit status: 0 running, 2 invalid input, 3 no cluster reachable, 4 KubeRay CRD not installed,
5 rollout failed, 6 timed out, 1 other Kubernetes API error.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import IO, Any

from tqdm import tqdm

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from kubernetes import client  # noqa: E402

from recsys.k8s.deploy import (  # noqa: E402
    ApplyPlan,
    DeployError,
    RayServiceApi,
    api_client_from_config,
    endpoint,
    plan_apply,
    wait_for_rollout,
)
from recsys.k8s.rollout import RolloutStatus  # noqa: E402
from scripts.render_k8s import (  # noqa: E402
    DEFAULT_CLUSTER,
    DEFAULT_OUTPUT,
    DEFAULT_SERVE_CONFIG,
    InputError,
    render,
)

EXIT_INPUT = 2


class StatusLine:
    """Rollout progress: one self-updating line on a terminal, a line per change otherwise."""

    def __init__(self, stream: IO[str]) -> None:
        self._stream = stream
        self._start = time.monotonic()
        self._last = ""
        is_tty = getattr(stream, "isatty", lambda: False)()
        self._bar = tqdm(file=stream, bar_format="{desc} [{elapsed}]") if is_tty else None

    def update(self, status: RolloutStatus) -> None:
        """Show ``status``."""
        text = f"rollout: {status.state} - {status.reason}"
        if self._bar is not None:
            self._bar.set_description_str(text)
        elif text != self._last:
            print(f"[{time.monotonic() - self._start:6.1f}s] {text}", file=self._stream)
        self._last = text

    def close(self) -> None:
        """Finish the line."""
        if self._bar is not None:
            self._bar.close()


def deploy(
    api_client: client.ApiClient,
    manifest: dict[str, Any],
    *,
    timeout_s: float,
    poll_interval_s: float = 2.0,
    diff_only: bool = False,
    out: IO[str] = sys.stdout,
    err: IO[str] = sys.stderr,
) -> RolloutStatus | None:
    """Apply ``manifest`` through ``api_client`` and wait for the rollout.

    Returns the final (running) status, or None with ``diff_only``; raises ``DeployError``.
    """
    api = RayServiceApi(api_client)
    api.ensure_crd_installed()
    namespace, name = manifest["metadata"]["namespace"], manifest["metadata"]["name"]
    live = api.get(namespace, name)
    schema = api.crd_schema() if live is not None else None
    plan = plan_apply(live, manifest, schema)
    _show_plan(plan, f"{namespace}/{name}", defaults_known=schema is not None, out=out)
    if diff_only:
        return None
    if plan.action == "create":
        stored = api.create(manifest)
    elif plan.action == "patch":
        stored = api.patch(namespace, name, plan.patch)
    else:
        stored = live or {}
    generation = int(stored.get("metadata", {}).get("generation") or 1)
    progress = StatusLine(err)
    try:
        final = wait_for_rollout(
            api,
            namespace,
            name,
            generation,
            timeout_s=timeout_s,
            poll_interval_s=poll_interval_s,
            on_status=progress.update,
        )
    finally:
        progress.close()
    print(f"RayService {namespace}/{name} generation {generation} is running", file=out)
    print(f"  {final.reason}", file=out)
    print(f"Serve endpoint (in cluster): http://{endpoint(name, namespace)}", file=out)
    print("Serve status:", file=out)
    print(f"  kubectl -n {namespace} port-forward svc/{name}-head-svc 8265 &", file=out)
    print("  serve status --address http://localhost:8265", file=out)
    return final


def _show_plan(plan: ApplyPlan, what: str, *, defaults_known: bool, out: IO[str]) -> None:
    if plan.action == "create":
        print(f"RayService {what} does not exist: creating it", file=out)
    elif plan.action == "none":
        print(f"RayService {what} is up to date: nothing to apply", file=out)
    else:
        print(f"RayService {what}: {len(plan.changes)} change(s)", file=out)
        for change in plan.changes:
            print(f"  ~ {change}", file=out)
        if not defaults_known:
            print(
                "  (CRD schema not readable: server-side defaults may show as removals)", file=out
            )


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface."""
    parser = argparse.ArgumentParser(
        prog="deploy.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sources = parser.add_argument_group("what to deploy")
    sources.add_argument(
        "--serve-config",
        type=Path,
        default=DEFAULT_SERVE_CONFIG,
        metavar="PATH",
        help="Serve config (ServeDeploySchema YAML); default: %(default)s",
    )
    sources.add_argument(
        "--cluster",
        type=Path,
        default=DEFAULT_CLUSTER,
        metavar="PATH",
        help="ClusterSpec YAML (name, namespace, image, node pools); default: %(default)s",
    )
    target = parser.add_argument_group("where")
    target.add_argument("--kubeconfig", metavar="PATH", help="kubeconfig file")
    target.add_argument("--context", metavar="NAME", help="kubeconfig context")
    mode = parser.add_argument_group("how")
    mode.add_argument(
        "--timeout",
        type=float,
        default=1800.0,
        metavar="SECONDS",
        help="give up waiting for the rollout after this long (default: %(default)g; a "
        "new cluster of GPU nodes can take 10+ minutes)",
    )
    mode.add_argument(
        "--poll-interval",
        type=float,
        default=2.0,
        metavar="SECONDS",
        help="seconds between status reads (default: %(default)g)",
    )
    exclusive = mode.add_mutually_exclusive_group()
    exclusive.add_argument(
        "--dry-run",
        action="store_true",
        help="print the rendered manifest and exit; no cluster is contacted",
    )
    exclusive.add_argument(
        "--diff-only", action="store_true", help="show the changes against the cluster, apply none"
    )
    return parser


def main(
    argv: list[str] | None = None,
    *,
    api_client: client.ApiClient | None = None,
    out: IO[str] = sys.stdout,
    err: IO[str] = sys.stderr,
) -> int:
    """Run the command line; ``api_client`` replaces the kubeconfig (tests). Returns the exit
    status; every failure is one line on ``err``, never a traceback."""
    args = build_parser().parse_args(argv)
    try:
        manifest, text = render(args.serve_config, args.cluster, DEFAULT_OUTPUT)
    except InputError as error:
        print(f"deploy.py: error: {error}", file=err)
        return EXIT_INPUT
    if args.dry_run:
        out.write(text)
        return 0
    try:
        if api_client is None:
            api_client = api_client_from_config(args.kubeconfig, args.context)
        deploy(
            api_client,
            manifest,
            timeout_s=args.timeout,
            poll_interval_s=args.poll_interval,
            diff_only=args.diff_only,
            out=out,
            err=err,
        )
    except DeployError as error:
        print(f"deploy.py: error: {error}", file=err)
        return error.exit_code
    except KeyboardInterrupt:
        print("deploy.py: interrupted (the rollout continues in the cluster)", file=err)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
