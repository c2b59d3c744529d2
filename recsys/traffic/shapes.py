"""Arrival rate over time for each load shape, and arrivals drawn from it.

``rate(shape, t)`` is vectorised over ``t`` (seconds from the start). Arrivals are a Poisson
process with that time-varying rate, drawn by thinning (Lewis and Shedler): candidates from a
homogeneous process at the peak rate, each kept with probability ``rate(t) / peak``.
"""

from __future__ import annotations

import numpy as np

from recsys.traffic.config import (
    ConstantShape,
    DiurnalShape,
    FlashSaleShape,
    LoadShape,
    RampShape,
    StepShape,
)


def rate(shape: LoadShape, t: np.ndarray | float) -> np.ndarray:
    """Requests per second at times ``t`` (seconds from the start)."""
    t = np.asarray(t, dtype=np.float64)
    if isinstance(shape, ConstantShape):
        return np.full_like(t, shape.rate)
    if isinstance(shape, StepShape):
        inside = (t >= shape.t_up) & (t < shape.t_down)
        return np.where(inside, shape.high, shape.low).astype(np.float64)
    if isinstance(shape, RampShape):
        frac = np.clip((t - shape.t_start) / (shape.t_end - shape.t_start), 0.0, 1.0)
        return shape.start + frac * (shape.end - shape.start)
    if isinstance(shape, DiurnalShape):
        wave = np.sin(2.0 * np.pi * (t / shape.period_s + shape.phase))
        return np.maximum(0.0, shape.mean + shape.amplitude * wave)
    if isinstance(shape, FlashSaleShape):
        return _flash_sale(shape, t)
    raise TypeError(f"unknown load shape {type(shape).__name__}")


def _flash_sale(shape: FlashSaleShape, t: np.ndarray) -> np.ndarray:
    lift = shape.peak - shape.base
    t_peak = shape.t_start + shape.rise_s
    t_decay = t_peak + shape.hold_s
    rising = (
        np.clip((t - shape.t_start) / shape.rise_s, 0.0, 1.0)
        if shape.rise_s > 0
        else ((t >= shape.t_start).astype(np.float64))
    )
    decaying = np.exp(-np.maximum(t - t_decay, 0.0) / shape.decay_s)
    level = np.where(t < t_decay, rising, decaying)
    return shape.base + lift * np.where(t < shape.t_start, 0.0, level)


def peak_rate(shape: LoadShape, duration_s: float) -> float:
    """An upper bound of the rate over ``[0, duration_s)`` (exact for these shapes)."""
    if isinstance(shape, ConstantShape):
        return shape.rate
    if isinstance(shape, StepShape):
        return max(shape.low, shape.high) if shape.t_up < duration_s else shape.low
    if isinstance(shape, RampShape):
        return max(shape.start, shape.end)
    if isinstance(shape, DiurnalShape):
        return shape.mean + shape.amplitude
    if isinstance(shape, FlashSaleShape):
        return shape.peak if shape.t_start < duration_s else shape.base
    raise TypeError(f"unknown load shape {type(shape).__name__}")


def expected_count(shape: LoadShape, t0: float, t1: float, steps: int = 2000) -> float:
    """Expected arrivals in ``[t0, t1)``: the integral of the rate (trapezoids)."""
    if t1 <= t0:
        return 0.0
    grid = np.linspace(t0, t1, steps + 1)
    values = rate(shape, grid)
    return float(np.sum((values[1:] + values[:-1]) * 0.5) * (t1 - t0) / steps)


def arrival_times(
    shape: LoadShape, duration_s: float, rng: np.random.Generator, max_requests: int | None = None
) -> np.ndarray:
    """Sorted arrival times in ``[0, duration_s)`` of a Poisson process with rate
    ``rate(shape, t)``, at most ``max_requests`` of them (the earliest)."""
    peak = peak_rate(shape, duration_s)
    if peak <= 0 or duration_s <= 0:
        return np.zeros(0, dtype=np.float64)
    n = int(rng.poisson(peak * duration_s))
    candidates = np.sort(rng.uniform(0.0, duration_s, size=n))
    keep = rng.uniform(0.0, peak, size=n) < rate(shape, candidates)
    times = candidates[keep]
    if max_requests is not None:
        times = times[:max_requests]
    return times


def load_change_times(
    shape: LoadShape, duration_s: float, resolution_s: float = 0.1
) -> tuple[float | None, float | None]:
    """When the load rises and when it falls: the first time the rate crosses above the
    midpoint between its minimum and maximum, and the first time after that it drops below.
    (None, None) for a flat shape. Exact for a step: ``(t_up, t_down)``."""
    if isinstance(shape, StepShape):
        up = shape.t_up if shape.t_up < duration_s and shape.high > shape.low else None
        down = shape.t_down if up is not None and shape.t_down < duration_s else None
        return up, down
    grid = np.arange(0.0, duration_s, resolution_s)
    values = rate(shape, grid)
    lo, hi = float(values.min()), float(values.max())
    if hi - lo <= 1e-9:
        return None, None
    mid = (lo + hi) / 2.0
    above = values > mid
    if above[0]:
        first_below = np.argmax(~above)
        if above[first_below]:  # above for the whole run
            return None, None
        above[:first_below] = False
    if not above.any():
        return None, None
    i_up = int(np.argmax(above))
    rest = ~above[i_up:]
    t_up = float(grid[i_up])
    if not rest.any():
        return t_up, None
    return t_up, float(grid[i_up + int(np.argmax(rest))])
