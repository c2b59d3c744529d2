"""Experiment app configs change the GPU profile only in non-resource arguments."""

from __future__ import annotations

import re

import pytest

from deployments.profiles import gpu_profile
from recsys.experiments.policies import (
    LOCAL_MAX_REPLICAS,
    POLICIES,
    STAGES,
    StageOverrides,
    config_diff,
    experiment_app_config,
    get_policy,
)

ALLOWED = re.compile(
    r"^(artifacts"
    r"|(query_encoder|retriever|ranker)\.(torch_threads|max_batch_size|max_ongoing_requests|fault_delay_ms)"
    r"|routing\.deadline_ms"
    r"|(ingress|query_encoder|retriever|ranker)\.autoscaling\.\w+)$"
)
RESOURCE_FIELDS = ("num_cpus", "num_gpus")


@pytest.mark.parametrize("name", sorted(POLICIES))
def test_only_non_resource_arguments_change(name: str) -> None:
    profile = gpu_profile()
    app = experiment_app_config(
        profile,
        "/data/artifacts",
        get_policy(name),
        StageOverrides(max_batch_size=8, ranker_device_ms=20, deadline_ms=2000),
    )
    diff = config_diff(profile, app)
    assert ("routing.deadline_ms", profile.routing.deadline_ms, 2000.0) in diff
    assert diff, "the experiment changes something"
    assert all(ALLOWED.match(path) for path, _, _ in diff), [
        p for p, _, _ in diff if not ALLOWED.match(p)
    ]
    for stage in ("query_encoder", "retriever", "ranker"):
        for field in RESOURCE_FIELDS:
            assert getattr(getattr(app, stage), field) == getattr(getattr(profile, stage), field)
    assert app.ingress.num_cpus == profile.ingress.num_cpus
    assert app.topology == profile.topology  # tp=2 gangs, as committed


def test_policy_parameters_reach_every_stage() -> None:
    profile = gpu_profile()
    policy = get_policy("reactive")
    app = experiment_app_config(profile, "/a", policy, StageOverrides())
    for stage in STAGES:
        cfg = app.ingress if stage == "ingress" else getattr(app, stage)
        auto = cfg.autoscaling
        assert auto.target_ongoing_requests == policy.stage(stage).target_ongoing_requests
        assert auto.upscale_delay_s == policy.upscale_delay_s
        assert auto.downscale_delay_s == policy.downscale_delay_s
        assert auto.max_replicas == LOCAL_MAX_REPLICAS[stage]
        assert auto.min_replicas == 1
    assert app.ranker.torch_threads == 1 and app.ranker.fault_delay_ms == 0
    assert app.artifacts == "/a"


def test_batch_override_keeps_the_profiles_back_pressure() -> None:
    profile = gpu_profile()
    app = experiment_app_config(
        profile, "/a", get_policy("reactive"), StageOverrides(max_batch_size=4)
    )
    assert app.ranker.max_batch_size == 4
    assert app.ranker.ongoing == profile.ranker.ongoing  # max_ongoing_requests pinned


def test_pinned_policy_is_one_replica_everywhere() -> None:
    app = experiment_app_config(gpu_profile(), "/a", get_policy("pinned"), StageOverrides())
    for stage in STAGES:
        cfg = app.ingress if stage == "ingress" else getattr(app, stage)
        assert cfg.autoscaling.min_replicas == cfg.autoscaling.max_replicas == 1


def test_conservative_is_slower_than_reactive() -> None:
    reactive, conservative = get_policy("reactive"), get_policy("conservative")
    assert conservative.upscale_delay_s > reactive.upscale_delay_s
    assert conservative.downscale_delay_s > reactive.downscale_delay_s
    for stage in STAGES:
        assert (
            conservative.stage(stage).target_ongoing_requests
            > reactive.stage(stage).target_ongoing_requests
        )
    with pytest.raises(ValueError, match="unknown policy"):
        get_policy("yolo")


def test_ranker_cap_can_exceed_the_profile_for_capacity_planning() -> None:
    profile = gpu_profile()
    policy = get_policy("tuned")
    default = experiment_app_config(profile, "/a", policy, StageOverrides())
    raised = experiment_app_config(profile, "/a", policy, StageOverrides(ranker_max_replicas=6))
    assert default.ranker.autoscaling.max_replicas == min(
        LOCAL_MAX_REPLICAS["ranker"], profile.ranker.autoscaling.max_replicas
    )
    assert raised.ranker.autoscaling.max_replicas == 6
    assert raised.query_encoder.autoscaling == default.query_encoder.autoscaling
