"""Typed configs: unknown keys, cross-field rules, hashing."""

import pytest
from pydantic import ValidationError

from recsys.config import AppConfig, BuildConfig, DataConfig, StageConfig


def test_unknown_keys_are_refused() -> None:
    with pytest.raises(ValidationError, match="extra"):
        AppConfig.model_validate({"artifacts": "x", "ranker": {"max_batch_sise": 8}})


def test_batch_must_fit_in_ongoing_requests() -> None:
    with pytest.raises(ValidationError, match="batches could never fill"):
        StageConfig(max_batch_size=16, max_ongoing_requests=8)
    assert StageConfig(max_batch_size=16).ongoing == 32


def test_split_rule() -> None:
    with pytest.raises(ValidationError, match="test_days"):
        DataConfig(days=10, test_days=10)


def test_config_hash_is_stable_and_content_based() -> None:
    a, b = AppConfig(), AppConfig()
    assert a.config_hash() == b.config_hash()
    b.retrieval.n_candidates = 300
    assert a.config_hash() != b.config_hash()


def test_field_docstrings_become_descriptions() -> None:
    assert "catalog" in (DataConfig.model_fields["n_items"].description or "")
    assert BuildConfig().data.n_items >= 50_000


def test_app_config_from_yaml(tmp_path) -> None:
    path = tmp_path / "app.yaml"
    path.write_text("artifacts: /tmp/a\nrouting:\n  deadline_ms: 250\n")
    cfg = AppConfig.from_file(path)
    assert cfg.artifacts == "/tmp/a" and cfg.routing.deadline_ms == 250


def test_topology_layout_says_which_stages_run_in_the_ingress() -> None:
    from recsys.config import TopologyConfig

    split = TopologyConfig()
    assert split.layout == "split" and not any(
        split.in_ingress(s) for s in ("encoder", "retriever", "ranker")
    )
    partial = TopologyConfig(layout="fused", apart=["ranker"])
    assert partial.in_ingress("encoder") and partial.in_ingress("retriever")
    assert not partial.in_ingress("ranker")
    with pytest.raises(ValidationError, match="needs a deployment of its own"):
        TopologyConfig(layout="fused", tp=2)
    with pytest.raises(ValidationError, match="only applies to layout 'fused'"):
        TopologyConfig(apart=["ranker"])


def test_with_layout_moves_the_stages_cpus_into_the_ingress() -> None:
    from recsys.config import IngressConfig, TopologyConfig, with_layout

    config = AppConfig(
        ingress=IngressConfig(num_cpus=0.5),
        query_encoder=StageConfig(num_cpus=0.25),
        retriever=StageConfig(num_cpus=0.25),
        ranker=StageConfig(num_cpus=1.0),
    )
    fused = with_layout(config, "fused")
    assert fused.topology.layout == "fused" and fused.topology.apart == []
    assert fused.ingress.num_cpus == 2.0
    assert with_layout(fused, "fused") is fused
    back = with_layout(fused, "split")
    assert back.topology == TopologyConfig() and config.topology.layout == "split"
    assert back.ingress.num_cpus == 0.5
    gang = with_layout(config.model_copy(update={"topology": TopologyConfig(tp=2)}), "fused")
    assert gang.topology.apart == ["ranker"] and gang.ingress.num_cpus == 1.0
