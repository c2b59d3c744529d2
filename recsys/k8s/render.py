"""Render a KubeRay ``RayService`` from the committed serve config and a ``ClusterSpec``.

One source of truth: the serve config that ``serve deploy`` / ``serve run`` use locally
(``deployments/configs/*.yaml``) becomes ``spec.serveConfigV2`` unchanged except for what
only Kubernetes decides (HTTP bind address and port, proxy placement, the artifact URI).
Pure functions over plain data; nothing here talks to a cluster or imports Ray.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import yaml

from recsys.artifacts import KEY_ENV as ARTIFACT_KEY_ENV
from recsys.k8s.spec import (
    DASHBOARD_PORT,
    METRICS_PORT,
    RAY_VERSION,
    SERVE_PORT,
    ClusterSpec,
    HeadSpec,
    SecretKeyRef,
    Toleration,
    WorkerGroup,
    parse_quantity,
)

API_VERSION = "ray.io/v1"
KIND = "RayService"
APP_IMPORT_PATH = "deployments.app:build_app"
"""Applications built by this project's app builder take ``args.artifacts``."""
PART_OF_LABEL = ("app.kubernetes.io/part-of", "recsys-serve")
"""Label on every Ray pod; ``k8s/monitoring/podmonitor.yaml`` selects on it."""
INITIALIZING_TIMEOUT_ANNOTATION = "ray.io/initializing-timeout"

AUTOSCALER_METRICS_PORT = 44217
"""The autoscaler's Prometheus port (autoscaler sidecar, in the head pod's network)."""
DASHBOARD_METRICS_PORT = 44227
"""The dashboard's own Prometheus port on the head."""
GCS_PORT = 6379
API_KEYS_ENV = "RECSYS_API_KEYS"
"""The ingress reads API keys from here (``IngressConfig.api_keys_env``'s default)."""
PROXY_CALLBACK_ENV = "RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH"
PROXY_CALLBACK = "recsys.admission:proxy_middlewares"
"""Middlewares around Serve's HTTP servers on every node, as locally
(``deployments.serve_main.LOCAL_SERVE_ENV``): one valid request id per request, the arrival
stamp, Serve's own errors as JSON."""

Manifest = dict[str, Any]


class RenderError(ValueError):
    """The serve config and the cluster spec cannot make a working RayService."""


# --------------------------------------------------------------------------------------------
# serveConfigV2
# --------------------------------------------------------------------------------------------


def prepare_serve_config(serve_config: Mapping[str, Any], spec: ClusterSpec) -> dict[str, Any]:
    """The serve config as the cluster runs it.

    Binds HTTP on ``0.0.0.0:8000`` (KubeRay's Serve Service and readiness probe target that
    port), places proxies per ``spec.proxy_location`` and, when ``spec.artifacts_uri`` is set,
    points every application built by ``deployments.app:build_app`` at it.
    """
    config = copy.deepcopy(dict(serve_config))
    config["proxy_location"] = spec.proxy_location
    config["http_options"] = {
        **(config.get("http_options") or {}),
        "host": "0.0.0.0",
        "port": SERVE_PORT,
    }
    if spec.artifacts_uri is not None:
        _set_artifacts(config, spec.artifacts_uri)
    return config


def _set_artifacts(config: dict[str, Any], uri: str) -> None:
    apps = [a for a in config.get("applications") or [] if a.get("import_path") == APP_IMPORT_PATH]
    if not apps:
        raise RenderError(
            f"artifacts_uri is set but no application has import_path {APP_IMPORT_PATH!r}"
        )
    for app in apps:
        app["args"] = {**(app.get("args") or {}), "artifacts": uri}


# --------------------------------------------------------------------------------------------
# Capacity: every replica (or gang) must fit on some worker group's pod
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class NodeShape:
    """Ray resources one worker pod of a group advertises."""

    group: str
    cpu: float
    gpu: float
    custom: Mapping[str, float] = field(default_factory=dict)
    """Custom resources (a pool's tag, ``pool_gpu_small``)."""

    def fits(self, demand: Mapping[str, float]) -> bool:
        """Whether ``demand`` (``{"CPU": .., "GPU": .., custom...}``) fits on one such node."""
        return all(
            value <= {"CPU": self.cpu, "GPU": self.gpu}.get(key, self.custom.get(key, 0.0))
            for key, value in demand.items()
        )


def node_shapes(spec: ClusterSpec) -> list[NodeShape]:
    """The node shapes the autoscaler can add (the head runs nothing: ``num-cpus: 0``)."""
    return [
        NodeShape(g.name, parse_quantity(g.cpu), float(g.gpus), dict(g.resources))
        for g in spec.worker_groups
    ]


