"""The Ray-specific part of the model-parallel ranker: ranks 1..tp-1 as actors in the replica's
placement group.

Serve reserves a ranker replica's whole gang through ``placement_group_bundles`` (one bundle per
rank, ``STRICT_PACK`` so a gang shares a node). The replica itself runs in bundle 0 as rank 0;
here it starts one actor per other bundle, each running ``recsys.ranker.sharded.serve_rank``.
When any of them exits or dies, ``alive()`` turns false, the replica's ``check_health`` fails
and Serve replaces the whole gang (the placement group goes with the replica).
"""

from __future__ import annotations

import logging
import os

import ray
import torch
from ray.util.placement_group import get_current_placement_group
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

from recsys import layout
from recsys.artifacts import Artifact
from recsys.config import AppConfig
from recsys.ranker.launch import free_port
from recsys.ranker.sharded import GangExecutor, RankSetup, serve_rank
from recsys.ranker.sharding import plan_sharding
from recsys.ranker.weights import read_meta

log = logging.getLogger(__name__)


@ray.remote(max_concurrency=2)
class RankWorker:
    """Hosts one non-zero rank; ``run`` blocks until rank 0 broadcasts stop."""

    def run(self, setup: RankSetup) -> int:
        serve_rank(setup)
        return setup.rank

    def pid(self) -> int:
        return os.getpid()


class RayActorLauncher:
    """``WorkerLauncher`` over Ray actors pinned to the current placement group's bundles.

    Each rank's actor takes its bundle's CPUs and GPUs: the deployment's
    ``placement_group_bundles`` (in a serve config, its ``deployments:`` entry) are the one
    source of the gang's resources."""

    def __init__(self) -> None:
        self.actors: list[ray.actor.ActorHandle] = []
        self.runs: list[ray.ObjectRef] = []

    def start(self, setups: list[RankSetup]) -> None:
        pg = get_current_placement_group()
        if pg is None:
            raise RuntimeError(
                "a model-parallel ranker replica must run in a placement group: deploy it with "
                "placement_group_bundles (deployments.app.ranker_options does this for tp > 1)"
            )
        for setup in setups:
            bundle = pg.bundle_specs[setup.rank]
            actor = RankWorker.options(  # type: ignore[attr-defined]  # @ray.remote's class
                num_cpus=bundle.get("CPU", 0),
                num_gpus=bundle.get("GPU", 0),
                scheduling_strategy=PlacementGroupSchedulingStrategy(
                    placement_group=pg,
                    placement_group_bundle_index=setup.rank,
                    placement_group_capture_child_tasks=False,
                ),
            ).remote()
            self.actors.append(actor)
            self.runs.append(actor.run.remote(setup))

    def alive(self) -> bool:
        if not self.runs:
            return True
        done, _ = ray.wait(self.runs, num_returns=1, timeout=0)
        return not done  # a run that returned or raised means its rank is gone

    def worker_pids(self) -> list[int]:
        return ray.get([a.pid.remote() for a in self.actors], timeout=10)

    def stop(self, timeout_s: float) -> None:
        if self.runs:
            ray.wait(self.runs, num_returns=len(self.runs), timeout=timeout_s)
        for actor in self.actors:
            ray.kill(actor, no_restart=True)


def end_this_replica(reason: str) -> None:
    """Kill the replica's own actor (no restart): Serve sees it die, stops routing to it and
    starts a replacement; its rank actors die with it (they are its children)."""
    log.error("ending this ranker replica: %s", reason)
    try:
        ray.kill(ray.get_runtime_context().current_actor, no_restart=True)
    except Exception:  # pragma: no cover - the kill itself failed: leave the hard way
        log.exception("ray.kill of this replica failed; exiting the process")
        os._exit(1)


def start_gang_executor(artifact: Artifact, config: AppConfig) -> GangExecutor:
    """Plan the shards, start ranks 1..tp-1 as actors, and join as rank 0."""
    topo = config.topology
    meta = read_meta(artifact.path(layout.RANKER_META))
    plan = plan_sharding(meta.spec, topo.tp, topo.dtype, topo.rank_device_memory_gb)
    # the GPUs Ray gave this replica (its deployment's options), not the AppConfig's num_gpus:
    # a serve config holds Serve's options in `deployments:` only
    cuda = bool(ray.get_gpu_ids()) and torch.cuda.is_available()
    if not cuda and topo.dtype != "fp32":
        raise ValueError(f"topology.dtype={topo.dtype} needs GPUs; use fp32 on CPU")
    host = ray.util.get_node_ip_address()
    return GangExecutor(
        artifact.path(layout.RANKER_WEIGHTS),
        plan,
        RayActorLauncher(),
        init_method=f"tcp://{host}:{free_port(host)}",
        device="cuda" if cuda else "cpu",
        timeout_s=topo.timeout_s,
    )
