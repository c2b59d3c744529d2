"""What the GPU nodes of a run should have cost: the hindsight and the static allocations.

Both are computed from the trace (the scheduled arrival times), with the same capacity model:
a ranker gang serves one request at a time for ``service_s`` (the simulated device time per
batch of one), first come first served, and a request meets the SLO when it is through the
ranker within ``budget_s`` of its arrival (the ranker's share of the deadline).

* :func:`gangs_needed`: the fewest gangs for which at least ``target`` of a set of arrivals
  meet the budget (an exact FCFS simulation over the real arrival times, starting empty).
* :func:`hindsight_allocation`: per ``step_s`` (a minute) the fewest gangs for that minute's
  arrivals: the cheapest per-minute allocation that meets the SLO, knowing the future and
  with nodes arriving the instant they are wanted. A lower bound no policy reaches.
* the static allocation holds the largest per-minute need for the whole run: what sizing for
  the peak costs.

GPU-node-seconds count nodes (``fixed_nodes`` for the stages that do not scale here, one
``gpu-multi`` node per gang); :func:`cost_per_million` turns GPU-seconds into money at a
stated price per GPU-hour.
"""

from __future__ import annotations

import heapq
import math
from dataclasses import dataclass

import numpy as np


def fcfs_sojourn(arrivals_s: np.ndarray, servers: int, service_s: float) -> np.ndarray:
    """Time in system of each arrival (sorted) with ``servers`` FCFS deterministic servers."""
    free = [0.0] * servers
    heapq.heapify(free)
    out = np.empty(len(arrivals_s))
    for i, a in enumerate(np.sort(arrivals_s)):
        start = max(a, heapq.heappop(free))
        heapq.heappush(free, start + service_s)
        out[i] = start + service_s - a
    return out


def gangs_needed(
    arrivals_s: np.ndarray,
    service_s: float,
    budget_s: float,
    *,
    target: float = 0.99,
    min_gangs: int = 1,
    max_gangs: int = 64,
) -> int:
    """The fewest gangs (>= ``min_gangs``) for which ``target`` of the arrivals finish within
    ``budget_s``; ``max_gangs`` when even that many do not."""
    if len(arrivals_s) == 0:
        return min_gangs
    for c in range(min_gangs, max_gangs + 1):
        if float(np.mean(fcfs_sojourn(arrivals_s, c, service_s) <= budget_s)) >= target:
            return c
    return max_gangs


@dataclass(frozen=True)
class Allocation:
    """Gangs per step over ``[0, window_s)`` and the node-seconds they cost."""

    step_s: float
    gangs: list[int]
    window_s: float
    fixed_nodes: int

    def _durations(self) -> list[float]:
        return [min(self.step_s, self.window_s - i * self.step_s) for i in range(len(self.gangs))]

    @property
    def gpu_node_seconds(self) -> float:
        return sum(
            (self.fixed_nodes + g) * d for g, d in zip(self.gangs, self._durations(), strict=True)
        )

    @property
    def static_peak_gpu_node_seconds(self) -> float:
        return (self.fixed_nodes + max(self.gangs, default=0)) * self.window_s

    def gpu_seconds(self, gpus_fixed: float, gpus_per_gang: float) -> float:
        return sum(
            (gpus_fixed + g * gpus_per_gang) * d
            for g, d in zip(self.gangs, self._durations(), strict=True)
        )


def hindsight_allocation(
    arrivals_s: np.ndarray,
    window_s: float,
    *,
    service_s: float,
    budget_s: float,
    fixed_nodes: int,
    step_s: float = 60.0,
    target: float = 0.99,
    min_gangs: int = 1,
    max_gangs: int = 64,
) -> Allocation:
    """The cheapest per-``step_s`` allocation meeting ``target`` in every step."""
    n = max(1, math.ceil(window_s / step_s))
    arrivals = np.asarray(arrivals_s, dtype=np.float64)
    gangs = []
    for i in range(n):
        inside = arrivals[(arrivals >= i * step_s) & (arrivals < (i + 1) * step_s)]
        gangs.append(
            gangs_needed(
                inside,
                service_s,
                budget_s,
                target=target,
                min_gangs=min_gangs,
                max_gangs=max_gangs,
            )
        )
    return Allocation(step_s=step_s, gangs=gangs, window_s=window_s, fixed_nodes=fixed_nodes)


def cost_per_million(gpu_seconds: float, requests: int, usd_per_gpu_hour: float) -> float | None:
    """Dollars per million requests at ``usd_per_gpu_hour`` (None without requests)."""
    if requests <= 0:
        return None
    return gpu_seconds / 3600.0 * usd_per_gpu_hour / requests * 1e6
