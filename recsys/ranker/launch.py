"""Starting the non-zero ranks of a gang as local processes (no Ray).

Used by tests, ``recsys plan --measure`` and benchmarks; the Serve deployment starts them as
Ray actors instead (``deployments.gang``).
"""

from __future__ import annotations

import multiprocessing as mp
import socket
from multiprocessing.process import BaseProcess
from pathlib import Path

from recsys.ranker.sharded import GangExecutor, RankSetup, serve_rank
from recsys.ranker.sharding import ShardingPlan


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class ProcessLauncher:
    """Ranks 1..tp-1 as spawned processes on this machine."""

    def __init__(self) -> None:
        self.processes: list[BaseProcess] = []

    def start(self, setups: list[RankSetup]) -> None:
        ctx = mp.get_context("spawn")
        for setup in setups:
            proc = ctx.Process(
                target=serve_rank, args=(setup,), name=f"ranker-rank{setup.rank}", daemon=True
            )
            proc.start()
            self.processes.append(proc)

    def alive(self) -> bool:
        return all(p.is_alive() for p in self.processes)

    def stop(self, timeout_s: float) -> None:
        for p in self.processes:
            p.join(timeout_s)
            if p.is_alive():
                p.terminate()
                p.join(5)


def local_gang(
    weights: Path, plan: ShardingPlan, device: str = "cpu", timeout_s: float = 30.0
) -> GangExecutor:
    """A gang with rank 0 in this process and the others as local processes."""
    return GangExecutor(
        weights,
        plan,
        ProcessLauncher(),
        init_method=f"tcp://127.0.0.1:{free_port()}",
        device=device,
        timeout_s=timeout_s,
    )
