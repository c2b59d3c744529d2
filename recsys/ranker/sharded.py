"""Model-parallel execution of the ranker over a ``torch.distributed`` process group.

Every rank builds a :class:`ShardedRanker` holding only its slice of the weights (read lazily
from the safetensors file) and runs the same forward:

1. look up the ids it owns in each table (zeros elsewhere), all-reduce -> full embeddings;
2. replicated cross layers;
3. column-parallel ``fc1`` slice, then the matching row-parallel ``fc2`` slice -> partial
   sums, all-reduce, add the bias once;
4. replicated head.

Rank 0 drives: :class:`GangExecutor` broadcasts each batch to the other ranks, which sit in
:func:`serve_rank` until told to stop. How the other ranks are started is the caller's
business (a :class:`WorkerLauncher`): processes here, Ray actors in the Serve deployment. The
backend is NCCL when the ranks have GPUs, gloo otherwise.

The ranks wait for the next batch's header on a separate gloo control group whose timeout is
a day (:data:`IDLE_WAIT`), not the data group's ``timeout_s``: a gang may sit idle for minutes
(before an announced sale, while the load is low), and a rank waiting on the data group would
time out and end, breaking the gang. A rank 0 that dies closes its connections, so the waiting
ranks still learn of it at once.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Protocol, cast

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from recsys.ranker.errors import GangBrokenError
from recsys.ranker.model import DENSE_FEATURES, SPARSE_FEATURES, CrossNetwork, RankerSpec
from recsys.ranker.sharding import RankShard, ShardingPlan
from recsys.ranker.weights import load_slice, load_tensor

log = logging.getLogger(__name__)

__all__ = ["GangBrokenError", "GangExecutor", "GangWatchdog", "RankSetup", "ShardedRanker"]

OP_STOP, OP_FORWARD = 0, 1
IDLE_WAIT = timedelta(days=1)  # how long a rank waits for the next batch's header
TORCH_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


class ShardedRanker(nn.Module):
    """One rank's part of the ranker."""

    def __init__(self, spec: RankerSpec, shard: RankShard):
        super().__init__()
        self.spec, self.shard = spec, shard
        self.tables = nn.ModuleDict(
            {name: nn.Embedding(b - a, spec.emb_dim) for name, (a, b) in shard.table_rows.items()}
        )
        d = spec.input_dim
        u0, u1 = shard.fc1_units
        self.cross = CrossNetwork(d, spec.cross_layers)
        self.fc1 = nn.Linear(d, u1 - u0)  # column slice
        self.fc2 = nn.Linear(u1 - u0, spec.hidden2, bias=False)  # row slice
        self.fc2_bias = nn.Parameter(torch.zeros(spec.hidden2))
        self.head = nn.Linear(spec.hidden2, 1)

    @classmethod
    def load(cls, weights: Path, spec: RankerSpec, shard: RankShard) -> ShardedRanker:
        """Build the rank's module reading only its own rows/columns from the file."""
        module = cls(spec, shard)
        u0, u1 = shard.fc1_units
        state: dict[str, torch.Tensor] = {}
        for name, (a, b) in shard.table_rows.items():
            state[f"tables.{name}.weight"] = load_slice(weights, f"tables.{name}.weight", 0, a, b)
        state["fc1.weight"] = load_slice(weights, "fc1.weight", 0, u0, u1)
        state["fc1.bias"] = load_slice(weights, "fc1.bias", 0, u0, u1)
        state["fc2.weight"] = load_slice(weights, "fc2.weight", 1, u0, u1)
        state["fc2_bias"] = load_tensor(weights, "fc2.bias")
        for i in range(spec.cross_layers):
            for p in ("weight", "bias"):
                state[f"cross.layers.{i}.{p}"] = load_tensor(weights, f"cross.layers.{i}.{p}")
        state["head.weight"] = load_tensor(weights, "head.weight")
        state["head.bias"] = load_tensor(weights, "head.bias")
        module.load_state_dict(state, strict=True)
        return module.eval()

    def local_lookup(self, sparse: torch.Tensor) -> torch.Tensor:
        """Rows this rank owns, zeros for the rest: (n, 4 * emb_dim)."""
        parts = []
        for col, name in enumerate(SPARSE_FEATURES):
            a, b = self.shard.table_rows[name]
            ids = sparse[:, col]
            mine = (ids >= a) & (ids < b)
            table = cast(nn.Embedding, self.tables[name])
            out = torch.zeros(
                len(ids), self.spec.emb_dim, dtype=table.weight.dtype, device=table.weight.device
            )
            out[mine] = table(ids[mine] - a)
            parts.append(out)
        return torch.cat(parts, dim=1)

    def forward(self, sparse: torch.Tensor, dense: torch.Tensor) -> torch.Tensor:
        embedded = self.local_lookup(sparse)
        dist.all_reduce(embedded)
        x = self.cross(torch.cat([embedded, dense.to(embedded.dtype)], dim=1))
        partial = self.fc2(torch.relu(self.fc1(x)))
        dist.all_reduce(partial)
        return self.head(torch.relu(partial + self.fc2_bias)).squeeze(-1)


