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
* a daily shape from earlier days (``period_s``): the load one period ago at the time
  ``lead_s`` ahead, scaled by how today compares with that day over the last
  ``ratio_window_s``. The day comes from a :class:`DailyProfile` when the shop gives one (its
  metrics of yesterday: the policy then needs no day of its own history), else from what the
  policy itself saw one period ago; without either, no seasonality;
* scheduled events (:class:`ScheduledEvent`): a sale announced ahead with its start time.
  From ``start - lead_s`` the policy holds ``event_replicas`` (the magnitude is not announced,
  so it reserves what the pool allows) until ``hold_after_start_s`` after the start, then the
  load decides. Nothing about an event is used before its announcement time.

Scale-down is slow on purpose: the target is the largest decision of the last
``downscale_hold_s`` seconds, so capacity that took minutes to arrive is not given back on a
lull. The trade-off is GPU-node-seconds: capacity arrives early and leaves late. After an
event whose end was announced, the hold is waived for ``downscale_hold_s``: the shop said
the sale is over, so the capacity reserved for it follows the falling load down. With a
daily shape, the hold keeps no more than the shape says the next ``lead_s`` needs: the
evening's fall is not a lull that comes back.

The load unit is whatever the caller measures (Serve gives ongoing requests per deployment:
for a device-bound stage serving one request at a time, the number of busy replicas).
Everything here is pure and deterministic: :meth:`PredictiveScaler.decide` takes the time and
the measurements, returns replicas, and keeps its history in the object.
"""

from __future__ import annotations

import json
import math
import os
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


def _write_atomic(path: str | Path, text: str) -> None:
    """Write through a temporary file and a rename: a reader sees the old or the new file,
    never half of one (the policy rereads these files while they are rewritten)."""
    p = Path(path)
    tmp = p.with_name(p.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, p)


def write_events(path: str | Path, events: list[ScheduledEvent]) -> None:
    _write_atomic(path, json.dumps({"events": [e.__dict__ for e in events]}, indent=2) + "\n")


@dataclass(frozen=True)
class DailyProfile:
    """The load expected over one day, from an earlier day (what a shop's metrics hold for
    yesterday), in the policy's load unit, one value per ``step_s`` from ``day_start_unix``.

    It covers that one day only: outside it, :meth:`at` knows nothing (a deployment writes
    the next day's file at midnight; the policy rereads it when it changes)."""

    day_start_unix: float
    """When the day starts (midnight)."""
    period_s: float
    """Length of the day."""
    step_s: float
    """Seconds between values."""
    load: tuple[float, ...]
    """Load at ``(i + 0.5) * step_s`` into the day."""

    def at(self, t_unix: float) -> float | None:
        """The load at ``t_unix`` (linear between values), None outside the day."""
        into = t_unix - self.day_start_unix
        if not 0.0 <= into < self.period_s or not self.load:
            return None
        x = min(max(into / self.step_s - 0.5, 0.0), len(self.load) - 1.0)
        i = min(math.floor(x), len(self.load) - 2) if len(self.load) > 1 else 0
        w = x - i
        nxt = self.load[i + 1] if len(self.load) > 1 else self.load[0]
        return (1.0 - w) * self.load[i] + w * nxt


def read_profile(path: str | Path) -> DailyProfile | None:
    """A profile from JSON (:func:`write_profile`); an absent file means none."""
    p = Path(path)
    if not p.is_file():
        return None
    data = json.loads(p.read_text())
    return DailyProfile(
        day_start_unix=float(data["day_start_unix"]),
        period_s=float(data["period_s"]),
        step_s=float(data["step_s"]),
        load=tuple(float(x) for x in data["load"]),
    )


def write_profile(path: str | Path, profile: DailyProfile) -> None:
    data = {**profile.__dict__, "load": list(profile.load)}
    _write_atomic(path, json.dumps(data, indent=2) + "\n")


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
    trend_min_t: float = 4.0
    """A slope counts only at least this many standard errors above zero (at 3, overlapping
    windows of a flat 0.35 load passed now and then over a run, each time a gang for nothing;
    a real rise the daily shape or the level answers too)."""
    trend_cap: float = 3.0
    """A trend's extrapolation asks for at most this many times the current level (a clean
    step passes the noise test and, extrapolated 150 s, would ask for the whole pool)."""
    level_window_s: float = 30.0
    """Window of the current level (a mean). At 0.3 req/s a 10 s mean of one-request-at-a-time
    gangs swings between 0 and 0.9: held for ``downscale_hold_s``, the swing alone asked for
    a second gang for the whole run."""
    upscale_sustain_s: float = 30.0
    """What the load's level (and queue) asks for counts only once it has asked for it this
    long (the least of its asks over the span): at 0.3 req/s the cold app's first
    slow answers lifted a 30 s level over the second gang's threshold for 16 s, which, held
    and paid for minutes, cost more than the whole margin to the hindsight allocation."""
    downscale_hold_s: float = 60.0
    """Scale down only to the largest decision of this many recent seconds."""
    period_s: float | None = None
    """Length of a day, for the daily shape (None: no seasonality)."""
    profile: DailyProfile | None = None
    """An earlier day's load for today (replaces the policy's own memory of a day)."""
    ratio_window_s: float = 120.0
    """Window over which today is compared with the earlier day (a ratio of means: one
    request more or less in a 10 s window would swing it by half at the trough)."""
    event_replicas: int | None = None
    """Replicas held ahead of an announced event (None: ``max_replicas``)."""
    hold_after_start_s: float = 60.0
    """How long after an event's start the reservation holds (unless it announced an end)."""
    history: deque[tuple[float, float]] = field(default_factory=deque)
    decisions: deque[tuple[float, int]] = field(default_factory=deque)
    measured_needs: deque[tuple[float, int]] = field(default_factory=deque)
    wanted_recent: deque[tuple[float, int]] = field(default_factory=deque)
    last: dict[str, float | None] = field(default_factory=dict)
    """The last decision's inputs and outputs (for a decision log)."""

    # ---- forecasts ------------------------------------------------------------------------

    def _window(self, now: float, seconds: float) -> list[tuple[float, float]]:
        return [(t, x) for t, x in self.history if t > now - seconds]

    def level(self, now: float) -> float:
        """Mean load over the level window. Before a whole window was seen (the app just
        started, with no load before), the mean is scaled by the share seen: one busy first
        second is not a level."""
        recent = self._window(now, self.level_window_s)
        if not recent:
            return 0.0
        mean = sum(x for _, x in recent) / len(recent)
        seen = now - self.history[0][0]
        return mean * min(1.0, max(seen, 1.0) / self.level_window_s)

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

    def _earlier_day(self, now: float) -> tuple[float, float] | None:
        """(today's load, the earlier day's) over the ratio window: means over the same
        moments, those the earlier day knows."""
        recent = self._window(now, self.ratio_window_s)
        if not recent or recent[0][0] > now - 0.9 * self.ratio_window_s:
            return None
        pairs = [(x, self.yesterday(t)) for t, x in recent[:: max(1, len(recent) // 24)]]
        known = [(x, y) for x, y in pairs if y is not None]
        if len(known) < len(pairs) / 2:
            return None
        return sum(x for x, _ in known) / len(known), sum(y for _, y in known) / len(known)

    def yesterday(self, t: float) -> float | None:
        """The load expected at ``t`` from an earlier day: the profile when one is given (the
        shop's own record, authoritative, and nothing outside its day), else what this policy
        saw one period before ``t`` once it has a whole day of history."""
        if self.profile is not None:
            return self.profile.at(t)
        if self.period_s is None:
            return None
        if self.history and self.history[0][0] <= t - self.period_s:
            return self._at(t - self.period_s, 30.0)
        return None

    def ratio(self, now: float) -> float:
        """Today / the earlier day over the last ``ratio_window_s``, within [0.5, 2] (1 until
        a whole window was seen): a burst today is the trend's and the level's to answer, not
        a reason to double the whole day, and a quiet hour is no reason to expect no morning."""
        compared = self._earlier_day(now)
        if compared is None or compared[1] <= 0:
            return 1.0
        return max(0.5, min(2.0, compared[0] / compared[1]))

    def seasonal(self, now: float) -> float | None:
        """The earlier day's load at ``now + lead_s``, scaled by :meth:`ratio`."""
        ahead = self.yesterday(now + self.lead_s)
        return None if ahead is None else ahead * self.ratio(now)

    def shape_falling(self, now: float, step_s: float = 10.0) -> bool:
        """Whether the earlier day's own load (unscaled) is lower over the next ``lead_s``
        than over the last ``downscale_hold_s``: the evening, not a lull."""
        ahead = [self.yesterday(now + k * step_s) for k in range(int(self.lead_s // step_s) + 1)]
        behind = [
            self.yesterday(now - k * step_s)
            for k in range(int(self.downscale_hold_s // step_s) + 1)
        ]
        a = [x for x in ahead if x is not None]
        b = [x for x in behind if x is not None]
        return bool(a) and bool(b) and max(a) < max(b)

    def seasonal_peak(self, now: float, step_s: float = 10.0) -> float | None:
        """The most the earlier day (scaled as in :meth:`seasonal`) says the load will be at
        any time over the next ``lead_s``; None unless the daily shape covers at least the
        first half of that span (past the profile's day, nothing is known)."""
        ahead = [self.yesterday(now + k * step_s) for k in range(int(self.lead_s // step_s) + 1)]
        known = [x for x in ahead[: len(ahead) // 2 + 1] if x is not None]
        if len(known) < len(ahead) // 2 + 1:
            return None
        return max(x for x in ahead if x is not None) * self.ratio(now)

    def predicted_load(self, now: float, queued: float = 0.0) -> float:
        """Load expected ``lead_s`` from now (never below the current level)."""
        return self._predicted(self.level(now), self.slope(now), self.seasonal(now), queued)

    def _predicted(
        self, level: float, slope: float, seasonal: float | None, queued: float
    ) -> float:
        trend = level + max(0.0, slope) * self.lead_s
        return max(level, trend, seasonal or 0.0) + max(0.0, queued)

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

    def _replicas(self, load: float) -> int:
        return math.ceil(load * self.headroom / self.capacity_per_replica - 1e-9)

    def after_announced_end(self, now: float, events: list[ScheduledEvent]) -> bool:
        """Within ``downscale_hold_s`` after the announced end of an event."""
        return any(
            e.end_unix is not None
            and now >= e.announced_unix
            and e.end_unix <= now < e.end_unix + self.downscale_hold_s
            for e in events
        )

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
        keep = (
            max(self.trend_window_s, self.level_window_s, self.ratio_window_s)
            + (self.period_s or 0.0)
            + 60.0
        )
        while self.history and self.history[0][0] < now - keep:
            self.history.popleft()
        events = events or []
        # each forecast once per tick: the earlier day's ratio scans the history
        raw_level, slope, seasonal = self.level(now), self.slope(now), self.seasonal(now)
        predicted = self._predicted(raw_level, slope, seasonal, queued)
        level = raw_level + max(0.0, queued)
        self.measured_needs.append((now, self._replicas(level)))
        while self.measured_needs and self.measured_needs[0][0] < now - self.upscale_sustain_s:
            self.measured_needs.popleft()
        # what the load's level asks for counts once it has asked for that long; a trend
        # (tested against the noise already), the daily shape and announced events count at
        # once
        wanted = max(
            min(n for _, n in self.measured_needs),
            self._replicas(min(level + slope * self.lead_s, self.trend_cap * level))
            if slope > 0
            else 0,
            self._replicas(seasonal or 0.0),
            self.event_floor(now, events),
        )
        wanted = min(self.max_replicas, max(self.min_replicas, wanted))
        if self.after_announced_end(now, events):
            self.decisions.clear()  # the sale is over: follow the load down, no hold
        self.decisions.append((now, wanted))
        while self.decisions and self.decisions[0][0] < now - self.downscale_hold_s:
            self.decisions.popleft()
        held = max(n for _, n in self.decisions)
        self.wanted_recent.append((now, wanted))
        while self.wanted_recent and self.wanted_recent[0][0] < now - self.upscale_sustain_s:
            self.wanted_recent.popleft()
        peak = self.seasonal_peak(now)
        if peak is not None and self.shape_falling(now):
            # the day's own shape is falling: the hold, a guard against a lull that comes
            # back, keeps no more than the shape says the next lead time needs, and no less
            # than what was wanted and what the level asked for over the last
            # upscale_sustain_s (one noisy tick does not lower it)
            recent = max(
                max(n for _, n in self.measured_needs), max(n for _, n in self.wanted_recent)
            )
            cap = max(recent, self._replicas(peak))
            if cap < held:  # lowered for good: the held decisions above it are forgotten
                self.decisions = deque((t, min(n, cap)) for t, n in self.decisions)
                held = cap
        self.last = {
            "t": now,
            "load": float(load),
            "level": raw_level,
            "slope": slope,
            "seasonal": seasonal,
            "predicted": predicted,
            "wanted": wanted,
            "held": held,
        }
        return held