def replica_demands(deployment: Mapping[str, Any]) -> list[dict[str, float]]:
    """Resource sets that must each land on one node for one replica of ``deployment``.

    A plain replica is one set (Serve's default is one CPU). A gang with
    ``placement_group_bundles`` is one set per bundle, or the sum of all bundles when the
    strategy is ``STRICT_PACK`` (every bundle on the same node).
    """
    bundles = deployment.get("placement_group_bundles")
    if bundles:
        demands = [{k: float(v) for k, v in b.items() if k != "memory"} for b in bundles]
        if deployment.get("placement_group_strategy", "PACK") == "STRICT_PACK":
            return [_sum_demands(demands)]
        return demands
    options = deployment.get("ray_actor_options") or {}
    cpu = options.get("num_cpus")
    custom = {k: float(v) for k, v in (options.get("resources") or {}).items()}
    return [
        {
            "CPU": 1.0 if cpu is None else float(cpu),
            "GPU": float(options.get("num_gpus") or 0),
            **custom,
        }
    ]


def _describe(resources: Mapping[str, float]) -> str:
    return " ".join(f"{k} {v:g}" for k, v in resources.items())


def _sum_demands(demands: Iterable[Mapping[str, float]]) -> dict[str, float]:
    total: dict[str, float] = {}
    for demand in demands:
        for key, value in demand.items():
            total[key] = total.get(key, 0.0) + value
    return total


def check_capacity(serve_config: Mapping[str, Any], spec: ClusterSpec) -> list[str]:
    """Deployments whose replica (or gang) fits no worker group: the autoscaler could never
    place them and the rollout would hang in ``pending``. Empty when everything fits."""
    shapes = node_shapes(spec)
    problems = []
    for app in serve_config.get("applications") or []:
        for deployment in app.get("deployments") or []:
            for demand in replica_demands(deployment):
                if not any(shape.fits(demand) for shape in shapes):
                    offered = ", ".join(
                        f"{s.group}: {_describe({'CPU': s.cpu, 'GPU': s.gpu, **s.custom})}"
                        for s in shapes
                    )
                    problems.append(
                        f"{app.get('name')}/{deployment.get('name')} needs "
                        f"{_describe(demand)} on one node; worker groups offer {offered}"
                    )
    return problems


# --------------------------------------------------------------------------------------------
# The RayService
# --------------------------------------------------------------------------------------------


def render_rayservice(serve_config: Mapping[str, Any], spec: ClusterSpec) -> Manifest:
    """The ``ray.io/v1`` RayService that serves ``serve_config`` on the cluster ``spec``.

    Raises ``RenderError`` when a deployment cannot fit any worker group or the artifact URI
    has nowhere to go.
    """
    problems = check_capacity(serve_config, spec)
    if problems:
        raise RenderError("; ".join(problems))
    serve = prepare_serve_config(serve_config, spec)
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": _metadata(spec),
        "spec": {
            # Blue/green by default; see UpgradeSpec for why not the incremental strategy.
            "upgradeStrategy": _upgrade_strategy(spec),
            "rayClusterDeletionDelaySeconds": spec.upgrade.cluster_deletion_delay_seconds,
            # With a proxy on every worker the head (no replicas) stays off the data path.
            "excludeHeadPodFromServeSvc": spec.proxy_location == "EveryNode",
            "serveConfigV2": dump_yaml(serve),
            "rayClusterConfig": _ray_cluster_config(spec),
        },
    }


def _metadata(spec: ClusterSpec) -> dict[str, Any]:
    metadata: dict[str, Any] = {
        "name": spec.name,
        "namespace": spec.namespace,
        "labels": _labels(spec, component="rayservice"),
    }
    if spec.initializing_timeout is not None:
        metadata["annotations"] = {INITIALIZING_TIMEOUT_ANNOTATION: spec.initializing_timeout}
    return metadata


def _labels(spec: ClusterSpec, *, component: str) -> dict[str, str]:
    return {
        PART_OF_LABEL[0]: PART_OF_LABEL[1],
        "app.kubernetes.io/instance": spec.name,
        "app.kubernetes.io/component": component,
    }


def _upgrade_strategy(spec: ClusterSpec) -> dict[str, Any]:
    strategy: dict[str, Any] = {"type": spec.upgrade.strategy}
    options = spec.upgrade.incremental
    if options is not None:
        strategy["clusterUpgradeOptions"] = {
            "gatewayClassName": options.gateway_class_name,
            "stepSizePercent": options.step_size_percent,
            "intervalSeconds": options.interval_seconds,
            "maxSurgePercent": options.max_surge_percent,
        }
    return strategy


