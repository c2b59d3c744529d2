"""The model-parallel ranker: the plan as data, lazy shard loading, and tp=2 (gloo) == tp=1."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from recsys import layout
from recsys.artifacts import Artifact
from recsys.ranker.executor import LocalExecutor
from recsys.ranker.launch import local_gang
from recsys.ranker.model import RankerSpec
from recsys.ranker.plan_cli import measure_shards
from recsys.ranker.sharded import GangWatchdog, ShardedRanker
from recsys.ranker.sharding import (
    InfeasiblePlanError,
    devices_needed,
    plan_sharding,
    split_range,
)
from recsys.ranker.weights import load_model, read_meta

PROD = RankerSpec(
    n_users=50_000_001,
    n_items=2_000_000,
    n_leaves=128,
    n_brands=512,
    emb_dim=128,
    cross_layers=2,
    hidden=256,
    hidden2=64,
)


def test_split_range_covers_everything_once() -> None:
    for total, parts in [(10, 3), (3, 5), (1_000_001, 4), (0, 2)]:
        pieces = [split_range(total, parts, i) for i in range(parts)]
        assert pieces[0][0] == 0 and pieces[-1][1] == total
        assert all(a[1] == b[0] for a, b in zip(pieces, pieces[1:], strict=False))
        sizes = [b - a for a, b in pieces]
        assert max(sizes) - min(sizes) <= 1


@pytest.mark.parametrize("tp", [1, 2, 4, 8])
def test_plan_splits_tables_by_rows_and_mlp_by_units(tp: int) -> None:
    plan = plan_sharding(PROD, tp)
    assert len(plan.ranks) == tp
    for table, rows in PROD.table_rows.items():
        owned = sum(b - a for a, b in (r.table_rows[table] for r in plan.ranks))
        assert owned == rows
    assert sum(b - a for a, b in (r.fc1_units for r in plan.ranks)) == PROD.hidden
    share = plan.ranks[0].sharded_table_bytes / plan.total_table_bytes
    assert share == pytest.approx(1 / tp, rel=1e-3)
    expected = plan.unsharded_param_bytes / tp + plan.replicated_bytes * (tp - 1) / tp
    assert plan.max_rank_bytes == pytest.approx(expected, rel=1e-3)


def test_infeasible_plan_says_how_many_devices_it_needs() -> None:
    # 50M shoppers x 128 fp32 ~ 24 GiB of tables: 1 x 16 GiB cannot hold it
    with pytest.raises(InfeasiblePlanError, match=r"at least 2 devices of 16 GiB"):
        plan_sharding(PROD, 1, device_memory_gb=16)
    assert devices_needed(PROD, 16) == 2
    assert devices_needed(PROD, 4) == 7
    assert devices_needed(PROD, 16, dtype="fp16") == 1
    plan = plan_sharding(PROD, 2, device_memory_gb=16)  # fits
    assert plan.max_rank_bytes < 16 * 2**30
    with pytest.raises(ValueError, match="hidden width"):
        plan_sharding(PROD, 512)


def test_describe_names_ranks_and_memory() -> None:
    text = plan_sharding(PROD, 4).describe()
    assert "tp=4" in text and "GiB" in text and text.count("\n") >= 7


def trained(tiny_artifact: Path) -> tuple[RankerSpec, Path]:
    art = Artifact.open(tiny_artifact)
    return read_meta(art.path(layout.RANKER_META)).spec, art.path(layout.RANKER_WEIGHTS)


def sample_inputs(spec: RankerSpec, n: int = 257) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    sparse = np.stack(
        [rng.integers(0, rows, n) for rows in spec.table_rows.values()], axis=1
    ).astype(np.int64)
    return sparse, rng.normal(size=(n, spec.n_dense)).astype(np.float32)


def test_each_rank_loads_only_its_slice(tiny_artifact: Path) -> None:
    spec, weights = trained(tiny_artifact)
    full = load_model(weights, spec)
    plan = plan_sharding(spec, 2)
    for shard in plan.ranks:
        part = ShardedRanker.load(weights, spec, shard)
        a, b = shard.table_rows["user"]
        assert part.tables["user"].weight.shape[0] == b - a
        assert torch.equal(part.tables["user"].weight, full.tables["user"].weight[a:b])
        u0, u1 = shard.fc1_units
        assert torch.equal(part.fc1.weight, full.fc1.weight[u0:u1])
        assert torch.equal(part.fc2.weight, full.fc2.weight[:, u0:u1])
    measured = measure_shards(weights, spec, 2)
    total = plan.total_table_bytes
    for m in measured:
        assert m["table_bytes"] == pytest.approx(total / 2, rel=0.01)


@pytest.mark.slow
@pytest.mark.parametrize("tp", [2, 3])
def test_sharded_scores_equal_single_device(tiny_artifact: Path, tp: int) -> None:
    """tp ranks over gloo (separate processes) give the single-device scores within 1e-5."""
    spec, weights = trained(tiny_artifact)
    sparse, dense = sample_inputs(spec)
    reference = LocalExecutor(load_model(weights, spec)).forward(sparse, dense)
    gang = local_gang(weights, plan_sharding(spec, tp))
    try:
        got = gang.forward(sparse, dense)
        again = gang.forward(sparse[:3], dense[:3])  # batches of any size, repeatedly
    finally:
        gang.close()
    assert np.abs(got - reference).max() < 1e-5
    assert np.abs(again - reference[:3]).max() < 1e-5
    assert not gang.launcher.alive() or not gang.launcher.processes


@pytest.mark.slow
def test_a_dead_rank_fails_health_and_forward_fast(tiny_artifact: Path) -> None:
    spec, weights = trained(tiny_artifact)
    sparse, dense = sample_inputs(spec, 8)
    gang = local_gang(weights, plan_sharding(spec, 2), timeout_s=10)
    try:
        gang.check_health()
        gang.launcher.processes[0].kill()
        gang.launcher.processes[0].join(5)
        with pytest.raises(RuntimeError, match="no longer alive"):
            gang.check_health()
        with pytest.raises(RuntimeError):
            gang.forward(sparse, dense)
    finally:
        gang.close()


@pytest.mark.slow
def test_a_gang_idle_past_its_timeout_still_serves(tiny_artifact: Path) -> None:
    """Ranks wait for the next batch on the control group, not the data group's timeout: a gang
    left without requests for longer than ``timeout_s`` (before a sale, at night) stays whole."""
    spec, weights = trained(tiny_artifact)
    sparse, dense = sample_inputs(spec, 8)
    reference = LocalExecutor(load_model(weights, spec)).forward(sparse, dense)
    gang = local_gang(weights, plan_sharding(spec, 2), timeout_s=1)
    try:
        gang.forward(sparse, dense)
        time.sleep(3)  # three data-group timeouts without a batch
        gang.check_health()
        got = gang.forward(sparse, dense)
    finally:
        gang.close()
    assert np.abs(got - reference).max() < 1e-5


@pytest.mark.slow
def test_the_watchdog_reports_a_dead_rank_once_and_stops(tiny_artifact: Path) -> None:
    """The Serve replica hands the watchdog a function that ends the replica; here it records."""
    spec, weights = trained(tiny_artifact)
    gang = local_gang(weights, plan_sharding(spec, 2), timeout_s=10)
    reports: list[str] = []
    broken = threading.Event()

    def on_broken(reason: str) -> None:
        reports.append(reason)
        broken.set()

    watchdog = GangWatchdog(gang.check_health, on_broken, period_s=0.05).start()
    try:
        time.sleep(0.3)
        assert not broken.is_set(), f"a healthy gang was reported broken: {reports}"
        gang.launcher.processes[0].kill()
        assert broken.wait(10), "the watchdog never noticed the dead rank"
        time.sleep(0.3)
    finally:
        watchdog.stop()
        gang.close()
    assert len(reports) == 1 and "no longer alive" in reports[0]


def test_the_watchdog_stays_quiet_while_the_check_passes() -> None:
    calls = threading.Semaphore(0)
    reports: list[str] = []

    def check() -> None:
        calls.release()

    watchdog = GangWatchdog(check, reports.append, period_s=0.01).start()
    try:
        for _ in range(5):  # it keeps polling
            assert calls.acquire(timeout=5)
    finally:
        watchdog.stop()
    assert reports == []
