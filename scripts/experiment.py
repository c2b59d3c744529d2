#!/usr/bin/env python
"""Run one autoscaling experiment end to end on the simulated GPU cluster.

  1. cluster up: Ray's autoscaler over the fake multi-node provider, worker node types
     mirroring k8s/cluster.yaml (gpu-small: 6 CPU 1 GPU; gpu-multi: 16 CPU 2 GPU; logical),
     head with 0 CPUs (Serve controller and HTTP proxy only);
  2. deploy the committed GPU serve config (deployments/configs/gpu.yaml) with only
     non-resource overrides: local --artifacts, torch_threads 1, the --policy's autoscaling
     parameters (and --batch / --device-ms when given); every override is listed in the report;
  3. warm-up at the base rate (not recorded);
  4. open-loop traffic of --shape (a separate process: python -m recsys.traffic) while a
     sampler records replicas per deployment and worker nodes per type every second;
  5. observe the scale-down for up to --tail seconds (stops early once replicas and nodes are
     back at their minimum);
  6. teardown (cluster down, no process left), then the report.

Writes into --out: requests.parquet, samples.parquet (raw, not committed), experiment.json,
run.json, summary.json, report.md and PNG plots.

examples:
  # capacity probe: one replica per stage, rising load
  python scripts/experiment.py --shape ramp --rate 0.5 --peak 8 --duration 120 \\
      --policy pinned --tail 5 --out results/experiments/capacity-cpu
  # a step from low load to ~3x one ranker gang's capacity (simulated device time 1 s per
  # batch of one: ~1 req/s per gang), under two policies (what results/experiments holds)
  python scripts/experiment.py --shape step --rate 0.35 --peak 3 --t-up 30 --t-down 150 \\
      --duration 240 --ranker-batch 1 --device-ms 1000 --deadline-ms 4000 --slo-ms 4000 \\
      --tail 120 --policy reactive --out results/experiments/step-reactive
  (the same with --policy conservative --out results/experiments/step-conservative)

One Ray instance at a time: the run refuses to start when another raylet or GCS runs on this
machine. Ctrl-C stops the traffic and tears the cluster down.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import yaml  # noqa: E402
from tqdm import tqdm  # noqa: E402

from recsys.config import AppConfig  # noqa: E402
from recsys.experiments.cluster_spec import FakeClusterSpec, check_fits, spec_from_k8s  # noqa: E402
from recsys.experiments.forecast import (  # noqa: E402
    DailyProfile,
    ScheduledEvent,
    write_events,
    write_profile,
)
from recsys.experiments.local_cluster import (  # noqa: E402
    DEFAULT_STATE_DIR,
    ClusterState,
    LocalCluster,
    other_ray_instances,
)
from recsys.experiments.policies import (  # noqa: E402
    DEPLOYMENT_NAMES,
    POLICIES,
    STAGES,
    StageOverrides,
    config_diff,
    experiment_app_config,
    get_policy,
)
from recsys.experiments.replay import scaler_settings  # noqa: E402
from recsys.experiments.sampler import Sampler  # noqa: E402
from recsys.experiments.spec import (  # noqa: E402
    DECISIONS_FILE,
    PROFILE_STEP_S,
    REQUESTS_FILE,
    SAMPLES_FILE,
    ExperimentSpec,
)
from recsys.k8s.spec import ClusterSpec  # noqa: E402
from recsys.reporting import git_state  # noqa: E402
from recsys.traffic.config import (  # noqa: E402
    SHAPE_KINDS,
    FlashSaleShape,
    TrafficConfig,
    shape_from_params,
)
from recsys.traffic.shapes import arrival_times, load_change_times  # noqa: E402

SERVE_CONFIG = ROOT / "deployments" / "configs" / "gpu.yaml"
K8S_CLUSTER = ROOT / "k8s" / "cluster.yaml"


def _port(text: str) -> int:
    port = int(text)
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"port must be 1..65535, got {port}")
    return port


def _arrivals(text: str) -> dict[str, float]:
    """``120`` (every node type) or ``gpu-multi=180,gpu-small=90``."""
    try:
        if "=" not in text:
            return {"*": float(text)}
        return {k.strip(): float(v) for k, v in (x.split("=") for x in text.split(","))}
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"bad --node-arrival-s {text!r}: {exc}") from None


SHAPE_DEFAULTS: dict[str, dict[str, float]] = {
    "step": {"duration": 420.0, "t_up": 60.0, "t_down": 240.0},
    "flash_sale": {"duration": 540.0, "t_up": 330.0, "t_down": 450.0},
    "diurnal": {"duration": 540.0},
    "ramp": {"duration": 600.0},
    "constant": {"duration": 300.0},
}
"""Per-shape defaults: long enough for nodes that take minutes to arrive; a flash sale opens
late enough to be announced 5 minutes ahead."""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="scripts/experiment.py",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--shape", choices=SHAPE_KINDS, default="flash_sale", help="load shape (default flash_sale)"
    )
    p.add_argument(
        "--duration",
        type=float,
        default=None,
        help="seconds of traffic (default by shape: step 420, flash_sale and diurnal 540)",
    )
    p.add_argument("--out", type=Path, required=True, help="result directory")
    p.add_argument(
        "--policy",
        choices=sorted(POLICIES),
        default="reactive",
        help="Serve autoscaling policy (default reactive)",
    )
    p.add_argument(
        "--artifacts",
        default="artifacts/demo",
        help="local artifact directory (default artifacts/demo)",
    )
    p.add_argument(
        "--rate",
        type=float,
        default=0.3,
        help="base load, req/s (step low, ramp start, diurnal trough, ...; default 0.3)",
    )
    p.add_argument(
        "--peak",
        type=float,
        default=2.4,
        help="high load, req/s (step high, ramp end, diurnal crest, sale peak; default 2.4: "
        "4 gangs at 60%% with the default device time)",
    )
    p.add_argument(
        "--t-up",
        type=float,
        default=None,
        help="seconds to the rise (default: step 60, flash_sale 330, others 15%% of --duration)",
    )
    p.add_argument(
        "--t-down",
        type=float,
        default=None,
        help="seconds to the fall (default: step 240, flash_sale 450, others 55%% of --duration)",
    )
    p.add_argument("--seed", type=int, default=0, help="traffic seed (default 0)")
    p.add_argument("--slo-ms", type=float, default=4000.0, help="latency SLO in ms (default 4000)")
    p.add_argument("--window", type=float, default=10.0, help="analysis window, s (default 10)")
    p.add_argument(
        "--timeout", type=float, default=5.0, help="client timeout per request, s (default 5)"
    )
    p.add_argument(
        "--warmup",
        type=float,
        default=20.0,
        help="seconds of unrecorded warm-up at --rate (default 20)",
    )
    p.add_argument(
        "--tail",
        type=float,
        default=120.0,
        help="max seconds observed after the traffic (default 120)",
    )
    p.add_argument(
        "--batch", type=int, default=None, help="override max_batch_size of the model stages"
    )
    p.add_argument(
        "--ranker-batch",
        type=int,
        default=1,
        help="override max_batch_size of the ranker (default 1: one request per device call)",
    )
    p.add_argument(
        "--device-ms",
        type=float,
        default=1000.0,
        help="simulated device time per ranker batch, ms (default 1000: a gang serves ~1 "
        "req/s, so a few req/s need several gangs; 0: off)",
    )
    p.add_argument(
        "--ranker-max",
        type=int,
        default=None,
        help="cap on ranker gangs, above the profile's if need be (default: the smaller of "
        "the policy's and the profile's); pair with --gpu-multi-max",
    )
    p.add_argument(
        "--deadline-ms",
        type=float,
        default=4000.0,
        help="override the ingress request deadline (routing.deadline_ms; the ranker gets it "
        "less the fallback reserve). Default 4000 (room for the simulated device time)",
    )
    p.add_argument("--gpu-small-max", type=int, default=3, help="max gpu-small nodes (default 3)")
    p.add_argument(
        "--gpu-multi-max",
        type=int,
        default=4,
        help="max gpu-multi nodes (default 4, as in production)",
    )
    p.add_argument(
        "--idle-timeout",
        type=float,
        default=None,
        help="node idle timeout, s (default: k8s/cluster.yaml's autoscaler idle timeout)",
    )
    p.add_argument(
        "--node-arrival-s",
        type=_arrivals,
        default="120",
        help="seconds from a node's request until it joins: one number for every node type, "
        "or TYPE=S,TYPE=S (default 120)",
    )
    p.add_argument(
        "--replica-start-s",
        type=float,
        default=30.0,
        help="expected replica start after its node arrives (artifact download + model load; "
        "the predictive policy's lead is node arrival + this; default 30)",
    )
    p.add_argument(
        "--announce-s",
        type=float,
        default=None,
        help="announce the load's rise (a sale's start) this many seconds ahead to the "
        "predictive policy (default: unannounced)",
    )
    p.add_argument(
        "--gpu-hour-usd",
        type=float,
        default=2.0,
        help="price per GPU-hour for the cost per million requests (default 2.0)",
    )
    p.add_argument(
        "--allow-dirty",
        action="store_true",
        help="run although tracked files differ from the commit (recorded in the report)",
    )
    p.add_argument(
        "--port", type=_port, default=8000, help="Serve HTTP port on loopback (default 8000)"
    )
    p.add_argument(
        "--state-dir",
        type=Path,
        default=DEFAULT_STATE_DIR,
        help="cluster state directory (default .cache/cluster)",
    )
    p.add_argument(
        "--client-nice",
        type=int,
        default=-5,
        help="niceness of the traffic process (default -5: above Ray's own processes at 0, "
        "so node start-ups cannot starve the sender; needs root, else it runs at 0; the "
        "report records what it got). Ray workers run at 15.",
    )
    p.add_argument("--force", action="store_true", help="overwrite an existing result in --out")
    p.add_argument("--no-report", action="store_true", help="skip summary and plots")
    args = p.parse_args(argv)
    defaults = SHAPE_DEFAULTS[args.shape]
    for key in ("duration", "t_up", "t_down"):
        if getattr(args, key) is None and key in defaults:
            setattr(args, key, defaults[key])
    if isinstance(args.node_arrival_s, str):
        args.node_arrival_s = _arrivals(args.node_arrival_s)
    return args


def host_facts() -> dict[str, Any]:
    import ray

    mem_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    git = ["git", "-C", str(ROOT)]
    commit = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    dirty = subprocess.run(
        [*git, "status", "--porcelain", "--", "recsys", "deployments"],
        capture_output=True,
        text=True,
    )
    return {
        "commit": commit.stdout.strip() or "unknown",
        "uncommitted_files_in_recsys_deployments": len(dirty.stdout.splitlines()),
        "cpus": os.cpu_count(),
        "memory_gib": round(mem_gb, 1),
        "python": platform.python_version(),
        "ray": ray.__version__,
        "machine": platform.machine(),
    }


def build_spec(
    args: argparse.Namespace, name: str
) -> tuple[ExperimentSpec, AppConfig, dict[str, Any]]:
    from deployments.serve_config import app_config_from_serve_config

    serve_config = yaml.safe_load(SERVE_CONFIG.read_text())
    if serve_config.get("proxy_location") != "HeadOnly":
        raise SystemExit(f"{SERVE_CONFIG} must keep proxy_location: HeadOnly")
    profile_app = app_config_from_serve_config(serve_config)
    k8s = ClusterSpec.model_validate(yaml.safe_load(K8S_CLUSTER.read_text()))
    arrivals = {
        g.name: args.node_arrival_s.get(g.name, args.node_arrival_s.get("*", 0.0))
        for g in k8s.worker_groups
    }
    cluster: FakeClusterSpec = spec_from_k8s(
        k8s,
        max_workers={"gpu-small": args.gpu_small_max, "gpu-multi": args.gpu_multi_max},
        idle_timeout_s=args.idle_timeout,
        arrival_s=arrivals,
    )
    problems = check_fits(serve_config, cluster)
    if problems:
        raise SystemExit(
            "the serve config does not fit the node types:\n  " + "\n  ".join(problems)
        )
    policy = get_policy(args.policy)
    stages = StageOverrides(
        max_batch_size=args.batch,
        ranker_max_batch_size=args.ranker_batch,
        ranker_device_ms=args.device_ms,
        deadline_ms=args.deadline_ms,
        ranker_max_replicas=args.ranker_max,
    )
    artifacts = str(Path(args.artifacts).resolve())
    app = experiment_app_config(profile_app, artifacts, policy, stages)
    shape = shape_from_params(
        args.shape,
        args.duration,
        rate=args.rate,
        peak=args.peak,
        t_up=args.t_up,
        t_down=args.t_down,
    )
    traffic = TrafficConfig(
        target=f"http://127.0.0.1:{args.port}",
        shape=shape,
        duration_s=args.duration,
        seed=args.seed,
        timeout_s=args.timeout,
    )
    tp = app.topology.tp
    replica_gpus = {
        DEPLOYMENT_NAMES["ingress"]: 0.0,
        DEPLOYMENT_NAMES["query_encoder"]: app.query_encoder.num_gpus,
        DEPLOYMENT_NAMES["retriever"]: app.retriever.num_gpus,
        DEPLOYMENT_NAMES["ranker"]: app.ranker.num_gpus * tp,
    }
    commit, dirty = git_state(ROOT)
    ranker_share = app.routing.deadline_ms * (1.0 - app.routing.fallback_reserve_share)
    spec = ExperimentSpec(
        name=name,
        node_arrival_s=arrivals,
        replica_start_s=args.replica_start_s,
        announce_s=args.announce_s,
        usd_per_gpu_hour=args.gpu_hour_usd,
        ranker_service_s=(args.device_ms / 1000.0) if args.device_ms else None,
        ranker_budget_s=ranker_share / 1000.0,
        commit=commit,
        dirty_files=dirty,
        policy=policy,
        stages=stages,
        config_diff=[(k, a, b) for k, a, b in config_diff(profile_app, app) if k != "artifacts"]
        + [("artifacts", profile_app.artifacts, args.artifacts)],
        replica_gpus=replica_gpus,
        cluster=cluster,
        traffic=traffic,
        slo_ms=args.slo_ms,
        window_s=args.window,
        warmup_s=args.warmup,
        tail_s=args.tail,
        port=args.port,
        command="python scripts/experiment.py " + shlex.join(_portable_argv(sys.argv[1:])),
        host=host_facts(),
    )
    return spec, app, serve_config


def _portable_argv(argv: list[str]) -> list[str]:
    """argv with absolute paths inside the repository made relative (a shareable command)."""
    out = []
    for a in argv:
        p = Path(a)
        if p.is_absolute() and ROOT in p.parents:
            a = str(p.relative_to(ROOT))
        out.append(a)
    return out


def port_free(port: int, wait_s: float = 0.0) -> bool:
    """Whether ``port`` can be bound on loopback, trying for up to ``wait_s`` (a cluster that
    just stopped, the previous run's, may hold it for a few seconds)."""
    deadline = time.monotonic() + wait_s
    while True:
        with socket.socket() as s:
            # as the server binds it: a closed connection's TIME_WAIT does not block it
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind(("127.0.0.1", port))
                return True
            except OSError:
                if time.monotonic() >= deadline:
                    return False
        time.sleep(1.0)


def wait_http_ready(port: int, timeout_s: float = 300) -> dict[str, Any]:
    """Until a search answers 200 and ranked (the ranker gang works); returns that answer."""
    import httpx

    deadline = time.monotonic() + timeout_s
    last: object = None
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
        while time.monotonic() < deadline:
            try:
                r = client.post("/v1/search", json={"query": "warm up", "k": 3})
                last = f"{r.status_code} {r.text[:200]}"
                if r.status_code == 200:
                    body = r.json()
                    if body.get("degraded_reason") in ("ranker_failed", "ranker_unavailable"):
                        last = f"ranker not working: {body.get('degraded_reason')}"
                    else:
                        return dict(body)
            except httpx.HTTPError as exc:
                last = exc
            time.sleep(2)
    raise RuntimeError(f"app not ready after {timeout_s:.0f}s (last: {last})")


def traffic_command(
    config_path: Path, artifacts: str, out: Path, nice: int, progress: bool = True
) -> list[str]:
    cmd = [
        sys.executable,
        "-m",
        "recsys.traffic",
        "--config",
        str(config_path),
        "--artifacts",
        artifacts,
        "--out",
        str(out),
    ]
    if not progress:
        cmd.append("--no-progress")
    return (["nice", "-n", str(nice)] + cmd) if nice else cmd


def run_traffic(cmd: list[str]) -> None:
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    process = subprocess.Popen(cmd, env=env, cwd=ROOT)
    try:
        rc = process.wait()
    except KeyboardInterrupt:
        process.send_signal(signal.SIGINT)
        process.wait(timeout=60)
        raise
    if rc != 0:
        raise RuntimeError(f"traffic generator exited with {rc}: {shlex.join(cmd)}")


def at_minimum(sampler: Sampler, app: AppConfig, cluster: FakeClusterSpec) -> bool:
    """Whether replicas and worker nodes are back at their minimums (nothing pending)."""
    snap = sampler.last
    if snap is None:
        return False
    for stage in STAGES:
        cfg = app.ingress if stage == "ingress" else getattr(app, stage)
        counts = snap.replicas.get(DEPLOYMENT_NAMES[stage])
        if counts is None or counts.running > cfg.autoscaling.min_replicas:
            return False
    if any(v > 0 for v in snap.pending_nodes.values()):
        return False
    return all(snap.worker_nodes.get(t.name, 0) <= t.min_workers for t in cluster.worker_types)


def observe_tail(sampler: Sampler, app: AppConfig, spec: ExperimentSpec, started: float) -> None:
    """Keep sampling after the traffic until everything is back at its minimum (plus 5 s) or
    the tail is over."""
    end = started + spec.traffic.duration_s + spec.tail_s
    bar = tqdm(total=max(0, int(end - time.time())), desc="scale-down", unit="s")
    done_since = None
    try:
        while time.time() < end:
            time.sleep(1.0)
            bar.update(1)
            snap = sampler.last
            if snap is not None:
                reps = " ".join(f"{k[:3]}{v.running}" for k, v in sorted(snap.replicas.items()))
                nodes = " ".join(f"{k}:{v}" for k, v in sorted(snap.worker_nodes.items()))
                bar.set_postfix_str(f"replicas {reps} nodes {nodes}", refresh=False)
            if at_minimum(sampler, app, spec.cluster):
                done_since = done_since or time.time()
                if time.time() - done_since >= 5.0:
                    break
            else:
                done_since = None
    finally:
        bar.close()


def deployment_overrides(
    spec: ExperimentSpec, app: AppConfig, scratch: Path
) -> dict[str, dict[str, Any]]:
    """Serve options the experiment sets beyond the app config: graceful shutdown of ranker
    gangs (stop taking requests, finish what they hold within the deadline, then stop) and,
    for the predictive stages, Serve's custom autoscaling policy."""
    from deployments.app import autoscaling

    deadline_s = app.routing.deadline_ms / 1000.0
    overrides: dict[str, dict[str, Any]] = {
        DEPLOYMENT_NAMES["ranker"]: {
            "graceful_shutdown_wait_loop_s": 1.0,
            "graceful_shutdown_timeout_s": max(30.0, 3 * deadline_s),
        }
    }
    for stage in spec.policy.predictive:
        cfg = getattr(app, stage)
        base = autoscaling(cfg.autoscaling)
        base["policy"] = {
            "policy_function": "deployments.predictive_policy:PredictivePolicy",
            "policy_kwargs": {
                **scaler_settings(
                    spec,
                    cfg.autoscaling.target_ongoing_requests,
                    cfg.autoscaling.min_replicas,
                    cfg.autoscaling.max_replicas,
                ),
                "events_file": str(scratch / "events.json"),
                "profile_file": str(scratch / "profile.json"),
                "decisions_file": str(scratch / DECISIONS_FILE),
            },
        }
        overrides.setdefault(DEPLOYMENT_NAMES[stage], {})["autoscaling_config"] = base
    return overrides


def earlier_day(spec: ExperimentSpec, day_start_unix: float) -> DailyProfile | None:
    """Yesterday's ranker load for a periodic shape (diurnal), as a shop's metrics would hold
    it: the same daily shape drawn with another seed (other shoppers, the same habits),
    counted per ``PROFILE_STEP_S``, times the ranker's device time per request (ongoing
    requests = arrival rate x time in service). None for shapes without a day, or without a
    known device time."""
    period = getattr(spec.traffic.shape, "period_s", None)
    if period is None or spec.ranker_service_s is None:
        return None
    rng = np.random.default_rng(spec.traffic.seed + 1000)
    arrivals = arrival_times(spec.traffic.shape, period, rng)
    edges = np.arange(0.0, period + PROFILE_STEP_S / 2, PROFILE_STEP_S)
    counts, _ = np.histogram(arrivals, bins=edges)
    widths = np.diff(edges)
    return DailyProfile(
        day_start_unix=day_start_unix,
        period_s=period,
        step_s=PROFILE_STEP_S,
        load=tuple(float(x) for x in counts / widths * spec.ranker_service_s),
    )


def run_estimate_s(spec: ExperimentSpec) -> float:
    """Seconds from the deploy to the traffic's zero, roughly (made exact at the zero)."""
    return 20.0 + spec.warmup_s + 4.0


def write_day(scratch: Path, spec: ExperimentSpec, day_start_unix: float) -> DailyProfile | None:
    """The earlier day's profile for the day starting at ``day_start_unix`` (if the shape has
    days), where the predictive policy reads it."""
    profile = earlier_day(spec, day_start_unix)
    if profile is not None:
        write_profile(scratch / "profile.json", profile)
    return profile


def announced_events(spec: ExperimentSpec, traffic_start_unix: float) -> list[ScheduledEvent]:
    """The load's rise as an event announced ``spec.announce_s`` ahead (none unannounced)."""
    if spec.announce_s is None:
        return []
    t_up, t_down = load_change_times(spec.traffic.shape, spec.traffic.duration_s)
    start = getattr(spec.traffic.shape, "t_start", t_up)
    if start is None:
        return []
    end = t_down if isinstance(spec.traffic.shape, FlashSaleShape) else None
    return [
        ScheduledEvent(
            start_unix=traffic_start_unix + start,
            announced_unix=traffic_start_unix + start - spec.announce_s,
            end_unix=None if end is None else traffic_start_unix + end,
        )
    ]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    out: Path = args.out
    if (out / REQUESTS_FILE).exists() and not args.force:
        print(f"{out} already holds a run; --force to overwrite", file=sys.stderr)
        return 2
    if not (Path(args.artifacts) / "manifest.json").is_file():
        print(
            f"no artifact at {args.artifacts} (manifest.json missing); build one with "
            f"`recsys build --out {args.artifacts}`",
            file=sys.stderr,
        )
        return 2
    if not port_free(args.port, wait_s=30.0):
        print(f"port {args.port} is busy; choose another with --port", file=sys.stderr)
        return 2
    spec, app, _ = build_spec(args, out.name)
    if spec.dirty_files and not args.allow_dirty:
        print(
            f"tracked files differ from commit {spec.commit[:12]}: {spec.dirty_files[:10]}; "
            "commit them first (a report records the commit it ran) or pass --allow-dirty",
            file=sys.stderr,
        )
        return 2
    spec.write(out)
    (out / DECISIONS_FILE).unlink(missing_ok=True)  # a --force rerun keeps no old decisions
    scratch = Path(tempfile.mkdtemp(prefix="recsys-experiment-"))
    events_path = scratch / "events.json"
    write_events(events_path, [])
    traffic_json = scratch / "traffic.json"
    traffic_json.write_text(spec.traffic.model_dump_json(indent=2))
    cluster = LocalCluster(args.state_dir)
    run: dict[str, Any] = {"started_unix": time.time()}
    state: ClusterState | None = None
    try:
        t = time.time()
        state = cluster.up(spec.cluster, code_from=ROOT)
        run.update(
            cluster_up_s=round(time.time() - t, 1),
            cluster_pid=state.pid,
            cluster_session=state.session_id,
            cluster_address=state.address,
        )

        from deployments import cluster_probe

        cluster_probe.connect(state)
        t = time.time()
        # The shop has yesterday's load before the app starts: the policy gets it at once,
        # with the day's start estimated (deploy + warm-up), made exact when traffic starts.
        write_day(scratch, spec, t + run_estimate_s(spec))
        print(
            f"[experiment] deploying {spec.profile} profile, policy {spec.policy.name}", flush=True
        )
        cluster_probe.deploy(
            app, port=args.port, overrides=deployment_overrides(spec, app, scratch)
        )
        answer = wait_http_ready(args.port)
        run.update(
            deploy_s=round(time.time() - t, 1), first_answer_timings_ms=answer.get("timings_ms")
        )
        print(f"[experiment] app ready in {run['deploy_s']}s", flush=True)

        if spec.warmup_s > 0:
            warm = spec.traffic.model_copy(
                update={
                    "shape": shape_from_params("constant", spec.warmup_s, rate=args.rate),
                    "duration_s": spec.warmup_s,
                    "seed": spec.traffic.seed + 1,
                }
            )
            warm_json = scratch / "warmup.json"
            warm_json.write_text(warm.model_dump_json(indent=2))
            print(f"[experiment] warm-up {spec.warmup_s:g}s at {args.rate:g} req/s", flush=True)
            run_traffic(
                traffic_command(
                    warm_json, args.artifacts, scratch / "warmup.parquet", args.client_nice
                )
            )

        sampler = Sampler(
            cluster_probe.snapshot,
            spec.sample_interval_s,
            node_types=[t.name for t in spec.cluster.worker_types],
        )
        sampler.start()
        time.sleep(3.0)  # a few samples before the traffic's zero
        traffic_started = time.time() + 1.0  # the generator's start-up
        events = announced_events(spec, traffic_started)
        write_events(events_path, events)
        profile = write_day(scratch, spec, traffic_started)
        spec = spec.model_copy(
            update={
                "events": [e.__dict__ for e in events],
                "daily_profile": None if profile is None else list(profile.load),
            }
        )
        spec.write(out)
        try:
            run_traffic(
                traffic_command(traffic_json, args.artifacts, out / REQUESTS_FILE, args.client_nice)
            )
            observe_tail(sampler, app, spec, traffic_started)
        finally:
            sampler.stop()
            sampler.write(out / SAMPLES_FILE)
        run["traffic_and_tail_s"] = round(time.time() - traffic_started, 1)
        others = other_ray_instances(exclude_session=state.session_id)
        run["other_ray_instances_at_end"] = [pid for pid, _ in others]
        if others:
            print(
                f"[experiment] WARNING: another Ray instance started during the run "
                f"(pids {run['other_ray_instances_at_end']}): it shared the cores",
                file=sys.stderr,
            )
    finally:
        try:
            from deployments import cluster_probe

            cluster_probe.disconnect()
        except Exception as exc:  # teardown goes on
            print(f"[experiment] disconnect: {exc}", file=sys.stderr)
        report = cluster.down()
        run.update(
            cluster_down_s=round(report.seconds, 1), stragglers_killed=len(report.stragglers_killed)
        )
        run["finished_unix"] = time.time()
        if (scratch / DECISIONS_FILE).is_file():
            shutil.copyfile(scratch / DECISIONS_FILE, out / DECISIONS_FILE)
        shutil.rmtree(scratch, ignore_errors=True)
        (out / "run.json").write_text(json.dumps(run, indent=2) + "\n")
    if not args.no_report:
        from recsys.experiments.report import write_report

        summary = write_report(out)
        print(
            f"[experiment] sent {summary.requests_sent}, "
            f"with outcome {summary.requests_with_outcome}; "
            f"SLO attainment {summary.slo_attainment}; p99 {summary.p99_ms} ms; "
            f"scale up {summary.time_to_scale_up_s}s, down {summary.time_to_scale_down_s}s; "
            f"max nodes {summary.max_worker_nodes}; report: {out / 'report.md'}",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