@dataclass(frozen=True)
class RankSetup:
    """Everything a rank needs to join the gang (plain data: crosses process boundaries)."""

    rank: int
    world_size: int
    init_method: str  # tcp://host:port of rank 0's store
    weights: str
    spec: RankerSpec
    shard: RankShard
    device: str = "cpu"
    dtype: str = "fp32"
    timeout_s: float = 30.0

    @property
    def backend(self) -> str:
        return "nccl" if self.device.startswith("cuda") else "gloo"


@dataclass
class Joined:
    """A rank's loaded shard and the control group the batch headers come on."""

    module: ShardedRanker
    control: dist.ProcessGroup


def join_group(setup: RankSetup) -> Joined:
    """Initialise this process's rank of the group (and the control group) and load its
    shard."""
    if setup.device.startswith("cuda"):
        torch.cuda.set_device(torch.device(setup.device))
    dist.init_process_group(
        setup.backend,
        init_method=setup.init_method,
        rank=setup.rank,
        world_size=setup.world_size,
        timeout=timedelta(seconds=setup.timeout_s),
    )
    control = dist.new_group(backend="gloo", timeout=IDLE_WAIT)
    module = ShardedRanker.load(Path(setup.weights), setup.spec, setup.shard)
    return Joined(module.to(setup.device, TORCH_DTYPES[setup.dtype]), control)


def _broadcast_batch(
    control: dist.ProcessGroup,
    sparse: torch.Tensor | None,
    dense: torch.Tensor | None,
    n_dense: int,
    device: str,
) -> tuple[int, torch.Tensor, torch.Tensor]:
    header = torch.zeros(2, dtype=torch.int64)  # on the CPU: the control group is gloo
    if sparse is not None:
        header[0], header[1] = OP_FORWARD, len(sparse)
    dist.broadcast(header, src=0, group=control)
    op, n = int(header[0]), int(header[1])
    if op == OP_STOP:
        return op, torch.empty(0), torch.empty(0)
    if sparse is None or dense is None:
        sparse = torch.empty((n, len(SPARSE_FEATURES)), dtype=torch.int64, device=device)
        dense = torch.empty((n, n_dense), dtype=torch.float32, device=device)
    dist.broadcast(sparse, src=0)
    dist.broadcast(dense, src=0)
    return op, sparse, dense


def serve_rank(setup: RankSetup) -> None:
    """Body of a non-zero rank: join, then run forwards rank 0 broadcasts until told to stop."""
    joined = join_group(setup)
    try:
        with torch.inference_mode():
            while True:
                op, sparse, dense = _broadcast_batch(
                    joined.control, None, None, len(DENSE_FEATURES), setup.device
                )
                if op == OP_STOP:
                    break
                joined.module(sparse, dense)
    finally:
        dist.destroy_process_group()


