"""``ClusterSpec``: the typed description of the production Ray cluster behind the RayService.

The Serve application (deployments, replicas, batching, GPU fractions) lives in the serve
config (``deployments/configs/gpu.yaml``); everything Kubernetes needs beyond it -- image,
node pools, pod sizes, autoscaler, GCS fault tolerance, upgrade strategy -- lives here and is
committed as ``k8s/cluster.yaml``. ``recsys.k8s.render`` combines the two into a RayService.

Nothing here talks to a cluster or imports Ray.
"""

from __future__ import annotations

import re
from typing import Literal, Self

from pydantic import Field, field_validator, model_validator

from recsys import __version__
from recsys.config import StrictModel

RAY_VERSION = "2.60.0"
"""The Ray version pinned in ``pyproject.toml``; the image, ``rayVersion`` and the autoscaler
image must all agree with it (a test checks it against ``ray.__version__``)."""
PYTHON_TAG = "py311"
"""Python flavour of the Ray base image (``requires-python`` is 3.11)."""
BASE_IMAGE = f"rayproject/ray:{RAY_VERSION}-{PYTHON_TAG}-gpu"
"""Base image of ``k8s/Dockerfile`` (a test checks that the Dockerfile uses exactly this)."""
DEFAULT_IMAGE_REPOSITORY = "ghcr.io/example/recsys-serve"
DEFAULT_IMAGE_TAG = f"{__version__}-ray{RAY_VERSION}-{PYTHON_TAG}-gpu"
"""Project version plus the Ray base it was built on, e.g. ``0.1.0-ray2.60.0-py311-gpu``."""

SERVE_PORT = 8000
"""Serve's HTTP port; KubeRay's Serve Service and readiness probe expect it."""
DASHBOARD_PORT = 8265
"""Ray dashboard / Serve REST API (``serve status``, ``serve deploy``)."""
METRICS_PORT = 8080
"""Ray's Prometheus metrics port on every node (``metrics-export-port``)."""

MAX_RAYSERVICE_NAME_LENGTH = 47
"""KubeRay's ``MaxRayServiceNameLength``: longer names fail the operator's validation because
the generated RayCluster and Service names would be truncated."""

_DNS_1035 = r"^[a-z]([-a-z0-9]*[a-z0-9])?$"
_DNS_1123 = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
_CPU_QUANTITY = r"^([0-9]+(\.[0-9]+)?|[0-9]+m)$"
_MEMORY_QUANTITY = r"^[0-9]+(\.[0-9]+)?(Ki|Mi|Gi|Ti|k|M|G|T)?$"
_DURATION = r"^([0-9]+|([0-9]+(\.[0-9]+)?(h|m|s))+)$"

_QUANTITY_FACTORS = {
    "": 1.0,
    "m": 1e-3,
    "k": 1e3,
    "M": 1e6,
    "G": 1e9,
    "T": 1e12,
    "Ki": 2.0**10,
    "Mi": 2.0**20,
    "Gi": 2.0**30,
    "Ti": 2.0**40,
}


def parse_quantity(quantity: str) -> float:
    """A Kubernetes resource quantity (``"8"``, ``"500m"``, ``"32Gi"``) as a number."""
    match = re.fullmatch(r"([0-9]+(?:\.[0-9]+)?)(m|k|M|G|T|Ki|Mi|Gi|Ti)?", quantity)
    if match is None:
        raise ValueError(f"not a resource quantity: {quantity!r}")
    number, suffix = match.groups()
    return float(number) * _QUANTITY_FACTORS[suffix or ""]


class Toleration(StrictModel):
    """A pod toleration (lets pods onto tainted nodes, e.g. GPU node pools)."""

    key: str
    """Taint key, e.g. ``nvidia.com/gpu``."""
    operator: Literal["Exists", "Equal"] = "Exists"
    """``Exists`` matches any value; ``Equal`` needs ``value``."""
    value: str | None = None
    """Taint value (only with ``operator: Equal``)."""
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = "NoSchedule"
    """Taint effect to tolerate (None: every effect)."""

    @model_validator(mode="after")
    def _check_value(self) -> Self:
        if self.operator == "Equal" and self.value is None:
            raise ValueError(f"toleration {self.key!r}: operator Equal needs a value")
        if self.operator == "Exists" and self.value is not None:
            raise ValueError(f"toleration {self.key!r}: operator Exists takes no value")
        return self


