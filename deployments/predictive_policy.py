"""Serve's custom autoscaling policy API over :class:`recsys.experiments.forecast.PredictiveScaler`.

Set on a deployment as ``autoscaling_config.policy``::

    policy:
      policy_function: deployments.predictive_policy:PredictivePolicy
      policy_kwargs: {capacity_per_replica: 1.0, lead_s: 150, events_file: /path/events.json}

Serve instantiates the class once per deployment with ``policy_kwargs`` and calls it every
control-loop tick with an ``AutoscalingContext``; it returns the replicas wanted (Serve clamps
them to ``min_replicas``/``max_replicas``). The load it predicts from is the deployment's
ongoing requests (running and queued, Serve's ``total_num_requests``); announced events are
read from ``events_file`` (JSON, :func:`recsys.experiments.forecast.read_events`), reread when
it changes, so a shop can announce a sale while the app runs.
"""

from __future__ import annotations

import os
import time
from typing import Any

from recsys.experiments.forecast import PredictiveScaler, ScheduledEvent, read_events


class PredictivePolicy:
    """A class-callable Serve autoscaling policy (state lives in the instance)."""

    def __init__(self, events_file: str | None = None, **scaler_kwargs: Any):
        self.scaler = PredictiveScaler(**scaler_kwargs)
        self.events_file = events_file
        self._events: list[ScheduledEvent] = []
        self._events_mtime: float | None = None

    def events(self) -> list[ScheduledEvent]:
        if not self.events_file:
            return []
        try:
            mtime = os.stat(self.events_file).st_mtime
        except OSError:
            return self._events
        if mtime != self._events_mtime:
            self._events, self._events_mtime = read_events(self.events_file), mtime
        return self._events

    def __call__(self, ctx: Any) -> tuple[int, dict[str, Any]]:
        now = ctx.current_time or time.time()
        # total_num_requests counts queued requests too: queue growth shows in the level
        # and its slope
        wanted = self.scaler.decide(now, float(ctx.total_num_requests), events=self.events())
        return wanted, dict(ctx.policy_state or {})
