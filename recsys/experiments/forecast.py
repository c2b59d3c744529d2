"""A predictive autoscaling decision: capacity asked for one lead time ahead of the load.

Why: a GPU node takes minutes to arrive (provisioning, image pull, driver) and a replica then
downloads the artifact and loads its models. A policy that reacts to the queue asks for
capacity when the queue is already there, and the queue grows for the whole lead time. This
one asks for what the load will be ``lead_s`` from now, from what is knowable at the time:

* the recent level and trend of the load (a least-squares slope over ``trend_window_s``),
  extrapolated ``lead_s`` ahead (rises only: a falling trend never removes capacity early).
  Extrapolated that far, noise is amplified: at 0.3 req/s a replica's ongoing count jumps
  between 0 and 2, and a slope fitted to that, times 150 s, asked for every gang the pool
  had. So the trend counts only once a whole window has been seen and when it stands out
  of the noise (the slope of ``trend_bin_s`` means at least ``trend_min_t`` standard
  errors above zero);
* queue growth: requests waiting beyond the replicas' capacity are added as demand;
* a daily shape learned from earlier days (``period_s``: the load seen one period ago at the
  time ``lead_s`` ahead, scaled by how today compares with that day so far);
* scheduled events (:class:`ScheduledEvent`): a sale announced ahead with its start time.
  From ``start - lead_s`` the policy holds ``event_replicas`` (the magnitude is not announced,
  so it reserves what the pool allows) until ``hold_after_start_s`` after the start, then the
  load decides. Nothing about an event is used before its announcement time.

Scale-down is slow on purpose: the target is the largest decision of the last
``downscale_hold_s`` seconds, so capacity that took minutes to arrive is not given back on a
lull. The trade-off is GPU-node-seconds: capacity arrives early and leaves late.

The load unit is whatever the caller measures (Serve gives ongoing requests per deployment:
for a device-bound stage serving one request at a time, the number of busy replicas).
Everything here is pure and deterministic: :meth:`PredictiveScaler.decide` takes the time and
the measurements, returns replicas, and keeps its history in the object.
"""

from __future__ import annotations

import json
import math
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class ScheduledEvent:
    """A load event known ahead of time (a flash sale)."""

    start_unix: float
    """When the event starts (the load rises)."""
    announced_unix: float
    """When the policy learns of it (it is ignored before)."""
    end_unix: float | None = None
    """When the event ends, if announced (else ``hold_after_start_s`` after the start)."""


def read_events(path: str | Path) -> list[ScheduledEvent]:
    """Events from a JSON file ``{"events": [{"start_unix": .., "announced_unix": ..}]}``;
    an absent file means no events."""
    p = Path(path)
    if not p.is_file():
        return []
    data = json.loads(p.read_text())
    return [ScheduledEvent(**e) for e in data.get("events", [])]


def write_events(path: str | Path, events: list[ScheduledEvent]) -> None:
    Path(path).write_text(json.dumps({"events": [e.__dict__ for e in events]}, indent=2) + "\n")