class WorkerLauncher(Protocol):
    """Starts ranks 1..tp-1 somewhere and can tell whether they are still alive."""

    def start(self, setups: list[RankSetup]) -> None: ...

    def alive(self) -> bool: ...

    def stop(self, timeout_s: float) -> None: ...


class GangExecutor:
    """Rank 0 of a model-parallel ranker; the ``RankerExecutor`` of a sharded replica."""

    def __init__(
        self,
        weights: Path,
        plan: ShardingPlan,
        launcher: WorkerLauncher,
        init_method: str,
        device: str = "cpu",
        timeout_s: float = 30.0,
    ):
        self.plan = plan
        self.launcher = launcher
        self.device = device
        self._lock = threading.Lock()
        self._broken: str | None = None
        setups = [
            RankSetup(
                rank=r,
                world_size=plan.tp,
                init_method=init_method,
                weights=str(weights),
                spec=plan.spec,
                shard=plan.ranks[r],
                device=device,
                dtype=plan.dtype,
                timeout_s=timeout_s,
            )
            for r in range(plan.tp)
        ]
        launcher.start(setups[1:])  # the others wait in init until rank 0 joins
        joined = join_group(setups[0])
        self.module, self.control = joined.module, joined.control

    def forward(self, sparse: np.ndarray, dense: np.ndarray) -> np.ndarray:
        with self._lock:
            self.check_health()
            try:
                with torch.inference_mode():
                    s = torch.from_numpy(sparse).to(self.device)
                    d = torch.from_numpy(dense).to(self.device)
                    _broadcast_batch(self.control, s, d, d.shape[1], self.device)
                    return self.module(s, d).float().cpu().numpy()
            except Exception as exc:  # a collective failed: the gang is unusable
                self._broken = f"collective failed: {type(exc).__name__}: {exc}"
                raise GangBrokenError(self._broken) from exc

    def check_health(self) -> None:
        if self._broken is None and not self.launcher.alive():
            self._broken = "a ranker rank is no longer alive"
        if self._broken is not None:
            raise GangBrokenError(self._broken)

    def close(self) -> None:
        with self._lock:
            if self._broken is None and dist.is_initialized():
                # best effort on shutdown: the peers may be gone already
                with contextlib.suppress(Exception):
                    _broadcast_batch(self.control, None, None, 0, self.device)  # OP_STOP
            self.launcher.stop(timeout_s=10.0)
            if dist.is_initialized():
                dist.destroy_process_group()


class GangWatchdog:
    """Polls a gang's health and reports the first failure once, from a daemon thread.

    A replica whose gang broke can never serve again; the Serve deployment hands
    ``on_broken`` a function that ends the replica, so that Serve replaces it (and routes to
    the other replicas) within ``period_s`` instead of after its health checks run out
    (three failed checks at ``health_check_period_s``: 30 s by default). ``check`` is the
    executor's ``check_health``: it raises once a rank died or a collective failed."""

    def __init__(
        self,
        check: Callable[[], None],
        on_broken: Callable[[str], None],
        period_s: float = 0.25,
    ):
        if period_s <= 0:
            raise ValueError("period_s must be > 0")
        self.check, self.on_broken, self.period_s = check, on_broken, period_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="gang-watchdog", daemon=True)

    def start(self) -> GangWatchdog:
        self._thread.start()
        return self

    def stop(self, timeout_s: float = 5.0) -> None:
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout_s)

    def _run(self) -> None:
        while not self._stop.wait(self.period_s):
            try:
                self.check()
            except Exception as exc:  # any failure of the check means the gang is unusable
                log.error("ranker gang broken: %s", exc)
                self.on_broken(f"{type(exc).__name__}: {exc}")
                return
