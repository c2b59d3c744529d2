"""Ranker deployment: batched scoring, single device or a model-parallel gang."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from ray import serve

from deployments.metrics import stage_metrics
from deployments.readiness import deployment_name, finish_cold_start, replica_id
from recsys.artifacts import Artifact
from recsys.config import AppConfig
from recsys.ranking import CandidateRanker
from recsys.stages import Ranked, Retrieved, rank_requests, split_by_sizes
from recsys.types import RankQuery, RankRequest
from recsys.warmup import (
    ARTIFACT_OPEN,
    GANG_START,
    LOAD,
    WARMUP,
    ColdStart,
    WarmupCatalog,
    rank_batches,
    run_batches,
    served_batch_sizes,
    stage_report,
)


@serve.deployment
class RankerDeployment:
    """``rank(queries, retrieved, picks) -> [Ranked]``, batched.

    Each call is one group of requests from the ingress. ``retrieved`` is the retriever's
    answer for the group, which the ingress passes in as a response (Serve resolves it, see
    ``recsys.orchestrator``); candidates come back with the scores for the final top-k.

    With ``topology.tp > 1`` the replica is rank 0 of a gang whose other ranks are Ray actors
    in the replica's placement group (see ``deployments.gang``).

    The replica warms up in ``__init__``: one forward per served batch size, in which every
    rank of the gang takes part, so Serve routes nothing to it before the gang has run.
    """

    def __init__(self, config: AppConfig, variant: str, artifacts: str):
        import torch

        torch.set_num_threads(config.ranker.torch_threads)
        self.variant = variant
        self.tp = config.topology.tp
        self.fault_delay_s = config.ranker.fault_delay_ms / 1000.0
        self.cold = ColdStart(deployment_name("Ranker"))
        with self.cold.phase(ARTIFACT_OPEN):
            artifact = Artifact.open(artifacts, config.cache_dir)
        self.version = artifact.version
        executor = None
        if self.tp > 1:
            from deployments.gang import start_gang_executor

            with self.cold.phase(GANG_START):
                executor = start_gang_executor(artifact, config)
        with self.cold.phase(LOAD):
            self.ranker = CandidateRanker.from_artifact(artifact, executor=executor)
        self.metrics = stage_metrics()
        self.rank.set_max_batch_size(config.ranker.max_batch_size)
        self.rank.set_batch_wait_timeout_s(config.ranker.batch_wait_timeout_s)
        self.served = 0
        with self.cold.phase(WARMUP):
            batches = rank_batches(
                WarmupCatalog.from_artifact(artifact),
                config.retrieval.n_candidates,
                served_batch_sizes(config.ranker.max_batch_size),
            )
            run_batches(self.ranker.score, batches)
        self.watchdog = None
        if self.tp > 1:
            from deployments.gang import end_this_replica
            from recsys.ranker.sharded import GangWatchdog

            # a broken gang ends its replica at once rather than after Serve's health checks
            self.watchdog = GangWatchdog(self.ranker.check_health, end_this_replica).start()
        finish_cold_start(self.cold)

    @serve.batch
    async def rank(
        self,
        queries: list[list[RankQuery]],
        retrieved: list[list[Retrieved]],
        picks: list[list[int]],
    ) -> list[list[Ranked]]:
        """Each call is one ingress group: ``retrieved`` is the retriever's answer for the whole
        group (passed in as a response), ``picks`` the positions in it this ranker variant scores,
        in the order of ``queries``. Every call in a batch is scored together."""
        started = time.perf_counter()
        if self.fault_delay_s:
            await asyncio.sleep(self.fault_delay_s)
        requests: list[RankRequest] = []
        stage_ms: list[dict[str, float]] = []
        for group_queries, group, positions in zip(queries, retrieved, picks, strict=True):
            group_requests, group_ms = rank_requests(group_queries, group, positions)
            requests.extend(group_requests)
            stage_ms.extend(group_ms)
        self.served += len(requests)
        scores = self.ranker.score(requests)
        ms = (time.perf_counter() - started) * 1000.0
        self.metrics.batch_size.observe(len(requests), tags={"stage": "rank"})
        self.metrics.stage_latency.observe(ms, tags={"stage": "rank"})
        answers = [
            Ranked(req.candidates, s, {**so_far, "rank": ms})
            for req, s, so_far in zip(requests, scores, stage_ms, strict=True)
        ]
        return split_by_sizes(answers, picks)

    def check_health(self) -> None:
        """Fails when a rank of the gang died or the process group broke: Serve then replaces
        the replica, and with it the placement group and every rank. (The gang's watchdog
        usually ends the replica first, within a quarter second.)"""
        self.ranker.check_health()

    def readiness(self) -> dict[str, Any]:
        """This replica's readiness and cold start (``recsys.warmup.stage_report``); the gang
        is complete while every rank is alive and the process group works."""
        try:
            self.ranker.check_health()
            complete = True
        except Exception:
            complete = False
        return stage_report(
            self.cold.stage,
            self.cold,
            warm=True,
            version=self.version,
            served=self.served,
            replica=replica_id(),
            gang={"tp": self.tp, "complete": complete},
        )

    def gang_pids(self) -> list[int]:
        """Process ids of ranks 1..tp-1 (empty when tp == 1), for operators and drills."""
        launcher = getattr(self.ranker.executor, "launcher", None)
        return launcher.worker_pids() if launcher is not None else []

    def __del__(self) -> None:
        watchdog = getattr(self, "watchdog", None)
        if watchdog is not None:
            watchdog.stop()
        ranker = getattr(self, "ranker", None)
        if ranker is not None:
            ranker.executor.close()
