"""The sharding plan of the model-parallel ranker, as data.

``plan_sharding(spec, tp)`` is a pure function: it decides which rows of each embedding table
and which slices of the two big dense layers live on which rank, and estimates each rank's
parameter memory. Execution (``recsys.ranker.sharded``) follows the plan; tests check the plan
without processes or devices.

* Embedding tables (shopper, item, leaf, brand) are split by contiguous row ranges: a rank
  looks up the ids it owns and contributes zeros for the others; one all-reduce (sum) gives
  every rank the full rows.
* ``fc1`` is column-parallel (each rank owns a slice of its output units) and ``fc2``
  row-parallel (the matching slice of its input units): each rank computes a partial ``fc2``
  output, and one all-reduce sums them (Megatron-LM's MLP split).
* The cross layers, the ``fc2`` bias and the head are small and replicated.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

from recsys.ranker.model import RankerSpec

DType = Literal["fp32", "fp16", "bf16"]
DTYPE_BYTES: dict[str, int] = {"fp32": 4, "fp16": 2, "bf16": 2}
GIB = 1 << 30


class InfeasiblePlanError(ValueError):
    """A rank's share does not fit the memory it is given."""


def split_range(total: int, parts: int, index: int) -> tuple[int, int]:
    """Contiguous, as-even-as-possible split of ``range(total)``: the ``index``-th part."""
    base, extra = divmod(total, parts)
    start = index * base + min(index, extra)
    return start, start + base + (1 if index < extra else 0)


@dataclass(frozen=True)
class RankShard:
    """What one rank holds."""

    rank: int
    table_rows: dict[str, tuple[int, int]]  # table -> [start, stop) of its rows
    fc1_units: tuple[int, int]  # output units of fc1 (= input units of fc2) owned
    param_bytes: int  # parameters held by this rank (sharded + replicated)
    sharded_table_bytes: int  # embedding rows held by this rank

    def owns(self, table: str, row: int) -> bool:
        start, stop = self.table_rows[table]
        return start <= row < stop


@dataclass(frozen=True)
class ShardingPlan:
    tp: int
    dtype: DType
    spec: RankerSpec
    ranks: tuple[RankShard, ...]
    total_table_bytes: int  # all embedding tables, unsharded
    replicated_bytes: int  # held in full by every rank
    unsharded_param_bytes: int  # the whole model on one device

    @property
    def max_rank_bytes(self) -> int:
        return max(r.param_bytes for r in self.ranks)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["spec"] = self.spec.to_dict()
        out["max_rank_bytes"] = self.max_rank_bytes
        return out

    def describe(self) -> str:
        """A human-readable table of the plan."""
        s = self.spec
        lines = [
            f"ranker sharding plan: tp={self.tp}, dtype={self.dtype}",
            f"  tables: user {s.n_users:,} x {s.emb_dim}, item {s.n_items:,} x {s.emb_dim}, "
            f"leaf {s.n_leaves:,}, brand {s.n_brands:,}; dense {s.input_dim} -> {s.hidden} "
            f"-> {s.hidden2} -> 1",
            f"  whole model on one device: {fmt_bytes(self.unsharded_param_bytes)} "
            f"(tables {fmt_bytes(self.total_table_bytes)}); replicated per rank: "
            f"{fmt_bytes(self.replicated_bytes)}",
            f"  rank | {'user rows':<26} | {'item rows':<26} | fc1 units  | params",
        ]
        for r in self.ranks:
            u, i = r.table_rows["user"], r.table_rows["item"]
            lines.append(
                f"  {r.rank:>4} | {u[0]:>12,}..{u[1]:<12,} | {i[0]:>12,}..{i[1]:<12,} | "
                f"{r.fc1_units[0]:>4}..{r.fc1_units[1]:<4} | {fmt_bytes(r.param_bytes)}"
            )
        model_share = self.max_rank_bytes / self.unsharded_param_bytes
        table_share = self.ranks[0].sharded_table_bytes / self.total_table_bytes
        lines.append(
            f"  largest rank holds {model_share:.1%} of the model; its tables are "
            f"{table_share:.1%} of all table rows (ideal 1/tp = {1 / self.tp:.1%})"
        )
        return "\n".join(lines)


