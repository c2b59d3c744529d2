"""Named Serve autoscaling policies, and how an experiment derives its app config.

An experiment deploys the committed GPU serve config (``deployments/configs/gpu.yaml``, i.e.
``deployments.profiles.gpu_profile()``) unchanged in every resource request. Only non-resource
arguments may differ, and :func:`experiment_app_config` applies exactly these:

* ``artifacts``: the local artifact path (the profile names an ``s3://`` release);
* ``torch_threads`` of the model stages: 1 (the machine has 2 real cores, not 4 per replica);
* optionally ``max_batch_size`` of the stages and a simulated device time per batch
  (``fault_delay_ms``), both named in the experiment's spec;
* the autoscaling parameters of the policy under test (targets, delays, look-back, and a cap
  on ``max_replicas`` so the simulated cluster stays within what 2 cores can host).

:func:`config_diff` lists every difference from the profile, for the report.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Literal

from pydantic import Field

from recsys.config import AppConfig, AutoscalingConfig, StrictModel

Stage = Literal["ingress", "query_encoder", "retriever", "ranker"]
STAGES: tuple[Stage, ...] = ("ingress", "query_encoder", "retriever", "ranker")
MODEL_STAGES: tuple[Stage, ...] = ("query_encoder", "retriever", "ranker")
DEPLOYMENT_NAMES: dict[Stage, str] = {
    "ingress": "Ingress",
    "query_encoder": "QueryEncoder",
    "retriever": "Retriever",
    "ranker": "Ranker",
}
"""Serve deployment name of each stage (``deployments.app.build_app``)."""


class StagePolicy(StrictModel):
    """Autoscaling of one stage under a policy."""

    target_ongoing_requests: float = Field(gt=0)
    """Ongoing requests per replica Serve aims at (lower: scale out earlier)."""
    max_replicas: int | None = Field(None, ge=1)
    """Cap on replicas (None: keep the profile's maximum)."""
    min_replicas: int | None = Field(None, ge=0)
    """Floor on replicas (None: keep the profile's minimum)."""


class AutoscalingPolicy(StrictModel):
    """A named set of Serve autoscaling parameters, applied to every stage."""

    name: str = Field(pattern=r"^[a-z][a-z0-9_-]{0,31}$")
    """Policy name (used in result directory names)."""
    description: str
    """One line: what the policy is for."""
    upscale_delay_s: float = Field(ge=0)
    """How long the wish to scale up must last before Serve adds replicas."""
    downscale_delay_s: float = Field(ge=0)
    """How long the wish to scale down must last before Serve removes replicas."""
    look_back_period_s: float = Field(gt=0)
    """Window over which ongoing requests are averaged."""
    metrics_interval_s: float = Field(1.0, gt=0)
    """How often replicas and handles report their ongoing requests."""
    stages: dict[Stage, StagePolicy]
    """Per-stage targets and replica bounds; every stage must be named."""
    predictive: list[Stage] = Field(default_factory=list)
    """Stages scaled by the predictive policy (``deployments.predictive_policy``) instead of
    Serve's default one; their target is the load one replica carries."""
    headroom: float = Field(1.5, ge=1.0)
    """Predictive stages: capacity asked for over the predicted load."""
    downscale_hold_s: float = Field(60.0, ge=0)
    """Predictive stages: scale down only to the largest decision of this many seconds. With
    the nodes' 60 s idle timeout (``k8s/cluster.yaml``) a node stays about 120 s after the
    last decision that needed it: about what a new one takes to arrive."""

    def stage(self, stage: Stage) -> StagePolicy:
        return self.stages[stage]


def _policy(
    name: str,
    description: str,
    *,
    up: float,
    down: float,
    look_back: float,
    targets: Mapping[Stage, float],
    max_replicas: Mapping[Stage, int],
    min_replicas: Mapping[Stage, int] | None = None,
    predictive: Sequence[Stage] = (),
) -> AutoscalingPolicy:
    return AutoscalingPolicy(
        name=name,
        description=description,
        upscale_delay_s=up,
        downscale_delay_s=down,
        look_back_period_s=look_back,
        stages={
            s: StagePolicy(
                target_ongoing_requests=targets[s],
                max_replicas=max_replicas[s],
                min_replicas=(min_replicas or {}).get(s),
            )
            for s in STAGES
        },
        predictive=list(predictive),
    )


LOCAL_MAX_REPLICAS: dict[Stage, int] = {
    "ingress": 2,
    "query_encoder": 3,
    "retriever": 3,
    "ranker": 4,
}
"""Replica caps on the simulated cluster, what 3 ``gpu-small`` nodes (two half-GPU replicas
each) and 4 ``gpu-multi`` nodes (one ranker gang each) can host and 2 real cores can run. The
profile allows 4 ingress, 8 encoder, 8 retriever and 4 ranker replicas."""

POLICIES: dict[str, AutoscalingPolicy] = {
    "reactive": _policy(
        "reactive",
        "scale out early and fast, scale in after 10 s: low targets, 2 s up / 10 s down",
        up=2.0,
        down=10.0,
        look_back=3.0,
        targets={"ingress": 16, "query_encoder": 4, "retriever": 4, "ranker": 1},
        max_replicas=LOCAL_MAX_REPLICAS,
    ),
    "conservative": _policy(
        "conservative",
        "scale out only under sustained queueing, scale in late: 2x the targets, 10 s up / "
        "40 s down",
        up=10.0,
        down=40.0,
        look_back=10.0,
        targets={"ingress": 32, "query_encoder": 8, "retriever": 8, "ranker": 2},
        max_replicas=LOCAL_MAX_REPLICAS,
    ),
    "asymmetric": _policy(
        "asymmetric",
        "scale out as fast as reactive, scale in only after 60 s (longer than a replica takes "
        "to start on this machine): reactive targets, 2 s up / 60 s down",
        up=2.0,
        down=60.0,
        look_back=5.0,
        targets={"ingress": 16, "query_encoder": 4, "retriever": 4, "ranker": 1},
        max_replicas=LOCAL_MAX_REPLICAS,
    ),
    "tuned": _policy(
        "tuned",
        "per-stage targets for this machine: the device-bound ranker scales as soon as a "
        "request queues (target 1), the CPU-bound stages only under heavy queueing (more "
        "replicas on 2 shared cores add no CPU); 5 s up / 60 s down (longer than a replica "
        "takes to start under load)",
        up=5.0,
        down=60.0,
        look_back=5.0,
        targets={"ingress": 32, "query_encoder": 8, "retriever": 8, "ranker": 1},
        max_replicas=LOCAL_MAX_REPLICAS,
    ),
    "predictive": _policy(
        "predictive",
        "ranker gangs asked for one lead time (node arrival + replica start) ahead: the load's "
        "level and trend, the day's shape from an earlier day, announced events; 1.5x "
        "headroom, scale-down only to the largest decision of the last 60 s (none after an "
        "announced sale's end). CPU stages as reactive",
        up=2.0,
        down=10.0,
        look_back=3.0,
        targets={"ingress": 16, "query_encoder": 4, "retriever": 4, "ranker": 1},
        max_replicas=LOCAL_MAX_REPLICAS,
        predictive=("ranker",),
    ),
    "pinned": _policy(
        "pinned",
        "one replica per stage, never scaled (capacity probes)",
        up=2.0,
        down=10.0,
        look_back=3.0,
        targets={"ingress": 16, "query_encoder": 4, "retriever": 4, "ranker": 1},
        max_replicas=dict.fromkeys(STAGES, 1),
        min_replicas=dict.fromkeys(STAGES, 1),
    ),
}
"""The named policies ``scripts/experiment.py --policy`` accepts."""


def get_policy(name: str) -> AutoscalingPolicy:
    try:
        return POLICIES[name]
    except KeyError:
        raise ValueError(f"unknown policy {name!r}; choose from {sorted(POLICIES)}") from None


class StageOverrides(StrictModel):
    """Non-resource overrides of the model stages for an experiment."""

    torch_threads: int | None = Field(1, ge=1)
    """torch intra-op threads per replica (None: keep the profile's)."""
    max_batch_size: int | None = Field(None, ge=1)
    """``@serve.batch`` size of encoder, retriever and ranker (None: keep the profile's)."""
    ranker_max_batch_size: int | None = Field(None, ge=1)
    """``@serve.batch`` size of the ranker alone (wins over ``max_batch_size``)."""
    ranker_device_ms: float = Field(0.0, ge=0)
    """Simulated device time per ranker batch (the stage's ``fault_delay_ms``): an awaited
    sleep standing in for the GPU work the logical GPUs cannot do. 0: off."""
    ranker_max_replicas: int | None = Field(None, ge=1)
    """Cap on ranker gangs, replacing both the policy's and the profile's (None: the smaller
    of the two). Capacity planning: how many gangs a load needs beyond the production cap."""
    deadline_ms: float | None = Field(None, gt=0)
    """The ingress request deadline (``routing.deadline_ms``; None: keep the profile's). With
    a simulated device time the deadline has to leave room for it."""


def _autoscaling(
    base: AutoscalingConfig, policy: AutoscalingPolicy, stage: Stage
) -> AutoscalingConfig:
    sp = policy.stage(stage)
    max_replicas = (
        base.max_replicas if sp.max_replicas is None else min(sp.max_replicas, base.max_replicas)
    )
    min_replicas = base.min_replicas if sp.min_replicas is None else sp.min_replicas
    return base.model_copy(
        update={
            "min_replicas": min(min_replicas, max_replicas),
            "max_replicas": max_replicas,
            "target_ongoing_requests": sp.target_ongoing_requests,
            "upscale_delay_s": policy.upscale_delay_s,
            "downscale_delay_s": policy.downscale_delay_s,
            "look_back_period_s": policy.look_back_period_s,
            "metrics_interval_s": policy.metrics_interval_s,
        }
    )


def experiment_app_config(
    profile: AppConfig, artifacts: str, policy: AutoscalingPolicy, stages: StageOverrides
) -> AppConfig:
    """The profile with only the experiment's non-resource overrides applied."""
    data = profile.model_dump()
    app = AppConfig.model_validate(data)  # a deep copy, validated
    app.artifacts = artifacts
    for name in MODEL_STAGES:
        stage_cfg = getattr(app, name)
        autoscaling = _autoscaling(stage_cfg.autoscaling, policy, name)
        if name == "ranker" and stages.ranker_max_replicas is not None:
            autoscaling = autoscaling.model_copy(
                update={"max_replicas": stages.ranker_max_replicas}
            )
        update: dict[str, Any] = {"autoscaling": autoscaling}
        if stages.torch_threads is not None:
            update["torch_threads"] = stages.torch_threads
        batch = stages.max_batch_size
        if name == "ranker" and stages.ranker_max_batch_size is not None:
            batch = stages.ranker_max_batch_size
        if batch is not None:
            update["max_batch_size"] = batch
            # keep the profile's effective back-pressure (it derives from the batch size)
            update["max_ongoing_requests"] = max(stage_cfg.ongoing, batch)
        if name == "ranker" and stages.ranker_device_ms:
            update["fault_delay_ms"] = stages.ranker_device_ms
        setattr(app, name, stage_cfg.model_copy(update=update))
    if stages.deadline_ms is not None:
        app.routing = app.routing.model_copy(update={"deadline_ms": stages.deadline_ms})
    app.ingress = app.ingress.model_copy(
        update={"autoscaling": _autoscaling(app.ingress.autoscaling, policy, "ingress")}
    )
    return AppConfig.model_validate(app.model_dump())


def _flatten(data: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    if isinstance(data, dict):
        for key, value in data.items():
            yield from _flatten(value, f"{prefix}.{key}" if prefix else str(key))
    else:
        yield prefix, data


def config_diff(before: AppConfig, after: AppConfig) -> list[tuple[str, Any, Any]]:
    """``(path, before, after)`` for every field that differs, e.g.
    ``("ranker.torch_threads", 4, 1)``."""
    old = dict(_flatten(before.model_dump(mode="json")))
    new = dict(_flatten(after.model_dump(mode="json")))
    return [
        (k, old.get(k), new.get(k)) for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)
    ]
