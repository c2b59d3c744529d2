"""The fused topology's in-process stages (``recsys.fused``) without Ray: loaded from an
artifact, warmed up, run on their worker thread by the orchestrator, they answer as the
in-process pipeline does."""

from __future__ import annotations

import asyncio
from pathlib import Path

from recsys.artifacts import Artifact
from recsys.catalog import Catalog
from recsys.config import AppConfig, IngressConfig, TopologyConfig
from recsys.fused import FusedStages, stage_workers, threads_for
from recsys.orchestrator import Answer, Job, Orchestrator
from recsys.pipeline import Pipeline
from recsys.request import prepare
from recsys.routing import RoutingPolicy
from recsys.stages import StageSet


def test_threads_follow_the_replicas_cpus() -> None:
    assert [threads_for(c) for c in (0.25, 1.0, 1.9, 4.0)] == [1, 1, 1, 4]


def test_one_stage_thread_per_group_in_flight_at_most_one_per_core() -> None:
    assert [stage_workers(g, cores=2) for g in (1, 2, 4, 256)] == [1, 2, 2, 2]
    assert stage_workers(3, cores=8) == 3


def test_only_the_stages_the_topology_puts_in_the_ingress_are_loaded(
    tiny_artifact: Path,
) -> None:
    artifact = Artifact.open(str(tiny_artifact))
    split = AppConfig(artifacts=str(tiny_artifact))
    assert FusedStages.load(split, artifact).roles == []
    partial = split.model_copy(
        update={"topology": TopologyConfig(layout="fused", apart=["encoder", "ranker"])}
    )
    stages = FusedStages.load(partial, artifact)
    try:
        assert stages.roles == ["retriever"]
    finally:
        stages.close()


def test_fused_stages_answer_as_the_pipeline_does(tiny_artifact: Path) -> None:
    config = AppConfig(
        artifacts=str(tiny_artifact),
        topology=TopologyConfig(layout="fused"),
        ingress=IngressConfig(num_cpus=1, group_max_size=4),
    )
    artifact = Artifact.open(config.artifacts)
    stages = FusedStages.load(config, artifact)
    try:
        stages.warm_up(artifact, config.retrieval.n_candidates, config.ingress.group_max_size)
        assert stages.roles == ["encoder", "retriever", "ranker"]
        assert stages.encoder is not None and stages.retriever is not None
        catalog = Catalog.from_artifact(artifact)
        policy = RoutingPolicy(config.routing)
        orchestrator = Orchestrator(
            StageSet(stages.encoder, stages.retriever, dict(stages.rankers)),
            policy,
            catalog,
            artifact.version,
            config.retrieval.n_candidates,
        )
        requests = [
            prepare("search", catalog, policy, 5, query="desk lamp"),
            prepare("search", catalog, policy, 5, query="desk lamp", user_id="U0000003"),
            prepare("similar", catalog, policy, 5, item_id="I0000002"),
        ]

        async def run() -> list[Answer]:
            jobs = [Job(p, policy.new_deadline()) for p in requests]
            answers = await orchestrator.run_group(jobs)
            assert all(isinstance(a, Answer) for a in answers), answers
            return [a for a in answers if isinstance(a, Answer)]

        fused = asyncio.run(run())
        # the in-process pipeline over the same objects, its stages inline
        rankers = {name: local.ranker for name, local in stages.rankers.items()}
        pipeline = Pipeline(
            artifact,
            config,
            stages.encoder.encoder,
            stages.retriever.retriever,
            rankers,
            catalog,
        )
        expected = pipeline.run(requests)
        for got, want in zip(fused, expected, strict=True):
            assert not got.response.degraded
            assert [i.item_id for i in got.response.items] == [i.item_id for i in want.items]
        assert stages.encoder.served == 2 and stages.retriever.served == 3  # queries, requests
    finally:
        stages.close()
