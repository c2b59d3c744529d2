"""The Ray-facing half of the autoscaling experiments: join the simulated cluster, deploy the
app on it, and take snapshots of replicas and nodes.

The pure half (cluster spec, status parsing, the sampler loop) lives in ``recsys.experiments``;
this module only calls Ray: ``ray.init`` with the cluster's token, ``serve.run`` of the app
built by ``deployments.app.build_app``, the Serve controller's instance details (replica states
and the autoscaler's target per deployment) and the Ray autoscaler's report in the GCS (nodes
by type, pending launches).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping
from typing import Any

import ray
from ray import serve
from ray.serve.deployment import Application

from deployments.app import build_app
from recsys.config import AppConfig
from recsys.experiments.cluster_spec import (
    NodeStatus,
    ReplicaCounts,
    node_status_from_report,
    replicas_from_serve_details,
)
from recsys.experiments.local_cluster import ClusterState
from recsys.experiments.sampler import Snapshot

APP_NAME = "recsys"
NAMESPACE = "recsys-experiments"


def connect(state: ClusterState) -> None:
    """Join the cluster as a driver (token auth through the cluster's token file)."""
    if ray.is_initialized():
        return
    os.environ.update(state.client_env())
    # Ray reads RAY_AUTH_MODE into its config when it is imported; refresh it (what Ray's own
    # `_enable_token_auth` does) and drop any token cached from another source.
    from ray._raylet import (  # type: ignore[attr-defined]  # Ray's compiled module
        AuthenticationTokenLoader,
        Config,
    )

    Config.initialize("")
    AuthenticationTokenLoader.instance().reset_cache()
    ray.init(
        address=state.address,
        namespace=NAMESPACE,
        logging_level="WARNING",
        log_to_driver=False,
        configure_logging=False,
    )


def disconnect() -> None:
    if ray.is_initialized():
        ray.shutdown()


def with_options(application: Application, overrides: Mapping[str, dict[str, Any]]) -> Application:
    """The same application graph with ``overrides[deployment name]`` applied as
    ``Deployment.options`` (the experiment's custom autoscaling policy, graceful shutdown)."""
    bound = application._bound_deployment

    def visit(x: Any) -> Any:
        if isinstance(x, Application):
            return with_options(x, overrides)
        if isinstance(x, dict):
            return {k: visit(v) for k, v in x.items()}
        if isinstance(x, list | tuple):
            return type(x)(visit(v) for v in x)
        return x

    args = tuple(visit(a) for a in bound.init_args)
    kwargs = {k: visit(v) for k, v in bound.init_kwargs.items()}
    if bound.name in overrides:
        bound = bound.options(**overrides[bound.name])
    return bound.bind(*args, **kwargs)


def deploy(
    app: AppConfig,
    *,
    port: int,
    host: str = "127.0.0.1",
    proxy_location: str = "HeadOnly",
    name: str = APP_NAME,
    overrides: Mapping[str, dict[str, Any]] | None = None,
) -> None:
    """Start Serve (HTTP proxy where ``proxy_location`` says) and deploy the app; returns
    once Serve accepted it (replicas may still be starting: wait on HTTP for readiness).
    ``overrides``: deployment options by deployment name (:func:`with_options`)."""
    serve.start(proxy_location=proxy_location, http_options={"host": host, "port": port})
    application = build_app(app)
    if overrides:
        application = with_options(application, overrides)
    serve.run(application, name=name, route_prefix="/", blocking=False)


def app_status(name: str = APP_NAME) -> str | None:
    """Serve's status of application ``name`` (``RUNNING``, ``DEPLOYING`` ...), None if absent."""
    application = serve.status().applications.get(name)
    return None if application is None else str(application.status.value)


def serve_details() -> dict[str, Any]:
    """Serve's instance details (what the Serve REST API returns), from the controller."""
    from ray.serve.context import _get_global_client

    client = _get_global_client()
    return dict(client.get_serve_details())


def autoscaler_report() -> dict[str, Any]:
    """The Ray autoscaler's last report (nodes by type, pending launches, failures)."""
    from ray._private import ray_constants
    from ray.experimental.internal_kv import _internal_kv_get

    raw = _internal_kv_get(ray_constants.DEBUG_AUTOSCALING_STATUS)
    if not raw:
        return {}
    return dict(json.loads(raw).get("autoscaler_report") or {})


def nodes() -> NodeStatus:
    return node_status_from_report(autoscaler_report())


def replicas(name: str = APP_NAME) -> dict[str, ReplicaCounts]:
    return replicas_from_serve_details(serve_details(), name)


def snapshot(name: str = APP_NAME) -> Snapshot:
    """One sample of the cluster: nodes by type and replicas per deployment."""
    t = time.time()
    node_status = nodes()
    return Snapshot(
        t_unix=t,
        worker_nodes=node_status.workers(),
        pending_nodes=dict(node_status.pending),
        replicas=replicas(name),
    )