def fmt_bytes(n: float) -> str:
    for unit, size in (("GiB", GIB), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= size:
            return f"{n / size:,.2f} {unit}"
    return f"{n:,.0f} B"


def _dense_counts(spec: RankerSpec) -> tuple[int, int]:
    """(replicated parameter count, fc1+fc2-weight count that gets split)."""
    d = spec.input_dim
    cross = spec.cross_layers * (d * d + d)
    head = spec.hidden2 + 1
    replicated = cross + spec.hidden2 + head  # cross, fc2 bias, head
    split = d * spec.hidden + spec.hidden + spec.hidden * spec.hidden2  # fc1 w+b, fc2 w
    return replicated, split


def plan_sharding(
    spec: RankerSpec, tp: int, dtype: DType = "fp32", device_memory_gb: float | None = None
) -> ShardingPlan:
    """Split ``spec`` over ``tp`` ranks; refuse it if a rank exceeds ``device_memory_gb``."""
    if tp < 1:
        raise ValueError("tp must be >= 1")
    if tp > spec.hidden:
        raise ValueError(
            f"tp={tp} exceeds the hidden width {spec.hidden}: a rank would own no unit"
        )
    nbytes = DTYPE_BYTES[dtype]
    replicated, _ = _dense_counts(spec)
    d = spec.input_dim
    ranks = []
    for rank in range(tp):
        rows = {t: split_range(n, tp, rank) for t, n in spec.table_rows.items()}
        table_params = sum((b - a) * spec.emb_dim for a, b in rows.values())
        u0, u1 = split_range(spec.hidden, tp, rank)
        units = u1 - u0
        dense_params = d * units + units + units * spec.hidden2
        ranks.append(
            RankShard(
                rank=rank,
                table_rows=rows,
                fc1_units=(u0, u1),
                param_bytes=(table_params + dense_params + replicated) * nbytes,
                sharded_table_bytes=table_params * nbytes,
            )
        )
    total_tables = sum(spec.table_rows.values()) * spec.emb_dim * nbytes
    _, split = _dense_counts(spec)
    plan = ShardingPlan(
        tp=tp,
        dtype=dtype,
        spec=spec,
        ranks=tuple(ranks),
        total_table_bytes=total_tables,
        replicated_bytes=replicated * nbytes,
        unsharded_param_bytes=total_tables + (split + replicated) * nbytes,
    )
    if device_memory_gb is not None:
        check_fits(plan, device_memory_gb)
    return plan


def devices_needed(spec: RankerSpec, device_memory_gb: float, dtype: DType = "fp32") -> int | None:
    """Smallest tp whose largest rank fits ``device_memory_gb`` (None: not even at tp=hidden)."""
    limit = device_memory_gb * GIB
    for tp in range(1, spec.hidden + 1):
        if plan_sharding(spec, tp, dtype).max_rank_bytes <= limit:
            return tp
    return None


def check_fits(plan: ShardingPlan, device_memory_gb: float) -> None:
    limit = device_memory_gb * GIB
    worst = max(plan.ranks, key=lambda r: r.param_bytes)
    if worst.param_bytes <= limit:
        return
    need = devices_needed(plan.spec, device_memory_gb, plan.dtype)
    advice = (
        f"it needs at least {need} devices of {device_memory_gb:g} GiB (tp >= {need})"
        if need is not None
        else "no tp fits: the replicated layers alone exceed it; use bigger devices"
    )
    raise InfeasiblePlanError(
        f"ranker plan infeasible: rank {worst.rank} needs {fmt_bytes(worst.param_bytes)} of "
        f"{plan.dtype} parameters but a device has {device_memory_gb:g} GiB with tp={plan.tp}; "
        + advice
    )
