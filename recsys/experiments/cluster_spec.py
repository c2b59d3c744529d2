"""The simulated GPU cluster: a typed spec, its Ray autoscaler config, and status parsers.

Locally, Ray's own autoscaler (v1, the ``StandardAutoscaler``) runs over its *fake multi-node*
provider: a worker "node" is one more raylet on this machine, started and stopped by the
autoscaler, advertising *logical* resources (``{"CPU": 6, "GPU": 1}``). The node types mirror
the production worker groups of ``k8s/cluster.yaml`` (``gpu-small``: one GPU for encoder,
retriever and ingress replicas; ``gpu-multi``: two GPUs for ranker gangs), so the very serve
config that goes to Kubernetes (``deployments/configs/gpu.yaml``) schedules here the same way.
Logical CPU and GPU counts are labels for the scheduler; all compute shares the real cores.

Everything here is pure: build the spec, render the autoscaler YAML, check that every replica
fits a node type, and parse what ``ray status`` and the autoscaler report.

Node arrival: a real GPU node takes minutes to join (provisioning, image pull, driver). Each
node type has an ``arrival_s``; when any is above zero the cluster runs the fake provider
through ``deployments.cluster_provider.DelayedFakeMultiNodeProvider`` (an *external* provider
to the autoscaler), which keeps a requested node pending for that long before its raylet
starts.

Why autoscaler v1 (tried with Ray 2.60.0, ``RAY_enable_autoscaler_v2=1``): over the stock
fake provider v2's monitor exits at start, reading the provider's defaults file
``ray/autoscaler/_private/fake_multi_node/example.yaml``, which the pip wheel does not ship
(``FileNotFoundError``). Over the delayed provider as an external provider (5 s arrival), v2
starts, and its scheduler logs "Adding 1 node(s) of type gpu-small/gpu-multi" for the
minimum workers every second, but its instance manager records no instance besides the head,
the provider logs no node request, and no worker arrived in 150 s (v1 brings both within the
arrival time). v1 has one cluster-wide idle
timeout (``idle_timeout_minutes``), no per-type timeouts: the simulation uses the cluster-wide
one of ``k8s/cluster.yaml`` (``autoscaler.idle_timeout_seconds``), not a group's own.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Self

from pydantic import Field, model_validator

from recsys.config import StrictModel
from recsys.k8s.render import replica_demands
from recsys.k8s.spec import ClusterSpec, parse_quantity

HEAD_NODE_TYPE = "ray.head.default"
"""The name the fake provider gives the head node's type (it cannot be changed)."""
DEFAULT_GCS_PORT = 6390
"""GCS port of the local cluster (not Ray's default 6379, to stay clear of other Rays)."""
NODE_TYPE_LABEL = "recsys/node-type"
"""Node label carrying the worker node type (the autoscaler also reports it by node id)."""

_DNS_1123 = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"


class NodeTypeSpec(StrictModel):
    """One worker node type: a shape the autoscaler adds and removes as a whole."""

    name: str = Field(pattern=_DNS_1123, max_length=63)
    """Node type name (the KubeRay worker group it mirrors, e.g. ``gpu-small``)."""
    cpus: int = Field(ge=0)
    """Logical CPUs the node advertises (a scheduling label; compute shares the real cores)."""
    gpus: int = Field(ge=0)
    """Logical GPUs the node advertises (no device behind them)."""
    resources: dict[str, float] = Field(default_factory=dict)
    """Custom resources the node advertises (the pool's tag, as its KubeRay group's)."""
    min_workers: int = Field(0, ge=0)
    """Nodes of this type the autoscaler keeps at all times."""
    max_workers: int = Field(ge=1)
    """Nodes of this type the autoscaler never goes above."""
    arrival_s: float = Field(0.0, ge=0)
    """Seconds from the autoscaler's request until the node joins (0: at once, as the stock
    fake provider does)."""
    object_store_mb: int = Field(256, ge=64)
    """Object store of each node in MiB (small: the app passes compact arrays, and every fake
    node maps its store in the same ``/dev/shm``)."""

    @model_validator(mode="after")
    def _check_bounds(self) -> Self:
        if self.min_workers > self.max_workers:
            raise ValueError(
                f"node type {self.name!r}: min_workers ({self.min_workers}) > "
                f"max_workers ({self.max_workers})"
            )
        return self


