"""Replay a run's recorded predictive-policy inputs through the current policy code.

``policy_decisions.jsonl`` holds, per control-loop tick, the load Serve gave the predictive
policy and what the policy answered. Feeding the same loads (and the run's announced events
and earlier-day profile) to :class:`recsys.experiments.forecast.PredictiveScaler` as it is
now answers one question without a 15-minute run: would the policy, as changed since, have
asked for the same gangs on that run? Ticks before the traffic's zero are not compared (the
live profile's day start was then an estimate).

Usage: ``python -m recsys.experiments.replay results/experiments/diurnal-predictive``.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from recsys.experiments.forecast import DailyProfile, PredictiveScaler, ScheduledEvent
from recsys.experiments.policies import Stage
from recsys.experiments.spec import DECISIONS_FILE, PROFILE_STEP_S, ExperimentSpec
from recsys.traffic.runner import read_records

RANKER: Stage = "ranker"


def scaler_settings(
    spec: ExperimentSpec, target_ongoing: float, min_replicas: int, max_replicas: int
) -> dict[str, Any]:
    """The predictive policy's settings for a stage of a run (what the experiment gives
    Serve, the files aside)."""
    return {
        "capacity_per_replica": target_ongoing,
        "lead_s": max(spec.node_arrival_s.values(), default=0.0) + spec.replica_start_s,
        "min_replicas": min_replicas,
        "max_replicas": max_replicas,
        "headroom": spec.policy.headroom,
        "downscale_hold_s": spec.policy.downscale_hold_s,
        "period_s": getattr(spec.traffic.shape, "period_s", None),
    }


@dataclass
class Replay:
    ticks: int
    """Ticks compared (from the traffic's zero on)."""
    differing: int
    """Ticks where the replayed policy asked for other replicas than the live one."""
    transitions: list[tuple[float, int]]
    """(seconds from the traffic's zero, replicas) at each change of the replayed answer."""


def replay(directory: str | Path, min_replicas: int = 1) -> Replay:
    """Replay the ranker's decisions of one run (``min_replicas``: the profile's, 1 in
    ``deployments/configs/gpu.yaml``)."""
    directory = Path(directory)
    spec = ExperimentSpec.read(directory)
    _, facts = read_records(directory / "requests.parquet")
    t0 = float(facts["t0_unix"])
    stage = spec.policy.stages[RANKER]
    settings = scaler_settings(
        spec,
        stage.target_ongoing_requests,
        stage.min_replicas or min_replicas,
        stage.max_replicas or 1,
    )
    profile = None
    if spec.daily_profile and settings["period_s"]:
        profile = DailyProfile(t0, settings["period_s"], PROFILE_STEP_S, tuple(spec.daily_profile))
    scaler = PredictiveScaler(**settings, profile=profile)
    events = [ScheduledEvent(**e) for e in spec.events]
    ticks = differing = 0
    transitions: list[tuple[float, int]] = []
    for line in (directory / DECISIONS_FILE).read_text().splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        held = scaler.decide(row["t"], row["load"], events=events)
        if not transitions or transitions[-1][1] != held:
            transitions.append((round(row["t"] - t0, 1), held))
        if row["t"] >= t0:
            ticks += 1
            differing += int(held != row["held"])
    return Replay(ticks, differing, transitions)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("runs", nargs="+", type=Path, help="experiment directories")
    args = p.parse_args(argv)
    for run in args.runs:
        r = replay(run)
        print(f"{run}: {r.differing} of {r.ticks} ticks differ; replayed: {r.transitions}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
