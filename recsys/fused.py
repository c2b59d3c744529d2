"""The stages inside an ingress replica: the fused topology (``topology.layout: fused``).

The ingress already coalesces concurrent requests into groups (``recsys.coalesce``); with the
stages in its own process each group is one batch per stage, with no hop between processes.
The stage work is CPU-bound, so it runs in worker threads of the replica
(``recsys.stages.run_in``): the event loop keeps accepting, and shedding, requests while torch
computes. One worker thread per group the ingress lets into the chain at once
(``ingress.groups_in_flight``), at most one per core of the machine (``stage_workers``), so
the groups in flight compute side by side instead of queueing behind one thread: torch and
FAISS release the GIL while they compute (the encoder best as a TorchScript graph,
``encoder.graph: traced``: eager, it takes the GIL back after every operator, and waits for
it behind the event loop and the other stage thread). Each call uses the torch / FAISS threads the
replica's CPUs allow (``threads_for``); the parallelism is across groups, not inside a call.

Why not one thread: a replica reached directly (Serve's direct ingress: each ingress replica
serves HTTP on a port of its own, and a client or load balancer that knows one port sends
everything there) then computes on one core however many the machine has, and fails its
latency objective with the other core idle.

The model stack is imported here, when a replica loads its stages, never by the ingress
module itself.
"""

from __future__ import annotations

import math
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from recsys.artifacts import Artifact
from recsys.config import AppConfig, StageRole
from recsys.stages import LocalEncoder, LocalRanker, LocalRetriever, run_in
from recsys.warmup import (
    WarmupCatalog,
    encoder_warmup_batches,
    rank_batches,
    retrieval_batches,
    run_batches,
    served_batch_sizes,
)


def threads_for(num_cpus: float) -> int:
    """torch / FAISS threads for a replica with ``num_cpus`` logical CPUs (at least one)."""
    return max(1, math.floor(num_cpus))


def machine_cores() -> int:
    """Cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def stage_workers(groups_in_flight: int, cores: int | None = None) -> int:
    """Worker threads of a replica's in-process stages: one per group in flight, at most one
    per core (more would only take turns on the same cores)."""
    return max(1, min(groups_in_flight, machine_cores() if cores is None else cores))


@dataclass
class FusedStages:
    """The in-process stages of one ingress replica (those the topology puts there)."""

    encoder: LocalEncoder | None = None
    retriever: LocalRetriever | None = None
    rankers: dict[str, LocalRanker] = field(default_factory=dict)
    executor: ThreadPoolExecutor | None = None

    @classmethod
    def load(cls, config: AppConfig, artifact: Artifact) -> FusedStages:
        """Build the stages ``config.topology`` puts in the ingress, for ``artifact``."""
        topology = config.topology
        roles: list[StageRole] = [
            r for r in ("encoder", "retriever", "ranker") if topology.in_ingress(r)
        ]
        if not roles:
            return cls()
        import faiss
        import torch

        threads = threads_for(config.ingress.num_cpus)
        torch.set_num_threads(threads)
        faiss.omp_set_num_threads(threads)
        executor = ThreadPoolExecutor(
            max_workers=stage_workers(config.ingress.groups_in_flight),
            thread_name_prefix="stages",
        )
        runner = run_in(executor)
        stages = cls(executor=executor)
        if "encoder" in roles:
            from recsys.encoder import QueryEncoder

            enc_config = config.encoder.model_copy(update={"num_threads": threads})
            stages.encoder = LocalEncoder(
                QueryEncoder(enc_config), config.encoder.cache_size, runner
            )
        if "retriever" in roles:
            from recsys.retrieval import Retriever

            retriever = Retriever.from_artifact(artifact, config.retrieval)
            stages.retriever = LocalRetriever(retriever, runner)
        if "ranker" in roles:
            from recsys.ranking import CandidateRanker

            for variant in config.routing.variants:
                source = (
                    Artifact.open(variant.artifacts, config.cache_dir)
                    if variant.artifacts
                    else artifact
                )
                ranker = CandidateRanker.from_artifact(source)
                stages.rankers[variant.name] = LocalRanker(ranker, runner)
        return stages

    @property
    def roles(self) -> list[str]:
        return [
            role
            for role, present in (
                ("encoder", self.encoder),
                ("retriever", self.retriever),
                ("ranker", self.rankers),
            )
            if present
        ]

    def warm_up(self, artifact: Artifact, n_candidates: int, max_group: int) -> None:
        """Each in-process stage at every group size it will see (``recsys.warmup``), on one
        of the stages' own threads (torch's thread pools start there)."""
        if self.executor is None:
            return
        self.executor.submit(self._warm_up, artifact, n_candidates, max_group).result()

    def _warm_up(self, artifact: Artifact, n_candidates: int, max_group: int) -> None:
        sizes = served_batch_sizes(max_group)
        catalog = WarmupCatalog.from_artifact(artifact)
        if self.encoder is not None:
            run_batches(self.encoder.encoder.encode, encoder_warmup_batches(sizes))
        if self.retriever is not None:
            retriever = self.retriever.retriever
            batches = retrieval_batches(catalog, retriever.dim, n_candidates, sizes)
            run_batches(retriever.retrieve, batches)
        for ranker in self.rankers.values():
            run_batches(ranker.ranker.score, rank_batches(catalog, n_candidates, sizes))

    def served(self) -> dict[str, Any]:
        """Requests each in-process stage has served (for ``/readyz``)."""
        out: dict[str, Any] = {}
        if self.encoder is not None:
            out["encoder"] = self.encoder.served
        if self.retriever is not None:
            out["retriever"] = self.retriever.served
        for name, ranker in self.rankers.items():
            out[f"ranker:{name}"] = ranker.served
        return out

    def close(self) -> None:
        if self.executor is not None:
            self.executor.shutdown(wait=False, cancel_futures=True)