class FakeClusterSpec(StrictModel):
    """A local Ray cluster driven by Ray's autoscaler over the fake multi-node provider."""

    name: str = Field("recsys-local", pattern=_DNS_1123)
    """Cluster name (autoscaler ``cluster_name``)."""
    gcs_port: int = Field(DEFAULT_GCS_PORT, ge=1024, le=65535)
    """Port of the head's GCS; drivers connect to ``<node ip>:<gcs_port>``."""
    head_cpus: int = Field(0, ge=0)
    """Logical CPUs of the head. 0 as on Kubernetes: the head runs no replicas, only Serve's
    controller and HTTP proxy (both need 0 CPUs)."""
    worker_types: list[NodeTypeSpec] = Field(min_length=1)
    """Worker node types."""
    idle_timeout_s: float = Field(20.0, ge=0)
    """Seconds a worker node must be idle (no actors, no tasks) before it is removed. Keep it
    longer than Serve's ``downscale_delay_s`` so replicas go first and nodes after."""
    upscaling_speed: float = Field(1.0, gt=0)
    """How many nodes may be pending at once, as a multiple of the running ones (autoscaler
    ``upscaling_speed``)."""
    update_interval_s: float = Field(1.0, gt=0)
    """Autoscaler loop period (``AUTOSCALER_UPDATE_INTERVAL_S``)."""

    @model_validator(mode="after")
    def _check_types(self) -> Self:
        names = [t.name for t in self.worker_types]
        if len(set(names)) != len(names):
            raise ValueError(f"worker node type names must be unique: {names}")
        if HEAD_NODE_TYPE in names:
            raise ValueError(f"{HEAD_NODE_TYPE!r} is the head's type, not a worker type")
        return self

    @property
    def max_workers(self) -> int:
        """Upper bound on worker nodes of all types together."""
        return sum(t.max_workers for t in self.worker_types)

    def worker_type(self, name: str) -> NodeTypeSpec:
        for node_type in self.worker_types:
            if node_type.name == name:
                return node_type
        raise KeyError(f"no worker node type {name!r}; have {[t.name for t in self.worker_types]}")

    def min_nodes(self) -> dict[str, int]:
        """``min_workers`` by node type (what the cluster scales back down to)."""
        return {t.name: t.min_workers for t in self.worker_types}


def spec_from_k8s(
    cluster: ClusterSpec,
    *,
    max_workers: Mapping[str, int] | None = None,
    idle_timeout_s: float | None = None,
    arrival_s: Mapping[str, float] | None = None,
    gcs_port: int = DEFAULT_GCS_PORT,
) -> FakeClusterSpec:
    """Mirror the production worker groups (same names, logical CPUs and GPUs, minimums).

    ``max_workers`` caps the node count per group (a laptop cannot run eight raylets per
    group); groups not named keep their production maximum. Fractional CPU quantities round
    down (Ray advertises whole CPUs for a pod's CPU limit).
    """
    caps = dict(max_workers or {})
    unknown = set(caps) - {g.name for g in cluster.worker_groups}
    if unknown:
        raise ValueError(f"max_workers names unknown worker groups: {sorted(unknown)}")
    types = []
    for group in cluster.worker_groups:
        cap = caps.get(group.name, group.max_replicas)
        types.append(
            NodeTypeSpec(
                name=group.name,
                cpus=math.floor(parse_quantity(group.cpu)),
                gpus=group.gpus,
                resources=dict(group.resources),
                min_workers=min(group.min_replicas, cap),
                max_workers=cap,
                arrival_s=(arrival_s or {}).get(group.name, 0.0),
            )
        )
    if idle_timeout_s is None:
        idle_timeout_s = float(cluster.autoscaler.idle_timeout_seconds)
    return FakeClusterSpec(
        name=cluster.name, worker_types=types, idle_timeout_s=idle_timeout_s, gcs_port=gcs_port
    )


