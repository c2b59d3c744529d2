"""The rate sweep: one system through ascending open-loop rates, with early stop and refinement.

Every rate gets the same schedule for every system (``build_schedule`` with the run's seed, a
constant Poisson shape at that rate, the same duration and mix). The sweep climbs the coarse
grid until the system clearly saturates (``max_failures`` failing rates in a row, or one
whose p99 exceeds ``stop_p99_factor`` x SLO or whose good share is under 90%), then bisects
(geometric midpoints) between its sustained rate and the next failing one. A failing rate
below a passing one is measured once more first (the later measurement decides). Rates named
in ``fixed_rates`` are always measured, so every system reports p50/p99 there.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import pandas as pd

from recsys.bench.analysis import summarise_point
from recsys.bench.config import SloConfig, SweepConfig
from recsys.traffic.config import TrafficConfig


@dataclass
class PointRun:
    """What a target returns for one schedule."""

    records: pd.DataFrame
    timings: dict[int, dict[str, float]]
    wall_s: float
    client_cpu_s: float
    """CPU of the load generator's thread."""
    server_cpu_s: float
    """CPU of the serving processes (process-tree method)."""
    machine_cpu_s: float
    """Machine busy CPU minus the benchmark process's own (the cross-check)."""
    extra: dict[str, Any] = field(default_factory=dict)
    """Per-role CPU, memory, process counts, batch sizes ..."""


class Target(Protocol):
    """A running system the sweep can send a schedule to."""

    name: str

    def run(self, schedule: pd.DataFrame, traffic: TrafficConfig, progress: bool) -> PointRun:
        """Serve ``schedule`` open-loop; one record per scheduled request."""
        ...

    def settle(self, seconds: float) -> None:
        """Wait until the system is idle again (at least ``seconds``)."""
        ...


@dataclass
class PointResult:
    """One measured rate."""

    summary: dict[str, Any]
    run: PointRun


ScheduleFactory = Callable[[float], tuple[TrafficConfig, pd.DataFrame]]
"""rate -> (traffic config, schedule); the same rate must give the same schedule."""


def saturated(summary: dict[str, Any], slo: SloConfig, factor: float) -> bool:
    """A failure so clear that higher rates cannot pass."""
    p99 = float(summary["p99_ms"])
    return float(summary["good_share"]) < 0.9 or math.isnan(p99) or p99 > factor * slo.p99_ms


def refine_rates(lo: float, hi: float, steps: int) -> float | None:
    """Next bisection rate between a passing ``lo`` and a failing ``hi`` (geometric middle,
    rounded to a whole req/s), or None when the bracket is already tight (< 8% apart)."""
    if steps <= 0 or hi <= lo or hi / max(lo, 1e-9) < 1.08:
        return None
    mid = float(round(math.sqrt(max(lo, 1.0) * hi)))
    return mid if lo < mid < hi else None


def run_sweep(
    target: Target,
    schedules: ScheduleFactory,
    sweep: SweepConfig,
    slo: SloConfig,
    *,
    fixed_rates: Sequence[float] = (),
    progress: bool = True,
    on_point: Callable[[PointResult], None] | None = None,
    should_stop: Callable[[], str | None] | None = None,
) -> list[PointResult]:
    """Measure ``target`` over the grid (see the module docstring)."""
    results: list[PointResult] = []
    done: set[float] = set()

    def measure(rate: float) -> PointResult:
        traffic, schedule = schedules(rate)
        run = target.run(schedule, traffic, progress)
        summary = summarise_point(run.records, rate=rate, duration_s=traffic.duration_s, slo=slo)
        result = PointResult(summary, run)
        results.append(result)
        done.add(rate)
        if on_point is not None:
            on_point(result)
        target.settle(sweep.settle_s)
        return result

    grid = sorted(set(sweep.rates) | set(fixed_rates))
    last_pass: float | None = None
    first_fail: float | None = None
    failures = 0
    for rate in grid:
        if should_stop is not None and (reason := should_stop()):
            raise RuntimeError(f"sweep interrupted: {reason}")
        if failures >= sweep.max_failures and rate not in fixed_rates:
            continue
        result = measure(rate)
        if result.summary["passes"]:
            failures = 0
            if first_fail is None:
                last_pass = rate
        else:
            failures += 1
            first_fail = rate if first_fail is None else first_fail
            if saturated(result.summary, slo, sweep.stop_p99_factor):
                failures = sweep.max_failures
    # A failure below a passing rate is contradicted by it: on a shared 2-core machine one
    # 5 s point can fail from a stall that has nothing to do with the rate. Measure each such
    # rate once more; its last measurement is its verdict (``analysis.sustained_rate``).
    verdict = {r.summary["rate"]: bool(r.summary["passes"]) for r in results}
    for rate in sorted(verdict):
        if not verdict[rate] and any(ok and r > rate for r, ok in verdict.items()):
            verdict[rate] = bool(measure(rate).summary["passes"])
    last_pass, first_fail = None, None
    for rate in sorted(verdict):
        if not verdict[rate]:
            first_fail = rate
            break
        last_pass = rate
    if first_fail is not None:
        lo, hi = (last_pass or 0.0), first_fail
        for step in range(sweep.refine_steps, 0, -1):
            mid = refine_rates(lo, hi, step)
            if mid is None or mid in done:
                break
            if measure(mid).summary["passes"]:
                lo = mid
            else:
                hi = mid
    return results