GPU_TOLERATION = Toleration(key="nvidia.com/gpu", operator="Exists", effect="NoSchedule")
"""The taint GKE, EKS and the NVIDIA GPU operator put on GPU nodes."""


class ImageSpec(StrictModel):
    """The container image every Ray pod runs (built from ``k8s/Dockerfile``)."""

    repository: str = DEFAULT_IMAGE_REPOSITORY
    """Registry and repository, without tag."""
    tag: str = Field(DEFAULT_IMAGE_TAG, pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
    """Image tag. Use an immutable tag per release (e.g. ``0.1.0-ray2.60.0-py311-gpu`` or a
    git sha): a changed tag is what makes KubeRay roll out a new cluster."""
    pull_policy: Literal["Always", "IfNotPresent", "Never"] = "IfNotPresent"
    """``imagePullPolicy`` of every Ray container."""
    pull_secrets: list[str] = Field(default_factory=list)
    """Names of ``kubernetes.io/dockerconfigjson`` Secrets for a private registry."""

    @property
    def ref(self) -> str:
        """``repository:tag``."""
        return f"{self.repository}:{self.tag}"


class HeadSpec(StrictModel):
    """The Ray head pod: GCS, dashboard, Serve controller, autoscaler. It runs no replicas."""

    cpu: str = Field("4", pattern=_CPU_QUANTITY)
    """CPU request and limit (Guaranteed QoS: losing the head restarts the control plane)."""
    memory: str = Field("16Gi", pattern=_MEMORY_QUANTITY)
    """Memory request and limit."""
    node_selector: dict[str, str] = Field(default_factory=dict)
    """Node labels the head must run on (e.g. a CPU system pool)."""
    tolerations: list[Toleration] = Field(default_factory=list)
    """Tolerations of the head pod."""


class WorkerGroup(StrictModel):
    """One KubeRay worker group: a node pool shape that the Ray autoscaler scales."""

    name: str = Field(pattern=_DNS_1123, max_length=63)
    """``groupName`` (also the Ray node type the autoscaler reports)."""
    replicas: int = Field(1, ge=0)
    """Pods a new cluster starts with (the autoscaler takes over from there)."""
    min_replicas: int = Field(0, ge=0)
    """Pods the autoscaler never goes below."""
    max_replicas: int = Field(ge=1)
    """Pods the autoscaler never goes above (bounds the GPU bill)."""
    cpu: str = Field(pattern=_CPU_QUANTITY)
    """CPU request and limit per pod; Ray advertises it as the node's ``CPU``."""
    memory: str = Field(pattern=_MEMORY_QUANTITY)
    """Memory request and limit per pod."""
    gpus: int = Field(ge=0, le=16)
    """``nvidia.com/gpu`` per pod; Ray advertises it as the node's ``GPU``."""
    node_selector: dict[str, str] = Field(default_factory=dict)
    """Node labels, e.g. ``cloud.google.com/gke-accelerator: nvidia-l4`` (GKE) or
    ``nvidia.com/gpu.product: NVIDIA-L4`` (NVIDIA GPU feature discovery)."""
    tolerations: list[Toleration] | None = None
    """Tolerations (None: tolerate the ``nvidia.com/gpu`` taint when ``gpus > 0``)."""
    idle_timeout_seconds: int | None = Field(None, ge=0)
    """Per-group override of the autoscaler's idle timeout (autoscaler v2 only)."""
    resources: dict[str, float] = Field(default_factory=dict)
    """Ray custom resources each pod advertises (KubeRay ``resources``), e.g.
    ``pool_gpu_small: 1``: replicas asking for one land only in this group."""

    @property
    def effective_tolerations(self) -> list[Toleration]:
        """The tolerations the pods get."""
        if self.tolerations is not None:
            return self.tolerations
        return [GPU_TOLERATION] if self.gpus > 0 else []

    @model_validator(mode="after")
    def _check_bounds(self) -> Self:
        if not self.min_replicas <= self.replicas <= self.max_replicas:
            raise ValueError(
                f"worker group {self.name!r}: need min_replicas ({self.min_replicas}) <= "
                f"replicas ({self.replicas}) <= max_replicas ({self.max_replicas})"
            )
        return self


class AutoscalerSpec(StrictModel):
    """KubeRay's in-tree Ray autoscaler (a sidecar of the head pod)."""

    version: Literal["v1", "v2"] = "v2"
    """Autoscaler generation. v2 schedules placement groups (the ranker's GPU gangs) as one
    demand and supports per-group idle timeouts."""
    idle_timeout_seconds: int = Field(60, ge=0)
    """Seconds a worker node must be idle before it is removed."""
    upscaling_mode: Literal["Default", "Aggressive", "Conservative"] = "Default"
    """How fast nodes are added: ``Conservative`` limits pending nodes, ``Aggressive`` adds
    everything the demand asks for at once."""
    cpu: str = Field("500m", pattern=_CPU_QUANTITY)
    """CPU request and limit of the autoscaler container."""
    memory: str = Field("512Mi", pattern=_MEMORY_QUANTITY)
    """Memory request and limit of the autoscaler container."""


class SecretKeyRef(StrictModel):
    """A key of a Kubernetes Secret (the value never appears in this repository)."""

    name: str = Field(pattern=_DNS_1123, max_length=253)
    """Secret name."""
    key: str = Field(pattern=r"^[-._a-zA-Z0-9]+$")
    """Key inside the Secret."""


class GcsFaultTolerance(StrictModel):
    """GCS fault tolerance: the head keeps cluster metadata in Redis, so a restarted head finds
    its actors, placement groups and Serve applications again while workers keep serving.

    The external storage namespace is deliberately not configurable: KubeRay derives it from
    the RayCluster's UID, so the old and the new cluster of a zero-downtime upgrade never share
    (and corrupt) each other's state.
    """

    redis_address: str
    """``host:port`` (or ``redis://`` / ``rediss://`` URL) of a highly available Redis."""
    password_secret: SecretKeyRef
    """Secret holding the Redis password (create it with ``kubectl create secret``)."""

    @field_validator("redis_address")
    @classmethod
    def _check_address(cls, value: str) -> str:
        if "@" in value:
            raise ValueError("redis_address must not embed credentials: use password_secret")
        if not re.fullmatch(r"(rediss?://)?[A-Za-z0-9.-]+:[0-9]{1,5}", value):
            raise ValueError(f"redis_address must look like host:port, got {value!r}")
        return value


class IncrementalUpgrade(StrictModel):
    """Options of KubeRay's ``NewClusterWithIncrementalUpgrade`` strategy (alpha; needs the
    ``RayServiceIncrementalUpgrade`` feature gate and Gateway API in the cluster)."""

    gateway_class_name: str
    """GatewayClass installed by the cluster admin; clients then call the Gateway."""
    step_size_percent: int = Field(ge=1, le=100)
    """Traffic moved to the new cluster per step."""
    interval_seconds: int = Field(ge=1)
    """Seconds between steps."""
    max_surge_percent: int = Field(100, ge=1, le=100)
    """Capacity the new cluster may add per step, in percent of the old one."""

    @model_validator(mode="after")
    def _check_steps(self) -> Self:
        if self.step_size_percent > self.max_surge_percent:
            raise ValueError("step_size_percent must be <= max_surge_percent")
        return self


class UpgradeSpec(StrictModel):
    """How KubeRay rolls out a changed ``rayClusterConfig`` (image, pod shapes, groups).

    Changes to the serve config alone never create a new cluster: KubeRay hands the new config
    to the running Serve controller, which replaces replicas in a rolling update.
    """

    strategy: Literal["NewCluster", "NewClusterWithIncrementalUpgrade", "None"] = "NewCluster"
    """``NewCluster``: blue/green -- bring up a complete new cluster, switch the Serve Service
    once its applications are RUNNING, then delete the old one (zero downtime, needs spare GPU
    quota for a second cluster while it lasts). ``NewClusterWithIncrementalUpgrade``: shift
    traffic in steps through a Gateway so both clusters autoscale and the GPU peak stays lower
    (alpha). ``None``: cluster changes are not rolled out at all."""
    incremental: IncrementalUpgrade | None = None
    """Options of the incremental strategy (required with it, refused otherwise)."""
    cluster_deletion_delay_seconds: int = Field(60, ge=0)
    """How long the old cluster lives after traffic has moved, so in-flight requests finish."""

    @model_validator(mode="after")
    def _check_options(self) -> Self:
        incremental = self.strategy == "NewClusterWithIncrementalUpgrade"
        if incremental and self.incremental is None:
            raise ValueError("strategy NewClusterWithIncrementalUpgrade needs `incremental`")
        if not incremental and self.incremental is not None:
            raise ValueError(f"`incremental` options do not apply to strategy {self.strategy}")
        return self


class NetworkSpec(StrictModel):
    """Who may reach the Ray pods (rendered as a NetworkPolicy, ``k8s/networkpolicy.yaml``).

    Ray's own ports (GCS, dashboard, client, raylet and object transfer) are open only to the
    cluster's own pods, plus the dashboard to the KubeRay operator (it deploys and polls the
    Serve applications through it); metrics only to the monitoring namespace; the Serve port
    to the namespaces below. Needs a CNI that enforces NetworkPolicy (Calico, Cilium, GKE
    Dataplane V2...)."""

    serve_from_namespaces: dict[str, str] | None = None
    """Labels of the namespaces whose pods may call the Serve port (e.g.
    ``{"kubernetes.io/metadata.name": "shop-frontend"}``); None: any namespace in the cluster."""
    operator_namespace: str = Field("kuberay-system", pattern=_DNS_1123, max_length=63)
    """Namespace of the KubeRay operator (it calls the head's dashboard)."""
    monitoring_namespace: str = Field("monitoring", pattern=_DNS_1123, max_length=63)
    """Namespace of Prometheus (the only one that may scrape metrics ports)."""


class ClusterSpec(StrictModel):
    """Everything the RayService needs besides the serve config (``k8s/cluster.yaml``)."""

    name: str = Field(pattern=_DNS_1035, max_length=MAX_RAYSERVICE_NAME_LENGTH)
    """RayService name; Services are ``<name>-head-svc`` and ``<name>-serve-svc``."""
    namespace: str = Field(pattern=_DNS_1123, max_length=63)
    """Kubernetes namespace of the RayService."""
    image: ImageSpec = ImageSpec()
    """Container image of every Ray pod."""
    service_account: str | None = Field(None, pattern=_DNS_1123)
    """ServiceAccount of the Ray pods (e.g. bound to cloud IAM so pods can read ``gs://`` or
    ``s3://`` artifacts without keys)."""
    head: HeadSpec = HeadSpec()
    """The head pod."""
    worker_groups: list[WorkerGroup] = Field(min_length=1)
    """GPU (or CPU) worker groups; each deployment's replica (or gang) must fit one of them."""
    autoscaler: AutoscalerSpec = AutoscalerSpec()
    """The in-tree Ray autoscaler."""
    gcs_fault_tolerance: GcsFaultTolerance | None = None
    """Redis-backed GCS fault tolerance (None: a head restart restarts the whole cluster)."""
    upgrade: UpgradeSpec = UpgradeSpec()
    """Zero-downtime upgrade behaviour."""
    artifacts_uri: str | None = Field(None, pattern=r"^(gs://|s3://|file://|/)\S+$")
    """Artifact version to serve; replaces ``args.artifacts`` of the application (None: keep
    what the serve config says)."""
    proxy_location: Literal["EveryNode", "HeadOnly"] = "EveryNode"
    """Where Serve runs HTTP proxies. ``EveryNode``: each worker with replicas proxies, the
    head is left out of the Serve Service (it runs no replicas)."""
    initializing_timeout: str | None = Field(None, pattern=_DURATION)
    """``ray.io/initializing-timeout``: a new RayService that is not ready after this long
    (e.g. ``30m``) is marked failed instead of retrying forever (None: no limit)."""
    ray_token_auth: bool = True
    """Ray token authentication (``authOptions.mode: token``): KubeRay keeps the token in a
    Secret and gives it to every Ray container as ``RAY_AUTH_TOKEN`` with
    ``RAY_AUTH_MODE=token``, so the dashboard, GCS and client refuse callers without it."""
    api_keys_secret: SecretKeyRef | None = None
    """Secret key holding the API keys (comma-separated) the ingress requires, given to the
    pods as ``RECSYS_API_KEYS`` (None: the API is open to whoever reaches the Serve port)."""
    artifact_key_secret: SecretKeyRef | None = None
    """Secret key holding the artifact signing key (``RECSYS_ARTIFACT_KEY``): replicas then
    refuse unsigned or foreign-signed artifacts."""
    network: NetworkSpec = NetworkSpec()
    """The NetworkPolicy around the Ray pods."""

    @field_validator("worker_groups")
    @classmethod
    def _check_unique_groups(cls, groups: list[WorkerGroup]) -> list[WorkerGroup]:
        names = [group.name for group in groups]
        if len(set(names)) != len(names):
            raise ValueError(f"worker group names must be unique: {names}")
        return groups