def render_autoscaler_config(spec: FakeClusterSpec, gcs_address: str) -> dict[str, Any]:
    """The autoscaler cluster config (``ray start --autoscaling-config``) for ``spec``.

    ``gcs_address`` (``ip:port``) is where the provider's fake nodes join; without it they would
    look for a GCS on Ray's default port 6379.
    """
    node_types: dict[str, Any] = {
        HEAD_NODE_TYPE: {
            "resources": {"CPU": spec.head_cpus},
            "node_config": {},
            "max_workers": 0,
        }
    }
    for t in spec.worker_types:
        node_types[t.name] = {
            "resources": {
                "CPU": t.cpus,
                "GPU": t.gpus,
                **t.resources,
                "object_store_memory": t.object_store_mb * 1024 * 1024,
            },
            "labels": {NODE_TYPE_LABEL: t.name},
            "node_config": {},
            "min_workers": t.min_workers,
            "max_workers": t.max_workers,
        }
    return {
        "cluster_name": spec.name,
        "max_workers": spec.max_workers,
        "upscaling_speed": spec.upscaling_speed,
        "idle_timeout_minutes": spec.idle_timeout_s / 60.0,
        "docker": {},
        "provider": _provider(spec, gcs_address),
        "auth": {"ssh_user": "ray"},
        "available_node_types": node_types,
        "head_node_type": HEAD_NODE_TYPE,
        "file_mounts": {},
        "cluster_synced_files": [],
        "file_mounts_sync_continuously": False,
        "rsync_exclude": [],
        "rsync_filter": [],
        "initialization_commands": [],
        "setup_commands": [],
        "head_setup_commands": [],
        "worker_setup_commands": [],
        "head_start_ray_commands": [],
        "worker_start_ray_commands": [],
    }


DELAYED_PROVIDER = "deployments.cluster_provider.DelayedFakeMultiNodeProvider"


def _provider(spec: FakeClusterSpec, gcs_address: str) -> dict[str, Any]:
    provider: dict[str, Any] = {
        "type": "fake_multinode",
        "use_node_id_as_ip": True,
        "disable_node_updaters": True,
        "disable_launch_config_check": True,
        "gcs_address": gcs_address,
    }
    delays = {t.name: t.arrival_s for t in spec.worker_types if t.arrival_s > 0}
    if delays:
        provider.update(type="external", module=DELAYED_PROVIDER, arrival_delay_s=delays)
    return provider


def check_fits(serve_config: Mapping[str, Any], spec: FakeClusterSpec) -> list[str]:
    """Deployments whose replica (or ``STRICT_PACK`` gang) fits no worker node type. Empty when
    every deployment can be placed (the head runs no replicas)."""
    problems = []
    for app in serve_config.get("applications") or []:
        for deployment in app.get("deployments") or []:
            for demand in replica_demands(deployment):
                if not any(_fits(demand, t) for t in spec.worker_types):
                    offered = ", ".join(
                        f"{t.name} {_describe(_offer(t))}" for t in spec.worker_types
                    )
                    problems.append(
                        f"{app.get('name')}/{deployment.get('name')} needs "
                        f"{_describe(demand)} on one node; node types offer {offered}"
                    )
    return problems


def node_types_for(deployment: Mapping[str, Any], spec: FakeClusterSpec) -> list[str]:
    """The worker node types one replica (or gang) of ``deployment`` can land on."""
    demands = replica_demands(deployment)
    return [t.name for t in spec.worker_types if all(_fits(d, t) for d in demands)]


def _offer(t: NodeTypeSpec) -> dict[str, float]:
    return {"CPU": t.cpus, "GPU": t.gpus, **t.resources}


def _fits(demand: Mapping[str, float], t: NodeTypeSpec) -> bool:
    offer = _offer(t)
    return all(value <= offer.get(key, 0.0) for key, value in demand.items())


def _describe(resources: Mapping[str, float]) -> str:
    return " ".join(f"{k} {v:g}" for k, v in resources.items())


# --------------------------------------------------------------------------------------------
# Status parsing
# --------------------------------------------------------------------------------------------


@dataclass
class NodeStatus:
    """Nodes of a cluster by type, as the autoscaler sees them."""

    active: dict[str, int] = field(default_factory=dict)
    """Running nodes by type (the head included, under :data:`HEAD_NODE_TYPE`)."""
    pending: dict[str, int] = field(default_factory=dict)
    """Nodes being launched by type."""
    failures: list[str] = field(default_factory=list)
    """Recent launch failures, one line each."""

    def workers(self) -> dict[str, int]:
        """Active worker nodes by type (the head left out)."""
        return {k: v for k, v in self.active.items() if k != HEAD_NODE_TYPE}

    @property
    def worker_count(self) -> int:
        return sum(self.workers().values())


_STATUS_LINE = re.compile(r"^\s*(\d+)\s+(\S+)")


