"""The search for a system's sustained rate: open-loop points on a continuous rate.

A point is one schedule at one offered rate (``build_schedule`` with the repeat's seed, a
constant Poisson shape, the same mix for every system). The search is per system: it starts
near the system's own capacity, climbs (or descends) by a factor until a passing rate sits
below a failing one, then bisects that bracket at its geometric middle until the failing rate
is within ``1 + tolerance`` of the passing one. Nothing is rounded to a shared grid, so two
systems only report the same rate if they measure the same. :func:`next_rate` is the whole
policy, a pure function of the points so far.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import pandas as pd

from recsys.bench.config import SweepConfig
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


def bracket(history: Sequence[tuple[float, bool]]) -> tuple[float | None, float | None]:
    """(highest passing rate below the lowest failing one, lowest failing rate); a pass above
    a failure does not count (the sustained rate needs every lower rate tried to pass)."""
    failed = [r for r, ok in history if not ok]
    hi = min(failed) if failed else None
    passed = [r for r, ok in history if ok and (hi is None or r < hi)]
    return (max(passed) if passed else None), hi


def next_rate(
    history: Sequence[tuple[float, bool]],
    start: float,
    step: float,
    tolerance: float,
    min_rate: float,
    max_rate: float,
) -> float | None:
    """The next rate to measure after ``history`` ((rate, passed) in order), or None when the
    sustained rate is pinned: bracket within ``1 + tolerance``, or a pass at ``max_rate``, or
    a failure at ``min_rate``."""
    if not history:
        return _rounded(min(max(start, min_rate), max_rate))
    lo, hi = bracket(history)
    if hi is None:  # everything passed: climb
        assert lo is not None
        return None if lo >= max_rate else _rounded(min(lo * step, max_rate))
    if lo is None:  # everything failed: descend
        return None if hi <= min_rate else _rounded(max(hi / step, min_rate))
    if hi <= lo * (1.0 + tolerance):
        return None
    mid = _rounded(math.sqrt(lo * hi))
    return mid if lo < mid < hi else None


def _rounded(rate: float) -> float:
    """Rates to 0.1 req/s (a schedule per distinct rate; finer means nothing at 20 s)."""
    return max(0.1, round(rate, 1))


@dataclass
class SearchResult:
    """One repeat's search: its points and the bracket they left."""

    points: list[PointResult]
    sustained: float
    """Highest passing rate below the lowest failing one (0: nothing passed)."""
    failing: float | None
    """Lowest failing rate (None: every rate passed up to ``max_rate`` or the point cap)."""
    pinned: bool
    """Whether the bracket reached the tolerance (False: the point cap stopped it)."""


def search_sustained(
    measure: Callable[[float], PointResult],
    start: float,
    sweep: SweepConfig,
    step: float | None = None,
) -> SearchResult:
    """Measure rates chosen by :func:`next_rate` until it stops or ``max_points`` are spent."""
    points: list[PointResult] = []
    history: list[tuple[float, bool]] = []
    factor = sweep.step if step is None else step
    pinned = False
    while len(points) < sweep.max_points:
        rate = next_rate(history, start, factor, sweep.tolerance, sweep.min_rate, sweep.max_rate)
        if rate is None:
            pinned = True
            break
        point = measure(rate)
        points.append(point)
        history.append((rate, bool(point.summary["passes"])))
    lo, hi = bracket(history)
    return SearchResult(points, lo or 0.0, hi, pinned)


def capacity_estimate(point: PointRun, n_good: int, cores: int) -> float | None:
    """Requests a second the machine's cores could serve at the CPU this point cost a
    request (server and load generator together, both on this machine), None if unknown."""
    if n_good <= 0:
        return None
    cpu_per_request = (point.server_cpu_s + point.client_cpu_s) / n_good
    return cores / cpu_per_request if cpu_per_request > 0 else None


def search_start(
    sweep: SweepConfig,
    *,
    previous: float | None,
    other_stream: float | None,
    estimate: float | None,
) -> tuple[float, float]:
    """(first rate, climb factor) of one repeat's search: the configured start for the first
    repeat, else the previous repeat's sustained rate with the fine ``repeat_step``, else the
    system's sustained rate on a stream measured before, else 0.8 x its CPU estimate, else
    the highest low rate."""
    if previous:
        return previous, sweep.repeat_step
    if sweep.start_rate is not None:
        return sweep.start_rate, sweep.step
    if other_stream:
        return other_stream, sweep.step
    if estimate:
        return 0.8 * estimate, sweep.step
    return sweep.low_rates[-1], sweep.step
