"""Serve's custom autoscaling policy API over :class:`recsys.experiments.forecast.PredictiveScaler`.

Set on a deployment as ``autoscaling_config.policy``::

    policy:
      policy_function: deployments.predictive_policy:PredictivePolicy
      policy_kwargs: {capacity_per_replica: 1.0, lead_s: 150, events_file: /path/events.json,
                      profile_file: /path/yesterday.json, decisions_file: /path/decisions.jsonl}

Serve instantiates the class once per deployment with ``policy_kwargs`` and calls it every
control-loop tick with an ``AutoscalingContext``; it returns the replicas wanted (Serve clamps
them to ``min_replicas``/``max_replicas``). The load it predicts from is the deployment's
ongoing requests (running and queued, Serve's ``total_num_requests``); announced events are
read from ``events_file`` (JSON, :func:`recsys.experiments.forecast.read_events`), reread when
it changes, so a shop can announce a sale while the app runs. An earlier day's load for the
daily shape comes from ``profile_file`` (:func:`recsys.experiments.forecast.read_profile`), also
reread when it changes. With ``decisions_file`` every decision is appended to it as a JSON
line (time, load, level, slope, seasonal forecast, prediction, replicas wanted and held).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from typing import Any

from recsys.experiments.forecast import PredictiveScaler, read_events, read_profile


class _Reread:
    """A file's parsed contents, parsed again when its modification time changes."""

    def __init__(self, path: str | None, parse: Callable[[str], Any], empty: Any):
        self.path, self.parse, self.value = path, parse, empty
        self._mtime: float | None = None

    def get(self) -> Any:
        if not self.path:
            return self.value
        try:
            mtime = os.stat(self.path).st_mtime
        except OSError:
            return self.value
        if mtime != self._mtime:
            try:
                self.value = self.parse(self.path)
            except (OSError, ValueError, KeyError, TypeError):
                return self.value  # unreadable now: keep the last good one, retry next tick
            self._mtime = mtime
        return self.value


class PredictivePolicy:
    """A class-callable Serve autoscaling policy (state lives in the instance)."""

    def __init__(
        self,
        events_file: str | None = None,
        profile_file: str | None = None,
        decisions_file: str | None = None,
        **scaler_kwargs: Any,
    ):
        self.scaler = PredictiveScaler(**scaler_kwargs)
        self._events = _Reread(events_file, read_events, [])
        self._profile = _Reread(profile_file, read_profile, None)
        self.decisions_file = decisions_file

    def __call__(self, ctx: Any) -> tuple[int, dict[str, Any]]:
        now = ctx.current_time or time.time()
        self.scaler.profile = self._profile.get()
        # total_num_requests counts queued requests too: queue growth shows in the level
        # and its slope
        wanted = self.scaler.decide(now, float(ctx.total_num_requests), events=self._events.get())
        if self.decisions_file:
            with open(self.decisions_file, "a") as f:
                f.write(json.dumps(self.scaler.last) + "\n")
        return wanted, dict(ctx.policy_state or {})
