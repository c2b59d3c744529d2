"""Retriever deployment: batched FAISS candidate generation.

The replica warms up in ``__init__`` (every retrieval path at every served batch size), so
Serve routes nothing to it before its index has been searched."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from ray import serve

from deployments.metrics import stage_metrics
from deployments.readiness import deployment_name, finish_cold_start, replica_id
from recsys.artifacts import Artifact
from recsys.config import AppConfig
from recsys.retrieval import Retriever
from recsys.stages import (
    EncodedGroup,
    QueryRows,
    Retrieved,
    split_by_sizes,
    with_query_vectors,
)
from recsys.types import RetrievalRequest
from recsys.warmup import (
    ARTIFACT_OPEN,
    LOAD,
    WARMUP,
    ColdStart,
    WarmupCatalog,
    retrieval_batches,
    run_batches,
    served_batch_sizes,
    stage_report,
)


@serve.deployment
class RetrieverDeployment:
    """``retrieve(requests, encoded, query_rows) -> [Retrieved] per request``.

    Each call is one group of requests from the ingress. ``encoded`` is the encoder's answer
    for the group's queries (or None when none has a query), passed in by the ingress as a
    response (Serve resolves it, see ``recsys.orchestrator``); ``query_rows[i]`` is request
    i's row in it (None: no query vector from the encoder). The requests are not modified.
    """

    def __init__(self, config: AppConfig):
        import torch

        torch.set_num_threads(config.retriever.torch_threads)
        import faiss

        faiss.omp_set_num_threads(config.retriever.torch_threads)
        self.cold = ColdStart(deployment_name("Retriever"))
        with self.cold.phase(ARTIFACT_OPEN):
            artifact = Artifact.open(config.artifacts, config.cache_dir)
        with self.cold.phase(LOAD):
            self.retriever = Retriever.from_artifact(artifact, config.retrieval)
        self.version = artifact.version
        self.fault_delay_s = config.retriever.fault_delay_ms / 1000.0
        self.metrics = stage_metrics()
        self.retrieve.set_max_batch_size(config.retriever.max_batch_size)
        self.retrieve.set_batch_wait_timeout_s(config.retriever.batch_wait_timeout_s)
        self.served = 0
        with self.cold.phase(WARMUP):
            batches = retrieval_batches(
                WarmupCatalog.from_artifact(artifact),
                self.retriever.dim,
                config.retrieval.n_candidates,
                served_batch_sizes(config.retriever.max_batch_size),
            )
            run_batches(self.retriever.retrieve, batches)
        finish_cold_start(self.cold)

    @serve.batch
    async def retrieve(
        self,
        groups: list[list[RetrievalRequest]],
        encoded: list[EncodedGroup | None],
        query_rows: list[QueryRows],
    ) -> list[list[Retrieved]]:
        started = time.perf_counter()
        if self.fault_delay_s:
            await asyncio.sleep(self.fault_delay_s)
        flat: list[RetrievalRequest] = []
        so_far: list[dict[str, float]] = []
        for requests, enc, rows in zip(groups, encoded, query_rows, strict=True):
            ready, timings = with_query_vectors(requests, enc, rows)
            flat.extend(ready)
            so_far.extend(timings)
        self.served += len(flat)
        candidates = self.retriever.retrieve(flat)
        ms = (time.perf_counter() - started) * 1000.0
        self.metrics.batch_size.observe(len(flat), tags={"stage": "retrieve"})
        self.metrics.stage_latency.observe(ms, tags={"stage": "retrieve"})
        answers = [
            Retrieved(c, {**t, "retrieve": ms}) for c, t in zip(candidates, so_far, strict=True)
        ]
        return split_by_sizes(answers, groups)

    def readiness(self) -> dict[str, Any]:
        """This replica's readiness and cold start (``recsys.warmup.stage_report``)."""
        return stage_report(
            self.cold.stage,
            self.cold,
            warm=True,
            version=self.version,
            served=self.served,
            replica=replica_id(),
        )