def _ray_cluster_config(spec: ClusterSpec) -> dict[str, Any]:
    config: dict[str, Any] = {
        "rayVersion": RAY_VERSION,
        "enableInTreeAutoscaling": True,
        "authOptions": {"mode": "token" if spec.ray_token_auth else "disabled"},
        "autoscalerOptions": {
            "version": spec.autoscaler.version,
            "idleTimeoutSeconds": spec.autoscaler.idle_timeout_seconds,
            "upscalingMode": spec.autoscaler.upscaling_mode,
            "imagePullPolicy": spec.image.pull_policy,
            "resources": _resources(spec.autoscaler.cpu, spec.autoscaler.memory),
        },
    }
    if spec.gcs_fault_tolerance is not None:
        ft = spec.gcs_fault_tolerance
        # `backend` is left to its default (redis) so older KubeRay CRDs accept the manifest.
        config["gcsFaultToleranceOptions"] = {
            "redisAddress": ft.redis_address,
            "redisPassword": {
                "valueFrom": {
                    "secretKeyRef": {"name": ft.password_secret.name, "key": ft.password_secret.key}
                }
            },
        }
    config["headGroupSpec"] = _head_group(spec)
    config["workerGroupSpecs"] = [_worker_group(spec, group) for group in spec.worker_groups]
    return config


def _head_group(spec: ClusterSpec) -> dict[str, Any]:
    head: HeadSpec = spec.head
    # The Ray client port (10001) is not declared, so the head Service does not publish it;
    # the NetworkPolicy keeps it (and every Ray port) to the cluster's own pods.
    ports = [
        ("gcs-server", GCS_PORT),
        ("dashboard", DASHBOARD_PORT),
        ("serve", SERVE_PORT),
        ("metrics", METRICS_PORT),
        ("as-metrics", AUTOSCALER_METRICS_PORT),
        ("dash-metrics", DASHBOARD_METRICS_PORT),
    ]
    container = _container(spec, "ray-head", head.cpu, head.memory, gpus=0, ports=ports)
    return {
        "serviceType": "ClusterIP",
        "rayStartParams": {
            "num-cpus": "0",  # the head runs GCS, Serve controller and autoscaler, no replicas
            "dashboard-host": "0.0.0.0",
            "metrics-export-port": str(METRICS_PORT),
        },
        "template": _pod_template(
            spec, "ray-head", container, head.node_selector, head.tolerations
        ),
    }


def _worker_group(spec: ClusterSpec, group: WorkerGroup) -> dict[str, Any]:
    ports = [("serve", SERVE_PORT), ("metrics", METRICS_PORT)]
    container = _container(spec, "ray-worker", group.cpu, group.memory, group.gpus, ports)
    rendered: dict[str, Any] = {
        "groupName": group.name,
        "replicas": group.replicas,
        "minReplicas": group.min_replicas,
        "maxReplicas": group.max_replicas,
    }
    if group.idle_timeout_seconds is not None:
        rendered["idleTimeoutSeconds"] = group.idle_timeout_seconds
    if group.resources:  # Ray custom resources the pods advertise (KubeRay passes them on)
        rendered["resources"] = {k: f"{v:g}" for k, v in group.resources.items()}
    rendered["rayStartParams"] = {"metrics-export-port": str(METRICS_PORT)}
    # No readinessProbe here on purpose: KubeRay injects one into RayService workers that
    # checks the raylet *and* Serve's proxy health (/-/healthz on the `serve` port), and a
    # worker's proxy reports healthy only once an ingress replica is RUNNING. Every replica
    # warms up in its constructor and the ingress's constructor waits for a warm request
    # through every stage (recsys.warmup), so RUNNING means ready: a pod joins the Serve
    # Service, and the operator's `Ready` (the blue/green switch) turns True, only when the
    # app is warm. A probe on the app's own /readyz would be wrong here: it answers for the
    # whole app, so one cold stage would take every pod out of the Service at once.
    rendered["template"] = _pod_template(
        spec, "ray-worker", container, group.node_selector, group.effective_tolerations
    )
    return rendered


def _container(
    spec: ClusterSpec,
    name: str,
    cpu: str,
    memory: str,
    gpus: int,
    ports: Sequence[tuple[str, int]],
) -> dict[str, Any]:
    return {
        "name": name,
        "image": spec.image.ref,
        "imagePullPolicy": spec.image.pull_policy,
        "resources": _resources(cpu, memory, gpus),
        "ports": [{"name": port_name, "containerPort": port} for port_name, port in ports],
        "env": _env(spec),
    }


def _env(spec: ClusterSpec) -> list[dict[str, Any]]:
    """Every Ray container's environment: the middlewares around Serve's HTTP servers (proxies
    run on every node), and the secrets the replicas read, by reference only."""
    env: list[dict[str, Any]] = [{"name": PROXY_CALLBACK_ENV, "value": PROXY_CALLBACK}]
    secrets = ((API_KEYS_ENV, spec.api_keys_secret), (ARTIFACT_KEY_ENV, spec.artifact_key_secret))
    for name, ref in secrets:
        if ref is not None:
            env.append({"name": name, "valueFrom": {"secretKeyRef": _secret_ref(ref)}})
    return env


