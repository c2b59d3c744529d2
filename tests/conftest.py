"""Fixtures shared by every tier: a tiny but complete artifact, built once per session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from deployments.serve_main import apply_local_serve_env

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# The tests' Ray instances run with the local default's Serve settings (slow-machine proxy
# timeouts, throughput-optimised mode, direct ingress); Ray reads them in the controller and
# replicas, which inherit this environment through the local raylet.
apply_local_serve_env()

from recsys.config import BuildConfig, DataConfig, IndexConfig, RankerConfig  # noqa: E402


def tiny_build_config(seed: int = 0) -> BuildConfig:
    """A world small enough to build in well under a minute on 2 cores."""
    return BuildConfig(
        data=DataConfig(
            n_items=1500,
            n_shoppers=400,
            n_queries=120,
            labels_per_query=20,
            days=30,
            test_days=5,
            sessions_per_shopper=8,
            seed=seed,
        ),
        index=IndexConfig(kind="auto", tune_queries=100),
        ranker=RankerConfig(
            emb_dim=16, hidden=64, hidden2=32, epochs=3, batch_size=256, train_window_days=15
        ),
    )


@pytest.fixture(scope="session")
def tiny_artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Path of a complete artifact directory (data, embeddings, index, ranker, manifest)."""
    from recsys.build import build_artifacts

    out = tmp_path_factory.mktemp("artifacts") / "tiny"
    build_artifacts(tiny_build_config(), out, progress=False)
    return out
