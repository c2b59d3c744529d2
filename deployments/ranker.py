"""Ranker deployment: batched scoring, single device or a model-parallel gang."""

from __future__ import annotations

import asyncio
import time

import numpy as np
from ray import serve

from deployments.metrics import stage_metrics
from recsys.artifacts import Artifact
from recsys.config import AppConfig
from recsys.ranking import CandidateRanker
from recsys.types import Candidates, RankQuery, RankRequest


@serve.deployment
class RankerDeployment:
    """``rank(query, retrieved) -> (candidates, scores, stage_ms)``, batched across requests.

    ``retrieved`` is the retriever's answer ``(candidates, stage_ms)``: the ingress passes the
    retriever's response straight in, so candidates go retriever -> ranker without a round
    trip through the ingress; they come back with the scores for the final top-k.

    With ``topology.tp > 1`` the replica is rank 0 of a gang whose other ranks are Ray actors
    in the replica's placement group (see ``deployments.gang``).
    """

    def __init__(self, config: AppConfig, variant: str, artifacts: str):
        import torch

        torch.set_num_threads(config.ranker.torch_threads)
        self.variant = variant
        self.fault_delay_s = config.ranker.fault_delay_ms / 1000.0
        artifact = Artifact.open(artifacts, config.cache_dir)
        executor = None
        if config.topology.tp > 1:
            from deployments.gang import start_gang_executor

            executor = start_gang_executor(artifact, config)
        self.ranker = CandidateRanker.from_artifact(artifact, executor=executor)
        self.metrics = stage_metrics()
        self.rank.set_max_batch_size(config.ranker.max_batch_size)
        self.rank.set_batch_wait_timeout_s(config.ranker.batch_wait_timeout_s)

    @serve.batch
    async def rank(
        self, queries: list[RankQuery], retrieved: list[tuple[Candidates, dict[str, float]]]
    ) -> list[tuple[Candidates, np.ndarray, dict[str, float]]]:
        started = time.perf_counter()
        if self.fault_delay_s:
            await asyncio.sleep(self.fault_delay_s)
        requests = [RankRequest.of(q, c) for q, (c, _) in zip(queries, retrieved, strict=True)]
        scores = self.ranker.score(requests)
        ms = (time.perf_counter() - started) * 1000.0
        self.metrics.batch_size.observe(len(requests), tags={"stage": "rank"})
        self.metrics.stage_latency.observe(ms, tags={"stage": "rank"})
        return [
            (req.candidates, s, {**stage_ms, "rank": ms})
            for req, s, (_, stage_ms) in zip(requests, scores, retrieved, strict=True)
        ]

    def check_health(self) -> None:
        """Fails when a rank of the gang died or the process group broke: Serve then replaces
        the replica, and with it the placement group and every rank."""
        self.ranker.executor.check_health()

    def gang_pids(self) -> list[int]:
        """Process ids of ranks 1..tp-1 (empty when tp == 1), for operators and drills."""
        launcher = getattr(self.ranker.executor, "launcher", None)
        return launcher.worker_pids() if launcher is not None else []

    def __del__(self) -> None:
        ranker = getattr(self, "ranker", None)
        if ranker is not None:
            ranker.executor.close()