def parse_ray_status(text: str) -> NodeStatus:
    """Parse the *Node status* block of ``ray status`` (autoscaler v1 output).

    ::

        Active:
         1 ray.head.default
         2 gpu-small
        Pending:
         gpu-multi, 1 launching
        Recent failures:
         (no failures)
    """
    status = NodeStatus()
    section = None
    for line in text.splitlines():
        stripped = line.strip()
        if stripped in ("Active:", "Idle:", "Pending:", "Recent failures:"):
            section = stripped[:-1]
            continue
        if not stripped or stripped.startswith(("---", "===", "Resources", "Usage", "Total")):
            if stripped.startswith(("Resources", "Usage", "Total")):
                section = None
            continue
        if section is None or stripped.startswith("("):
            continue
        if section in ("Active", "Idle"):
            match = _STATUS_LINE.match(stripped)
            if match:
                name = match.group(2)
                status.active[name] = status.active.get(name, 0) + int(match.group(1))
        elif section == "Pending":
            # "<ip or type>: <type>, 1 launching" or "<type>, 2 launching"
            match = re.search(r"([A-Za-z0-9._-]+),\s*(\d+)\s+(launching|pending)", stripped)
            if match:
                name = match.group(1)
                status.pending[name] = status.pending.get(name, 0) + int(match.group(2))
        elif section == "Recent failures":
            status.failures.append(stripped)
    return status


def node_status_from_report(report: Mapping[str, Any]) -> NodeStatus:
    """Nodes by type from the autoscaler's own report (the ``autoscaler_report`` entry of the
    JSON the monitor publishes in the GCS, key ``__autoscaling_status``)."""
    status = NodeStatus(
        active={str(k): int(v) for k, v in (report.get("active_nodes") or {}).items()}
    )
    for name, count in (report.get("pending_launches") or {}).items():
        status.pending[str(name)] = status.pending.get(str(name), 0) + int(count)
    for entry in report.get("pending_nodes") or []:
        # (ip, node_type, status) triples
        if isinstance(entry, list | tuple) and len(entry) >= 2:
            name = str(entry[1])
            status.pending[name] = status.pending.get(name, 0) + 1
    for entry in report.get("failed_nodes") or []:
        status.failures.append(
            " ".join(str(x) for x in entry) if isinstance(entry, list | tuple) else str(entry)
        )
    return status


@dataclass(frozen=True)
class ReplicaCounts:
    """Replicas of one Serve deployment at one moment."""

    running: int
    """Replicas in state RUNNING (serving)."""
    target: int
    """What Serve's autoscaler currently wants (``target_num_replicas``)."""
    starting: int = 0
    """Replicas scheduled or starting (waiting for a node, loading, health-checking)."""
    stopping: int = 0
    """Replicas draining or stopping."""


_STARTING_STATES = {"STARTING", "PENDING_MIGRATION", "RECOVERING", "UPDATING"}


def _name(value: object) -> str:
    """An enum's value (``ReplicaState.RUNNING`` -> ``RUNNING``), else the string itself."""
    return str(getattr(value, "value", value))


def replicas_from_serve_details(details: Mapping[str, Any], app: str) -> dict[str, ReplicaCounts]:
    """Replica counts per deployment of application ``app`` from Serve's instance details
    (``ServeInstanceDetails`` as a dict: what the Serve REST API and the controller return)."""
    application = (details.get("applications") or {}).get(app)
    if not application:
        return {}
    counts = {}
    for name, deployment in (application.get("deployments") or {}).items():
        states = [_name(r.get("state", "")) for r in deployment.get("replicas") or []]
        counts[name] = ReplicaCounts(
            running=sum(s == "RUNNING" for s in states),
            target=int(deployment.get("target_num_replicas") or 0),
            starting=sum(s in _STARTING_STATES for s in states),
            stopping=sum(s == "STOPPING" for s in states),
        )
    return counts


def format_status(
    nodes: NodeStatus, replicas: Mapping[str, ReplicaCounts], app_status: str | None = None
) -> str:
    """Human-readable status: nodes by type, then deployments with replica counts."""
    lines = ["nodes (active / pending):"]
    names = sorted(set(nodes.active) | set(nodes.pending), key=lambda n: (n != HEAD_NODE_TYPE, n))
    for name in names:
        lines.append(f"  {name:<20} {nodes.active.get(name, 0):>3} / {nodes.pending.get(name, 0)}")
    if nodes.failures:
        lines.append("recent launch failures:")
        lines.extend(f"  {f}" for f in nodes.failures)
    if app_status is None and not replicas:
        lines.append("serve: no application")
        return "\n".join(lines)
    lines.append(f"serve application: {app_status or '?'}")
    lines.append(
        f"  {'deployment':<20} {'running':>7} {'target':>6} {'starting':>8} {'stopping':>8}"
    )
    for name, c in sorted(replicas.items()):
        lines.append(f"  {name:<20} {c.running:>7} {c.target:>6} {c.starting:>8} {c.stopping:>8}")
    return "\n".join(lines)
