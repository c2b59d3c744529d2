"""Where a RayService rollout stands, read from the status the KubeRay operator writes.

Two status dialects exist, and both are read:

- conditions (KubeRay >= 1.3): ``Ready`` (True once the Serve Service has endpoints; reasons
  ``Initializing``, ``InitializingTimeout``, ``ValidationFailed``, ``ZeroServeEndpoints``,
  ``NonZeroServeEndpoints``), ``UpgradeInProgress`` (True while a pending cluster exists next to
  the active one), ``RollbackInProgress``; ``serviceStatus`` mirrors ``Ready`` as ``Running``/"".
- legacy (KubeRay < 1.3): no conditions; ``serviceStatus`` is ``Running`` or a progress/error
  word (``WaitForServeDeploymentReady``, ``FailedToGetOrCreateRayCluster``, ...) that the
  operator retries on its own.

In both, ``activeServiceStatus`` / ``pendingServiceStatus`` carry the Serve application and
deployment statuses of the serving and the upcoming cluster, and ``observedGeneration`` says
which ``metadata.generation`` the operator has acted on.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

RolloutState = Literal["pending", "upgrading", "running", "failed"]

VALIDATION_FAILED = "ValidationFailed"
"""``Ready=False`` reason when the operator refuses the spec. It does not advance
``observedGeneration`` then, and keeps the condition (stale) after a fixed spec is accepted
until the service has endpoints -- so it only counts while ``observedGeneration`` lags."""
INITIALIZING_TIMEOUT = "InitializingTimeout"
"""``Ready=False`` reason after ``ray.io/initializing-timeout``: terminal for the object."""
FAILED_APP_STATUSES = frozenset({"DEPLOY_FAILED"})
"""Serve application statuses that mean this config will not come up."""


@dataclass(frozen=True)
class RolloutStatus:
    """A rollout state and the reason for it, in words for an operator on call."""

    state: RolloutState
    reason: str


def rollout_state(rayservice_obj: Mapping[str, Any], generation: int) -> RolloutState:
    """``pending``, ``upgrading``, ``running`` or ``failed`` for ``generation`` of the object."""
    return rollout_status(rayservice_obj, generation).state


def rollout_status(rayservice_obj: Mapping[str, Any], generation: int) -> RolloutStatus:
    """The rollout state of ``generation`` of a RayService object, with its reason.

    ``running`` means the operator has acted on ``generation``, the service has Serve endpoints,
    no upgrade is in flight and every Serve application reports RUNNING.
    """
    status = rayservice_obj.get("status") or {}
    conditions = {c.get("type"): c for c in status.get("conditions") or []}
    observed = int(status.get("observedGeneration") or 0)

    failure = _failure(status, conditions, observed, generation)
    if failure is not None:
        return RolloutStatus("failed", failure)
    if observed < generation:
        return RolloutStatus(
            "pending",
            f"waiting for the operator to act on generation {generation} "
            f"(observedGeneration {observed})",
        )
    if conditions:
        return _from_conditions(status, conditions)
    return _from_legacy(status)


def _failure(
    status: Mapping[str, Any],
    conditions: Mapping[str, Mapping[str, Any]],
    observed: int,
    generation: int,
) -> str | None:
    ready = conditions.get("Ready") or {}
    if ready.get("status") == "False":
        reason = ready.get("reason")
        if reason == INITIALIZING_TIMEOUT or (
            reason == VALIDATION_FAILED and observed < generation
        ):
            return f"{reason}: {ready.get('message', '')}".rstrip(": ")
    if observed < generation:
        return None
    target = _target(status)
    for app_name, app in (target.get("applicationStatuses") or {}).items():
        if app.get("status") in FAILED_APP_STATUSES:
            return _join_detail(f"Serve application {app_name} {app['status']}", app)
    return None


def _from_conditions(
    status: Mapping[str, Any], conditions: Mapping[str, Mapping[str, Any]]
) -> RolloutStatus:
    ready = conditions.get("Ready") or {}
    upgrade = conditions.get("UpgradeInProgress") or {}
    rollback = conditions.get("RollbackInProgress") or {}
    if rollback.get("status") == "True":
        return RolloutStatus("upgrading", f"rolling back: {rollback.get('message', '')}")
    if upgrade.get("status") == "True":
        return RolloutStatus("upgrading", _upgrade_reason(status))
    if ready.get("status") != "True":
        if ready.get("reason") == VALIDATION_FAILED:  # stale: this generation passed validation
            reason = "spec accepted; waiting for Serve endpoints"
        else:
            reason = f"{ready.get('reason', 'NotReady')}: {ready.get('message', 'not ready yet')}"
        return RolloutStatus("pending", _join(reason, _progress(_target(status))))
    return _ready_state(status)


def _from_legacy(status: Mapping[str, Any]) -> RolloutStatus:
    service_status = status.get("serviceStatus") or ""
    if _pending_cluster(status):
        return RolloutStatus("upgrading", _upgrade_reason(status))
    if service_status != "Running":
        word = service_status or "no serviceStatus yet"
        return RolloutStatus("pending", _join(word, _progress(_target(status))))
    return _ready_state(status)


def _ready_state(status: Mapping[str, Any]) -> RolloutStatus:
    active = status.get("activeServiceStatus") or {}
    apps = active.get("applicationStatuses") or {}
    not_running = {name: app for name, app in apps.items() if app.get("status") != "RUNNING"}
    if not_running:
        detail = "; ".join(
            _join_detail(f"{name} {app.get('status')}", app) for name, app in not_running.items()
        )
        updating = all(app.get("status") == "DEPLOYING" for app in not_running.values())
        what = "updating in place" if updating else "not RUNNING"
        return RolloutStatus("upgrading", f"Serve applications {what}: {detail}")
    endpoints = status.get("numServeEndpoints", 0)
    names = ", ".join(sorted(apps)) or "no applications reported"
    return RolloutStatus("running", f"{endpoints} Serve endpoints; RUNNING: {names}")


def _upgrade_reason(status: Mapping[str, Any]) -> str:
    active = (status.get("activeServiceStatus") or {}).get("rayClusterName") or "-"
    pending = _pending_cluster(status) or "-"
    base = f"new RayCluster {pending} coming up; traffic stays on {active} until it is ready"
    return _join(base, _progress(_target(status)))


def _pending_cluster(status: Mapping[str, Any]) -> str:
    return str((status.get("pendingServiceStatus") or {}).get("rayClusterName") or "")


def _target(status: Mapping[str, Any]) -> Mapping[str, Any]:
    """The cluster this rollout is about: the pending one during an upgrade, else the active."""
    if _pending_cluster(status):
        return status.get("pendingServiceStatus") or {}
    return status.get("activeServiceStatus") or {}


def _progress(cluster: Mapping[str, Any]) -> str:
    parts = []
    ray = cluster.get("rayClusterStatus") or {}
    if "desiredWorkerReplicas" in ray:
        ready = ray.get("readyWorkerReplicas", 0)
        parts.append(f"workers {ready}/{ray['desiredWorkerReplicas']} ready")
    apps = cluster.get("applicationStatuses") or {}
    parts += [f"{name} {app.get('status', '?')}" for name, app in sorted(apps.items())]
    return ", ".join(parts)


def _join_detail(summary: str, app: Mapping[str, Any]) -> str:
    """``summary: message | Deployment: message`` with the app's and unhealthy deployments'
    messages, or just ``summary`` when Serve gave none."""
    messages = [app.get("message") or ""]
    for name, deployment in sorted((app.get("serveDeploymentStatuses") or {}).items()):
        if deployment.get("status") != "HEALTHY" and deployment.get("message"):
            messages.append(f"{name}: {deployment['message']}")
    detail = " | ".join(m.strip() for m in messages if m.strip())
    return f"{summary}: {detail}" if detail else summary


def _join(first: str, second: str) -> str:
    return f"{first} ({second})" if second else first


@dataclass
class RolloutWatcher:
    """Decides when waiting for a rollout is over, from successive status observations.

    ``running`` must be seen ``confirmations`` polls in a row (the first status after an
    in-place Serve update can still show the old applications RUNNING), and ``failed`` must
    persist for ``failure_confirmations`` polls (right after a PATCH the status may still
    describe the previous generation's failure).
    """

    generation: int
    confirmations: int = 2
    failure_confirmations: int = 3
    _streak_state: RolloutState | None = None
    _streak: int = 0

    def observe(self, rayservice_obj: Mapping[str, Any]) -> tuple[RolloutStatus, bool]:
        """The status of this observation and whether the wait is over."""
        status = rollout_status(rayservice_obj, self.generation)
        if status.state == self._streak_state:
            self._streak += 1
        else:
            self._streak_state, self._streak = status.state, 1
        needed = {"running": self.confirmations, "failed": self.failure_confirmations}
        done = status.state in needed and self._streak >= needed[status.state]
        return status, done
