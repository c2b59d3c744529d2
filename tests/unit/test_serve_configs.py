"""The committed Serve configs: current, valid for Serve's own schema, typed args."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from ray.serve.schema import ServeDeploySchema

from deployments.serve_config import app_config_from_serve_config
from scripts.serve_configs import render

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("profile", ["local", "gpu"])
def test_committed_config_is_current(profile: str) -> None:
    path = ROOT / "deployments" / "configs" / f"{profile}.yaml"
    assert path.read_text() == render(profile), (
        f"{path} is stale: run python scripts/serve_configs.py"
    )


@pytest.mark.parametrize("profile", ["local", "gpu"])
def test_config_parses_as_serve_schema_with_typed_args(profile: str) -> None:
    data = yaml.safe_load((ROOT / "deployments" / "configs" / f"{profile}.yaml").read_text())
    schema = ServeDeploySchema.model_validate(data)
    app = schema.applications[0]
    assert app.import_path == "deployments.app:build_app"
    config = app_config_from_serve_config(data)
    names = {d.name for d in app.deployments}
    assert {"Ingress", "QueryEncoder", "Retriever", "Ranker"} <= names
    for d in app.deployments:
        assert d.autoscaling_config, f"{d.name} has no autoscaling_config"
        assert d.max_queued_requests and d.max_queued_requests > 0
    stages = {d.name: d for d in app.deployments}
    for name, stage in (("QueryEncoder", config.query_encoder), ("Ranker", config.ranker)):
        assert stages[name].max_ongoing_requests >= stage.max_batch_size  # batches can fill
    if profile == "gpu":
        assert 0 < stages["QueryEncoder"].ray_actor_options.num_gpus < 1
        assert 0 < stages["Retriever"].ray_actor_options.num_gpus < 1
        bundles = stages["Ranker"].placement_group_bundles
        assert len(bundles) == config.topology.tp >= 2
        assert all(b["GPU"] == 1 for b in bundles)
        assert stages["Ranker"].placement_group_strategy == "STRICT_PACK"
    else:
        assert all(not d.ray_actor_options.num_gpus for d in app.deployments)


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, False),
        ({"RAY_SERVE_THROUGHPUT_OPTIMIZED": "1"}, True),  # on by default in that mode
        ({"RAY_SERVE_THROUGHPUT_OPTIMIZED": "1", "RAY_SERVE_ENABLE_DIRECT_INGRESS": "0"}, False),
        ({"RAY_SERVE_ENABLE_DIRECT_INGRESS": "1"}, True),
    ],
)
def test_direct_ingress_follows_rays_rule(env: dict[str, str], expected: bool) -> None:
    from deployments.serve_main import LOCAL_SERVE_ENV, direct_ingress_enabled

    assert direct_ingress_enabled(env) is expected
    assert direct_ingress_enabled(LOCAL_SERVE_ENV)  # the local default serves it