@dataclass
class PredictiveScaler:
    """Replicas wanted ``lead_s`` ahead; one instance per deployment (it keeps history)."""

    capacity_per_replica: float
    """Load one replica carries at the target utilisation (Serve: target ongoing requests)."""
    lead_s: float
    """How far ahead capacity must be asked for: node arrival + replica start."""
    min_replicas: int = 1
    max_replicas: int = 4
    headroom: float = 1.5
    """Capacity asked for over the predicted load (queueing margin of a few replicas)."""
    trend_window_s: float = 60.0
    """Window of the slope fit."""
    trend_bin_s: float = 5.0
    """The fit runs over means of this many seconds (samples a control-loop tick apart are
    not independent)."""
    trend_min_t: float = 3.0
    """A slope counts only at least this many standard errors above zero."""
    level_window_s: float = 10.0
    """Window of the current level (a mean)."""
    downscale_hold_s: float = 120.0
    """Scale down only to the largest decision of this many recent seconds."""
    period_s: float | None = None
    """Length of a day, for the learned daily shape (None: no seasonality)."""
    event_replicas: int | None = None
    """Replicas held ahead of an announced event (None: ``max_replicas``)."""
    hold_after_start_s: float = 60.0
    """How long after an event's start the reservation holds (unless it announced an end)."""
    history: deque[tuple[float, float]] = field(default_factory=deque)
    decisions: deque[tuple[float, int]] = field(default_factory=deque)

    # ---- forecasts ------------------------------------------------------------------------

    def _window(self, now: float, seconds: float) -> list[tuple[float, float]]:
        return [(t, x) for t, x in self.history if t > now - seconds]

    def level(self, now: float) -> float:
        recent = self._window(now, self.level_window_s)
        return sum(x for _, x in recent) / len(recent) if recent else 0.0

    def slope(self, now: float) -> float:
        """Least-squares slope of the load over the trend window (load units per second), 0
        before a whole window was seen or when it is within the noise (``trend_min_t``)."""
        if not self.history or self.history[0][0] > now - 0.9 * self.trend_window_s:
            return 0.0
        bins: dict[int, list[float]] = {}
        for t, x in self._window(now, self.trend_window_s):
            bins.setdefault(int((now - t) // self.trend_bin_s), []).append(x)
        pts = [(-(k + 0.5) * self.trend_bin_s, sum(v) / len(v)) for k, v in bins.items()]
        n = len(pts)
        if n < 4:
            return 0.0
        mt = sum(t for t, _ in pts) / n
        mx = sum(x for _, x in pts) / n
        var = sum((t - mt) ** 2 for t, _ in pts)
        if var <= 0:
            return 0.0
        b = sum((t - mt) * (x - mx) for t, x in pts) / var
        residual = sum((x - mx - b * (t - mt)) ** 2 for t, x in pts) / (n - 2)
        stderr = math.sqrt(residual / var)
        return b if b > 0 and (stderr == 0 or b / stderr >= self.trend_min_t) else 0.0

    def _at(self, t: float, width: float) -> float | None:
        pts = [x for s, x in self.history if abs(s - t) <= width / 2]
        return sum(pts) / len(pts) if pts else None

    def seasonal(self, now: float) -> float | None:
        """Load one day ago at ``now + lead_s``, scaled by today / that day at ``now``."""
        if self.period_s is None or not self.history:
            return None
        if self.history[0][0] > now - self.period_s:
            return None  # not a full day seen yet
        ahead = self._at(now + self.lead_s - self.period_s, 30.0)
        then = self._at(now - self.period_s, 30.0)
        if ahead is None:
            return None
        ratio = 1.0 if not then else max(0.5, min(2.0, self.level(now) / then))
        return ahead * ratio

    def predicted_load(self, now: float, queued: float = 0.0) -> float:
        """Load expected ``lead_s`` from now (never below the current level)."""
        level = self.level(now)
        trend = level + max(0.0, self.slope(now)) * self.lead_s
        seasonal = self.seasonal(now) or 0.0
        return max(level, trend, seasonal) + max(0.0, queued)

    def event_floor(self, now: float, events: list[ScheduledEvent]) -> int:
        """Replicas an announced event asks for at ``now`` (0: none)."""
        floor = 0
        for e in events:
            if now < e.announced_unix:
                continue
            end = e.end_unix if e.end_unix is not None else e.start_unix + self.hold_after_start_s
            if e.start_unix - self.lead_s <= now < end:
                floor = max(floor, self.event_replicas or self.max_replicas)
        return floor

    # ---- the decision ---------------------------------------------------------------------

    def decide(
        self,
        now: float,
        load: float,
        *,
        queued: float = 0.0,
        events: list[ScheduledEvent] | None = None,
    ) -> int:
        """Record ``load`` at ``now`` and return the replicas wanted."""
        self.history.append((now, float(load)))
        keep = max(self.trend_window_s, self.level_window_s) + (self.period_s or 0.0) + 60.0
        while self.history and self.history[0][0] < now - keep:
            self.history.popleft()
        predicted = self.predicted_load(now, queued)
        wanted = math.ceil(predicted * self.headroom / self.capacity_per_replica - 1e-9)
        wanted = max(wanted, self.event_floor(now, events or []))
        wanted = min(self.max_replicas, max(self.min_replicas, wanted))
        self.decisions.append((now, wanted))
        while self.decisions and self.decisions[0][0] < now - self.downscale_hold_s:
            self.decisions.popleft()
        return max(n for _, n in self.decisions)
