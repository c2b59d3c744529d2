"""Create or update a RayService through the Kubernetes API and wait for its rollout.

``scripts/deploy.py`` is the command line around this. Errors the operator on call can act on
become ``DeployError`` subclasses with a one-line message and an exit code; planning
(``plan_apply``) and waiting (``RolloutWatcher``) are pure and tested without a cluster.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import urllib3
import yaml
from kubernetes import client, config

from recsys.k8s.crd import apply_schema_defaults, openapi_schema
from recsys.k8s.diff import diff_manifests, merge_patch
from recsys.k8s.rollout import RolloutStatus, RolloutWatcher
from recsys.k8s.spec import SERVE_PORT

GROUP = "ray.io"
VERSION = "v1"
PLURAL = "rayservices"
CRD_NAME = f"{PLURAL}.{GROUP}"
FIELD_MANAGER = "recsys-deploy"


class DeployError(Exception):
    """A deployment problem with a one-line explanation; ``exit_code`` for the CLI."""

    exit_code: ClassVar[int] = 1


class ClusterUnreachable(DeployError):
    """No Kubernetes API to talk to (no kubeconfig, connection refused, DNS, TLS)."""

    exit_code = 3


class CrdNotInstalled(DeployError):
    """The cluster does not serve ``rayservices.ray.io``: the KubeRay operator is missing."""

    exit_code = 4


class RolloutFailed(DeployError):
    """The operator or Serve reported that this version will not come up."""

    exit_code = 5


class RolloutTimeout(DeployError):
    """The rollout did not finish in time (it may still finish later)."""

    exit_code = 6


# --------------------------------------------------------------------------------------------
# Pure planning
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ApplyPlan:
    """What applying the desired manifest will do."""

    action: Literal["create", "patch", "none"]
    changes: list[str] = field(default_factory=list)
    """Human-readable changes (empty for ``create`` and ``none``)."""
    patch: dict[str, Any] = field(default_factory=dict)
    """JSON merge patch for ``patch``."""


def plan_apply(
    live: Mapping[str, Any] | None,
    desired: Mapping[str, Any],
    schema: Mapping[str, Any] | None = None,
) -> ApplyPlan:
    """Create when absent, else patch exactly what differs (``none`` when nothing does).

    ``schema`` (the CRD's OpenAPI schema) fills in server-side defaults on the desired
    manifest first, so fields the API server defaulted are not reported or removed.
    """
    if live is None:
        return ApplyPlan("create")
    target = apply_schema_defaults(dict(desired), schema) if schema is not None else dict(desired)
    changes = diff_manifests(live, target)
    if not changes:
        return ApplyPlan("none")
    patch: dict[str, Any] = {"spec": merge_patch(live.get("spec") or {}, target.get("spec") or {})}
    metadata = target.get("metadata") or {}
    meta = {key: metadata[key] for key in ("labels", "annotations") if key in metadata}
    if meta:
        patch["metadata"] = meta
    return ApplyPlan("patch", changes, patch)


def endpoint(name: str, namespace: str, port: int = SERVE_PORT) -> str:
    """The in-cluster address of the RayService's Serve endpoint."""
    return f"{name}-serve-svc.{namespace}.svc:{port}"


# --------------------------------------------------------------------------------------------
# The API
# --------------------------------------------------------------------------------------------


def api_client_from_config(
    kubeconfig: str | None = None, context: str | None = None
) -> client.ApiClient:
    """An API client from a kubeconfig (``kubeconfig``, else ``$KUBECONFIG``, else
    ``~/.kube/config``), or from the pod's service account when running inside the cluster
    and no kubeconfig or context was asked for."""
    try:
        if kubeconfig is None and context is None and "KUBERNETES_SERVICE_HOST" in os.environ:
            configuration = client.Configuration()
            config.load_incluster_config(client_configuration=configuration)
            return client.ApiClient(configuration)
        return config.new_client_from_config(
            config_file=kubeconfig, context=context, persist_config=False
        )
    except (config.ConfigException, OSError, yaml.YAMLError) as error:
        where = kubeconfig or os.environ.get("KUBECONFIG") or "~/.kube/config"
        detail = (str(error).splitlines() or [type(error).__name__])[0].rstrip(".")
        raise ClusterUnreachable(
            f"no cluster configured ({where}): {detail}; "
            "pass --kubeconfig/--context or set KUBECONFIG"
        ) from None


class RayServiceApi:
    """The few Kubernetes API calls a RayService rollout needs, with errors translated."""

    def __init__(self, api_client: client.ApiClient) -> None:
        self._api_client = api_client
        self._objects = client.CustomObjectsApi(api_client)
        self._host = api_client.configuration.host

    def ensure_crd_installed(self) -> None:
        """Raise ``CrdNotInstalled`` unless the API serves ``ray.io/v1`` ``rayservices``."""
        try:
            with self._errors():
                resources = self._objects.get_api_resources(GROUP, VERSION)
        except DeployError as error:
            if _status(error) == 404:
                raise self._crd_missing() from None
            raise
        names = {resource.name for resource in resources.resources or []}
        if PLURAL not in names:
            raise self._crd_missing()

    def crd_schema(self) -> dict[str, Any] | None:
        """The RayService CRD's OpenAPI schema, or None when not readable (often RBAC)."""
        try:
            with self._errors():
                crd = client.ApiextensionsV1Api(self._api_client).read_custom_resource_definition(
                    CRD_NAME
                )
            return openapi_schema(self._api_client.sanitize_for_serialization(crd), VERSION)
        except (DeployError, KeyError, ValueError):
            return None

    def get(self, namespace: str, name: str) -> dict[str, Any] | None:
        """The live RayService, or None when it does not exist."""
        try:
            with self._errors():
                obj = self._objects.get_namespaced_custom_object(
                    GROUP, VERSION, namespace, PLURAL, name
                )
        except DeployError as error:
            if _status(error) == 404:
                return None
            raise
        return _as_dict(obj)

    def create(self, manifest: Mapping[str, Any]) -> dict[str, Any]:
        """Create the RayService; returns the stored object."""
        namespace = manifest["metadata"]["namespace"]
        with self._errors():
            obj = self._objects.create_namespaced_custom_object(
                GROUP, VERSION, namespace, PLURAL, dict(manifest), field_manager=FIELD_MANAGER
            )
        return _as_dict(obj)

    def patch(self, namespace: str, name: str, patch: Mapping[str, Any]) -> dict[str, Any]:
        """Apply a JSON merge patch; returns the stored object."""
        with self._errors():
            obj = self._objects.patch_namespaced_custom_object(
                GROUP, VERSION, namespace, PLURAL, name, dict(patch), field_manager=FIELD_MANAGER
            )
        return _as_dict(obj)

    def _crd_missing(self) -> CrdNotInstalled:
        return CrdNotInstalled(
            f"KubeRay CRD not installed: {self._host} does not serve {GROUP}/{VERSION} "
            f"{PLURAL} (install the KubeRay operator, e.g. `helm install kuberay-operator "
            f"kuberay/kuberay-operator`)"
        )

    @contextlib.contextmanager
    def _errors(self) -> Iterator[None]:
        try:
            yield
        except client.ApiException as error:
            raise _api_error(error) from None
        except (urllib3.exceptions.HTTPError, OSError) as error:
            raise ClusterUnreachable(
                f"no cluster reachable at {self._host}: {_root_cause(error)}"
            ) from None


class ApiError(DeployError):
    """An HTTP error from the API server other than the ones handled above."""

    def __init__(self, message: str, status: int | None) -> None:
        super().__init__(message)
        self.status = status


def _api_error(error: client.ApiException) -> ApiError:
    message = error.reason or ""
    with contextlib.suppress(TypeError, ValueError):
        message = json.loads(error.body or "").get("message") or message
    status = error.status
    hint = {401: " (credentials expired?)", 403: " (missing RBAC permission?)"}.get(status or 0, "")
    return ApiError(f"Kubernetes API error {status}: {message}{hint}", status)


def _status(error: DeployError) -> int | None:
    return error.status if isinstance(error, ApiError) else None


def _root_cause(error: BaseException) -> str:
    while True:
        cause = getattr(error, "reason", None)
        if not isinstance(cause, BaseException):
            cause = error.__cause__ or error.__context__
        if cause is None or cause is error:
            break
        error = cause
    text = str(error).split(": ", 1)[-1] if ": " in str(error) else str(error)
    return text or type(error).__name__


def _as_dict(obj: object) -> dict[str, Any]:
    if not isinstance(obj, dict):
        raise DeployError(f"unexpected API response: {type(obj).__name__}")
    return obj


# --------------------------------------------------------------------------------------------
# Waiting
# --------------------------------------------------------------------------------------------


TRANSIENT_STATUSES = frozenset({429, 500, 502, 503, 504})
"""API answers worth retrying while waiting (throttling, API server restarts)."""
MAX_TRANSIENT_ERRORS = 5
"""Consecutive transient errors after which waiting gives up."""


def is_transient(error: DeployError) -> bool:
    """Whether a status read that failed this way may succeed if tried again."""
    return isinstance(error, ClusterUnreachable) or _status(error) in TRANSIENT_STATUSES


def wait_for_rollout(
    api: RayServiceApi,
    namespace: str,
    name: str,
    generation: int,
    *,
    timeout_s: float,
    poll_interval_s: float = 2.0,
    on_status: Callable[[RolloutStatus], None] = lambda status: None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> RolloutStatus:
    """Poll until ``generation`` is running; raise ``RolloutFailed`` / ``RolloutTimeout``.

    Up to ``MAX_TRANSIENT_ERRORS`` consecutive transient read errors are ridden out: a
    rollout of GPU nodes takes long enough to outlive an API server restart.
    """
    watcher = RolloutWatcher(generation)
    deadline = clock() + timeout_s
    last = RolloutStatus("pending", "no status read yet")
    errors = 0
    while True:
        try:
            obj = api.get(namespace, name)
        except DeployError as error:
            errors += 1
            if not is_transient(error) or errors > MAX_TRANSIENT_ERRORS:
                raise
            on_status(RolloutStatus(last.state, f"{last.reason} [status read failed: {error}]"))
        else:
            errors = 0
            if obj is None:
                raise DeployError(f"RayService {namespace}/{name} was deleted during the rollout")
            last, done = watcher.observe(obj)
            on_status(last)
            if done and last.state == "failed":
                raise RolloutFailed(f"rollout failed: {last.reason}")
            if done:
                return last
        if clock() >= deadline:
            raise RolloutTimeout(
                f"rollout not finished after {timeout_s:g}s: {last.state} ({last.reason})"
            )
        sleep(poll_interval_s)
