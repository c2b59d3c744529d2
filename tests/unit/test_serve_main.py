"""What ``recsys serve`` serves: the local profile unless told otherwise, and a Ray instance
with room for every replica."""

from __future__ import annotations

from deployments.profiles import local_profile
from deployments.serve_main import load_app_config, logical_cpus
from recsys.config import AppConfig, with_layout


def test_without_a_config_it_serves_the_local_profile() -> None:
    config = load_app_config(None, None, None)
    assert config == local_profile()
    assert config.topology.layout == "fused"


def test_the_command_line_overrides_the_profile() -> None:
    config = load_app_config(None, "somewhere/else", None, "split")
    assert config.artifacts == "somewhere/else"
    assert config.topology.layout == "split"
    assert config.ingress.num_cpus == with_layout(local_profile(), "split").ingress.num_cpus


def test_a_model_parallel_ranker_leaves_the_fused_ingress_with_its_cpus() -> None:
    profile = local_profile()
    config = load_app_config(None, None, 2)
    assert config.topology.tp == 2 and config.topology.layout == "fused"
    assert config.topology.apart == ["ranker"]
    assert config.ingress.num_cpus == round(profile.ingress.num_cpus - profile.ranker.num_cpus, 3)


def test_ray_offers_room_for_every_replica_and_a_surge() -> None:
    split = with_layout(AppConfig(), "split")
    data = split.model_dump()
    data["topology"]["tp"] = 2
    data["ranker"]["autoscaling"]["max_replicas"] = 3
    config = AppConfig.model_validate(data)
    placed = (
        config.ingress.num_cpus * config.ingress.autoscaling.max_replicas
        + config.query_encoder.num_cpus * config.query_encoder.autoscaling.max_replicas
        + config.retriever.num_cpus * config.retriever.autoscaling.max_replicas
        + config.ranker.num_cpus * 2 * 3  # three gangs of two ranks
    )
    largest = max(
        config.ingress.num_cpus,
        config.query_encoder.num_cpus,
        config.retriever.num_cpus,
        config.ranker.num_cpus * 2,
    )
    assert abs(logical_cpus(config) - (placed + largest)) < 1e-9