def _secret_ref(ref: SecretKeyRef) -> dict[str, Any]:
    # optional: false -- a missing Secret keeps the pod from starting instead of serving open
    return {"name": ref.name, "key": ref.key, "optional": False}


def _resources(cpu: str, memory: str, gpus: int = 0) -> dict[str, Any]:
    amounts: dict[str, Any] = {"cpu": cpu, "memory": memory}
    if gpus:
        amounts["nvidia.com/gpu"] = str(gpus)
    # requests == limits: Guaranteed QoS, and Ray's view of the node matches the scheduler's.
    return {"requests": dict(amounts), "limits": dict(amounts)}


def _pod_template(
    spec: ClusterSpec,
    component: str,
    container: dict[str, Any],
    node_selector: Mapping[str, str],
    tolerations: Sequence[Toleration],
) -> dict[str, Any]:
    pod: dict[str, Any] = {}
    if spec.service_account is not None:
        pod["serviceAccountName"] = spec.service_account
    if spec.image.pull_secrets:
        pod["imagePullSecrets"] = [{"name": secret} for secret in spec.image.pull_secrets]
    if node_selector:
        pod["nodeSelector"] = dict(node_selector)
    if tolerations:
        pod["tolerations"] = [t.model_dump(exclude_none=True) for t in tolerations]
    pod["containers"] = [container]
    return {"metadata": {"labels": _labels(spec, component=component)}, "spec": pod}


# --------------------------------------------------------------------------------------------
# NetworkPolicy
# --------------------------------------------------------------------------------------------


def render_network_policy(spec: ClusterSpec) -> Manifest:
    """The NetworkPolicy around every Ray pod of the RayService (both clusters of a blue/green
    upgrade): the Serve port from the allowed namespaces, Ray's own ports from the cluster's
    pods (and the dashboard from the KubeRay operator), metrics from monitoring only."""
    own_pods = {
        "matchLabels": {
            PART_OF_LABEL[0]: PART_OF_LABEL[1],
            "app.kubernetes.io/instance": spec.name,
        }
    }
    network = spec.network
    callers: dict[str, Any] = {"namespaceSelector": {}}  # every namespace of the cluster
    if network.serve_from_namespaces is not None:
        callers = {"namespaceSelector": {"matchLabels": dict(network.serve_from_namespaces)}}

    def namespace(name: str) -> dict[str, Any]:
        return {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": name}}}

    def tcp(*ports: int) -> list[dict[str, Any]]:
        return [{"protocol": "TCP", "port": port} for port in ports]

    metrics = (METRICS_PORT, AUTOSCALER_METRICS_PORT, DASHBOARD_METRICS_PORT)
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {
            "name": f"{spec.name}-ray",
            "namespace": spec.namespace,
            "labels": _labels(spec, component="network-policy"),
        },
        "spec": {
            "podSelector": copy.deepcopy(own_pods),
            "policyTypes": ["Ingress"],
            "ingress": [
                # Ray between its own nodes: GCS, raylets, object transfer, workers (dynamic
                # ports), dashboard and client; nothing outside the cluster reaches these.
                {"from": [{"podSelector": copy.deepcopy(own_pods)}]},
                {"from": [callers], "ports": tcp(SERVE_PORT)},
                {"from": [namespace(network.operator_namespace)], "ports": tcp(DASHBOARD_PORT)},
                {"from": [namespace(network.monitoring_namespace)], "ports": tcp(*metrics)},
            ],
        },
    }


# --------------------------------------------------------------------------------------------
# Text
# --------------------------------------------------------------------------------------------


class _BlockStyleDumper(yaml.SafeDumper):
    """Multi-line strings (``serveConfigV2``) as readable ``|`` blocks."""


def _represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_BlockStyleDumper.add_representer(str, _represent_str)


def dump_yaml(data: Any) -> str:
    """Deterministic YAML: keys in insertion order, multi-line strings as blocks."""
    return yaml.dump(
        data, Dumper=_BlockStyleDumper, sort_keys=False, default_flow_style=False, width=100
    )


def manifest_text(manifest: Mapping[str, Any], *, command: str, sources: Sequence[str]) -> str:
    """The manifest file: a header naming the generator and its sources, then the YAML."""
    header = [
        f"# GENERATED by `{command}` -- do not edit by hand.",
        f"# Sources: {', '.join(sources)}.",
        f"# Regenerate after changing a source; `{command} --check` fails when this is stale.",
        "# Roll out with `python scripts/deploy.py` (shows a diff, applies, waits until running).",
    ]
    return "\n".join(header) + "\n" + dump_yaml(dict(manifest))
