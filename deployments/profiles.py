"""The two committed deployment profiles, as typed configs.

* ``local``: one machine, CPU only (the embedded default): the stages inside the two ingress
  replicas (``topology.layout: fused``); its stage sections are what each stage deployment
  gets in the split topology (``recsys.config.with_layout(config, "split")``).
* ``gpu``: GPU node pools (KubeRay, or the simulated cluster): encoder and retriever share
  one-GPU nodes, ranker replicas are gangs of ``tp`` GPUs on multi-GPU nodes.
"""

from __future__ import annotations

from recsys.config import (
    AppConfig,
    AutoscalingConfig,
    EncoderConfig,
    IngressConfig,
    StageConfig,
    TopologyConfig,
    with_layout,
)

PROFILES = ("local", "gpu")


def local_profile() -> AppConfig:
    def stage(batch: int, max_replicas: int, min_replicas: int = 1) -> StageConfig:
        return StageConfig(
            # logical CPUs (scheduling, not threads): 2 ingress x 0.25 + 6 stage replicas x 0.2
            # leave 0.3 of 2 for a rollout's surge replica
            num_cpus=0.2,
            max_batch_size=batch,
            # no timer: the ingress already sends concurrent requests as one call, and a
            # stage batches whatever calls are queued when it frees up
            batch_wait_timeout_s=0.0,
            max_queued_requests=64,
            autoscaling=AutoscalingConfig(
                min_replicas=min_replicas, max_replicas=max_replicas, target_ongoing_requests=batch
            ),
        )

    split = AppConfig(
        artifacts="artifacts/demo",
        # a TorchScript graph: in the fused topology the encoder shares its process with the
        # ingress's event loop, and eager PyTorch takes the GIL back after every operator
        encoder=EncoderConfig(num_threads=1, graph="traced"),
        # two replicas of every stage: a killed one leaves the other answering (a down encoder
        # or retriever fails the answer; with one ranker, each request waited out the ranker's
        # deadline share until its replacement was up: results/chaos/report.md)
        query_encoder=stage(16, 2, min_replicas=2),
        retriever=stage(16, 2, min_replicas=2),
        ranker=stage(16, 2, min_replicas=2),
        # On 2 cores each hop's fixed CPU cost, not the models, sets the ceiling: send
        # concurrent requests down the chain together (groups grow with the load).
        # (ingress.query_cache_size stays 0: in two runs the app sustained more without it)
        # two ingress replicas: a killed one leaves the other serving (the proxy's retry of
        # requests lost with it needs a live replica to go to; results/chaos/report.md)
        ingress=IngressConfig(
            group_max_size=16,
            groups_in_flight=2,
            autoscaling=AutoscalingConfig(
                min_replicas=2, max_replicas=2, target_ongoing_requests=32
            ),
        ),
    )
    # On 2 cores the hops between stage deployments cost more CPU than batching across
    # requests saves: the stages run inside the ingress replicas (no hop), batched across
    # each replica's request groups, one stage thread per group in flight (recsys.fused)
    return with_layout(split, "fused")


SMALL_POOL = {"pool_gpu_small": 0.001}
"""What a replica asks of the one-GPU pool (its nodes advertise ``pool_gpu_small: 1``,
``k8s/cluster.yaml``): a tag more than a quantity, it keeps encoder, retriever and ingress
replicas off the ranker's multi-GPU nodes, whose GPUs a fraction would strand."""
MULTI_POOL = {"pool_gpu_multi": 0.001}
"""What each rank of a ranker gang asks of the multi-GPU pool."""


def gpu_profile() -> AppConfig:
    def stage(
        cpus: float, gpus: float, batch: int, max_replicas: int, pool: dict[str, float]
    ) -> StageConfig:
        return StageConfig(
            num_cpus=cpus,
            num_gpus=gpus,
            resources=pool,
            max_batch_size=batch,
            batch_wait_timeout_s=0.004,
            max_queued_requests=256,
            torch_threads=4,
            autoscaling=AutoscalingConfig(
                min_replicas=1,
                max_replicas=max_replicas,
                target_ongoing_requests=batch,
                upscale_delay_s=5,
                downscale_delay_s=60,
            ),
        )

    return AppConfig(
        artifacts="s3://recsys-artifacts/demo",
        # fp32 (auto) as a TorchScript graph: on an H200 the traced graph was faster than eager
        # at every query batch size measured (2.3 vs 4.3 ms for one query), with the same
        # embeddings; fp16 moved 1.4% of each query's top 10 (results/gpu/report.md)
        encoder=EncoderConfig(graph="traced"),
        query_encoder=stage(2, 0.5, 64, 8, SMALL_POOL),
        retriever=stage(2, 0.5, 64, 8, SMALL_POOL),
        ranker=stage(4, 1, 64, 4, MULTI_POOL),
        topology=TopologyConfig(tp=2, rank_device_memory_gb=70),
        ingress=IngressConfig(
            num_cpus=1,
            resources=SMALL_POOL,
            max_ongoing_requests=512,
            # each request down the chain on its own (group_max_size 1): the stages' ongoing
            # counts stay request counts, which is what their autoscaling targets mean
            groups_in_flight=512,
            max_queued_requests=1024,
            autoscaling=AutoscalingConfig(
                min_replicas=1, max_replicas=4, target_ongoing_requests=128
            ),
        ),
    )


def profile(name: str) -> AppConfig:
    if name == "local":
        return local_profile()
    if name == "gpu":
        return gpu_profile()
    raise ValueError(f"unknown profile {name!r}; choose from {PROFILES}")
