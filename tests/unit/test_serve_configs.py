"""The committed Serve configs: current, valid for Serve's own schema, typed args."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from ray.serve.schema import ServeDeploySchema

from deployments.profiles import profile as get_profile
from deployments.serve_config import (
    DEPLOYMENT_SECTIONS,
    SERVE_OPTIONS,
    app_config_from_serve_config,
    serve_config,
)
from recsys.config import with_layout
from scripts.serve_configs import app_config, render

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("profile", ["local", "gpu", "local-split"])
def test_committed_config_is_current(profile: str) -> None:
    path = ROOT / "deployments" / "configs" / f"{profile}.yaml"
    assert path.read_text() == render(profile), (
        f"{path} is stale: run python scripts/serve_configs.py"
    )


@pytest.mark.parametrize("profile", ["local-split", "gpu"])
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


def setting_paths(tree: Any, prefix: tuple[str, ...] = ()) -> set[str]:
    """Dotted paths of a config tree's leaves, Serve's option names read as ours
    (``ray_actor_options.num_cpus`` -> ``num_cpus``, ``autoscaling_config`` -> ``autoscaling``)."""
    if not isinstance(tree, dict) or not tree:
        return {".".join(prefix)}
    paths: set[str] = set()
    for key, value in tree.items():
        name = {"autoscaling_config": ("autoscaling",), "ray_actor_options": ()}.get(key, (key,))
        paths |= setting_paths(value, prefix + name)
    return paths


@pytest.mark.parametrize("profile", ["local-split", "gpu"])
def test_no_setting_is_written_twice(profile: str) -> None:
    """Serve reads a deployment's options from ``deployments:`` over the builder's: the same
    setting under ``args`` too would be one that silently does nothing when edited."""
    data = yaml.safe_load((ROOT / "deployments" / "configs" / f"{profile}.yaml").read_text())
    (app,) = data["applications"]
    args = app.get("args") or {}
    sections = set()
    for deployment in app["deployments"]:
        section = DEPLOYMENT_SECTIONS.get(deployment["name"].split("_")[0])
        assert section, f"{deployment['name']}: no AppConfig section"
        sections.add(section)
        options = {k: v for k, v in deployment.items() if k != "name"}
        twice = setting_paths(options) & setting_paths(args.get(section) or {})
        assert not twice, f"{deployment['name']}: {sorted(twice)} under deployments and args"
        assert not set(SERVE_OPTIONS) & set(args.get(section) or {})
    assert sections == set(DEPLOYMENT_SECTIONS.values())


def test_the_twice_check_sees_a_setting_in_both_places() -> None:
    options = {"ray_actor_options": {"num_cpus": 1}, "autoscaling_config": {"max_replicas": 2}}
    args = {"num_cpus": 1, "autoscaling": {"max_replicas": 2}, "max_batch_size": 8}
    assert setting_paths(options) & setting_paths(args) == {"num_cpus", "autoscaling.max_replicas"}


@pytest.mark.parametrize("profile", ["local-split", "gpu"])
def test_config_reads_back_as_the_profile(profile: str) -> None:
    """``args`` plus the deployments' options are the whole app: read back, it rebuilds the file."""
    data = yaml.safe_load((ROOT / "deployments" / "configs" / f"{profile}.yaml").read_text())
    app = app_config_from_serve_config(data)
    assert serve_config(app) == data
    expected = app_config(profile)
    for section in DEPLOYMENT_SECTIONS.values():
        for field in ("num_cpus", "max_queued_requests", "autoscaling"):
            assert getattr(getattr(app, section), field) == getattr(
                getattr(expected, section), field
            ), f"{section}.{field}"


def test_editing_a_deployment_option_changes_the_app() -> None:
    data = serve_config(with_layout(get_profile("local"), "split"))
    (encoder,) = [d for d in data["applications"][0]["deployments"] if d["name"] == "QueryEncoder"]
    encoder["autoscaling_config"]["max_replicas"] = 5
    encoder["ray_actor_options"]["num_cpus"] = 0.5
    app = app_config_from_serve_config(data)
    assert app.query_encoder.autoscaling.max_replicas == 5
    assert app.query_encoder.num_cpus == 0.5


def test_the_local_config_is_fused_and_deploys_only_the_ingress_with_the_stages_cpus() -> None:
    data = yaml.safe_load((ROOT / "deployments" / "configs" / "local.yaml").read_text())
    ServeDeploySchema.model_validate(data)
    (app,) = data["applications"]
    assert [d["name"] for d in app["deployments"]] == ["Ingress"]
    assert app["args"]["topology"] == {"layout": "fused"}
    config = app_config_from_serve_config(data)
    split = app_config("local-split")
    assert config.topology.in_ingress("ranker") and split.topology.layout == "split"
    stages = split.query_encoder.num_cpus + split.retriever.num_cpus + split.ranker.num_cpus
    assert config.ingress.num_cpus == pytest.approx(split.ingress.num_cpus + stages)
    assert serve_config(config) == data  # reads back as itself
    # each replica batches a whole ingress group per stage, as the split stages do
    assert config.ingress.group_max_size == split.ingress.group_max_size


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("num_cpus", 0.75),
        ("num_gpus", 0.5),
        ("max_ongoing_requests", 40),
        ("max_queued_requests", 99),
        ("health_check_period_s", 7.0),
        ("autoscaling", {"max_replicas": 3, "target_ongoing_requests": 5}),
    ],
)
def test_each_serve_owned_field_is_a_serve_option(field: str, value: Any) -> None:
    """Changing one of :data:`SERVE_OPTIONS` changes the retriever's deployment options and
    nothing under ``args``."""
    assert field in SERVE_OPTIONS
    base = app_config("local-split")
    changed = base.model_copy(
        update={
            "retriever": base.retriever.model_validate(
                {**base.retriever.model_dump(), field: value}
            )
        }
    )
    before, after = serve_config(base), serve_config(changed)
    (app_before,), (app_after,) = before["applications"], after["applications"]
    assert app_before["args"] == app_after["args"]

    def retriever(app: dict[str, Any]) -> dict[str, Any]:
        return next(d for d in app["deployments"] if d["name"] == "Retriever")

    assert retriever(app_before) != retriever(app_after)


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
