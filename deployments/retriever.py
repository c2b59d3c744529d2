"""Retriever deployment: batched FAISS candidate generation."""

from __future__ import annotations

import asyncio
import time

import numpy as np
from ray import serve

from deployments.metrics import stage_metrics
from recsys.artifacts import Artifact
from recsys.config import AppConfig
from recsys.retrieval import Retriever
from recsys.types import Candidates, RetrievalRequest

EncodedQuery = tuple[np.ndarray, float]  # what the encoder returns: (vector, encode_ms)


@serve.deployment
class RetrieverDeployment:
    """``retrieve(request, encoded) -> (candidates, stage_ms)``.

    ``encoded`` is the encoder's output (or None): the ingress passes the encoder's response
    straight in, so the query vector travels encoder -> retriever without a round trip through
    the ingress.
    """

    def __init__(self, config: AppConfig):
        import torch

        torch.set_num_threads(config.retriever.torch_threads)
        import faiss

        faiss.omp_set_num_threads(config.retriever.torch_threads)
        artifact = Artifact.open(config.artifacts, config.cache_dir)
        self.retriever = Retriever.from_artifact(artifact, config.retrieval)
        self.version = artifact.version
        self.fault_delay_s = config.retriever.fault_delay_ms / 1000.0
        self.metrics = stage_metrics()
        self.retrieve.set_max_batch_size(config.retriever.max_batch_size)
        self.retrieve.set_batch_wait_timeout_s(config.retriever.batch_wait_timeout_s)

    @serve.batch
    async def retrieve(
        self, requests: list[RetrievalRequest], encoded: list[EncodedQuery | None]
    ) -> list[tuple[Candidates, dict[str, float]]]:
        started = time.perf_counter()
        if self.fault_delay_s:
            await asyncio.sleep(self.fault_delay_s)
        for req, enc in zip(requests, encoded, strict=True):
            if enc is not None:
                req.query_vec = enc[0]
        candidates = self.retriever.retrieve(requests)
        ms = (time.perf_counter() - started) * 1000.0
        self.metrics.batch_size.observe(len(requests), tags={"stage": "retrieve"})
        self.metrics.stage_latency.observe(ms, tags={"stage": "retrieve"})
        return [
            (c, {"retrieve": ms, **({"encode": enc[1]} if enc is not None else {})})
            for c, enc in zip(candidates, encoded, strict=True)
        ]
