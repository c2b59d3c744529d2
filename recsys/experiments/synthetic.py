"""A small synthetic experiment directory, for tests and for trying the notebook without a
cluster. Its numbers are made up (and say so in the spec's name and host facts); its files
have exactly the layout ``scripts/experiment.py`` writes.

The story: a step from 5 to 30 req/s at t=20 s, back at t=80 s; p99 rises while replicas
start, the autoscaler adds a node at t=26 s and replicas at t=24/28 s, latency recovers by
t=40 s; after the drop replicas go at t=95 s and the extra node at t=120 s.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from recsys.experiments.cluster_spec import FakeClusterSpec, NodeTypeSpec
from recsys.experiments.policies import get_policy
from recsys.experiments.spec import REQUESTS_FILE, SAMPLES_FILE, ExperimentSpec
from recsys.traffic.config import StepShape, TrafficConfig
from recsys.traffic.runner import RunResult, write_records
from recsys.traffic.shapes import arrival_times

T_UP, T_DOWN, DURATION, TAIL = 20.0, 80.0, 100.0, 40.0
ERRORS = {"http_error": "overloaded", "timeout": "no answer within 5s"}


def synthetic_spec(name: str = "synthetic-step") -> ExperimentSpec:
    cluster = FakeClusterSpec(
        worker_types=[
            NodeTypeSpec(name="gpu-small", cpus=6, gpus=1, min_workers=1, max_workers=3),
            NodeTypeSpec(name="gpu-multi", cpus=16, gpus=2, min_workers=1, max_workers=2),
        ],
        idle_timeout_s=20,
    )
    traffic = TrafficConfig(
        shape=StepShape(low=5, high=30, t_up=T_UP, t_down=T_DOWN), duration_s=DURATION, seed=7
    )
    return ExperimentSpec(
        name=name,
        policy=get_policy("reactive"),
        cluster=cluster,
        traffic=traffic,
        slo_ms=500,
        tail_s=TAIL,
        replica_gpus={"Ingress": 0, "QueryEncoder": 0.5, "Retriever": 0.5, "Ranker": 2},
        command="(synthetic data: recsys.experiments.synthetic.write_synthetic_experiment)",
        host={"data": "synthetic"},
    )


def _replicas(t: float) -> dict[str, int]:
    ranker = 2 if 28 <= t < 95 else 1
    encoder = 2 if 24 <= t < 95 else 1
    return {"Ingress": 1, "QueryEncoder": encoder, "Retriever": 1, "Ranker": ranker}


def _nodes(t: float) -> dict[str, int]:
    return {"gpu-small": 2 if 26 <= t < 120 else 1, "gpu-multi": 2 if 27 <= t < 120 else 1}


def write_synthetic_experiment(directory: str | Path, seed: int = 0) -> Path:
    """Write ``experiment.json``, ``requests.parquet`` and ``samples.parquet``."""
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    spec = synthetic_spec(out.name if out.name else "synthetic-step")
    spec.write(out)
    rng = np.random.default_rng(seed)
    t0 = 1_800_000_000.0
    times = arrival_times(spec.traffic.shape, DURATION, rng)
    n = len(times)
    overloaded = (times >= T_UP) & (times < 40.0)
    base = rng.lognormal(np.log(60.0), 0.35, size=n)
    latency = np.where(overloaded, base * rng.uniform(4, 14, size=n), base)
    status = np.full(n, 200, dtype=np.int32)
    outcome = np.array(["ok"] * n, dtype=object)
    busy = overloaded & (rng.uniform(size=n) < 0.05)
    status[busy] = 503
    outcome[busy] = "http_error"
    latency[busy] = rng.uniform(5, 20, size=busy.sum())
    slow = overloaded & ~busy & (rng.uniform(size=n) < 0.01)
    outcome[slow] = "timeout"
    status[slow] = -1
    latency[slow] = spec.traffic.timeout_s * 1000.0
    lag = rng.exponential(1.0, size=n)
    sent = times + lag / 1000.0
    done = times + latency / 1000.0
    answered = outcome == "ok"
    is_degraded = answered & overloaded & (rng.uniform(size=n) < 0.2)
    routes = rng.choice(["search", "recommend", "similar"], size=n, p=[0.7, 0.2, 0.1])
    records = pd.DataFrame(
        {
            "id": np.arange(n, dtype=np.int64),
            "scheduled_s": times,
            "sent_s": sent,
            "done_s": done,
            "send_lag_ms": lag,
            "latency_ms": (done - times) * 1000.0,
            "response_ms": (done - sent) * 1000.0,
            "route": pd.array(routes, dtype="string"),
            "method": pd.array(np.where(routes == "similar", "GET", "POST"), dtype="string"),
            "status": status,
            "outcome": pd.array(outcome, dtype="string"),
            "variant": pd.array([("control" if a else None) for a in answered], dtype="string"),
            "degraded": pd.array(
                [(bool(d) if a else None) for a, d in zip(answered, is_degraded, strict=True)],
                dtype="boolean",
            ),
            "degraded_reason": pd.array(
                [("ranker_deadline" if d else None) for d in is_degraded], dtype="string"
            ),
            "error": pd.array([ERRORS.get(str(o)) for o in outcome], dtype="string"),
            "server_total_ms": np.where(outcome == "ok", latency * 0.8, np.nan),
        }
    )
    write_records(RunResult(records, t0, DURATION + 1.0, 3.2), out / REQUESTS_FILE, spec.traffic)
    rows = []
    for t in np.arange(-5.0, DURATION + TAIL, 1.0):
        t_unix = t0 + float(t)
        for name, count in _replicas(t).items():
            target = _replicas(t + 2.0)[name]  # the decision precedes the running replica
            rows.append((t_unix, "running_replicas", name, float(count)))
            rows.append((t_unix, "target_replicas", name, float(target)))
            rows.append((t_unix, "starting_replicas", name, float(max(target - count, 0))))
        for name, count in _nodes(t).items():
            pending = 1.0 if _nodes(t + 3.0)[name] > count else 0.0
            rows.append((t_unix, "worker_nodes", name, float(count)))
            rows.append((t_unix, "pending_nodes", name, pending))
        rows.append((t_unix, "probe_ms", "probe", 12.0))
    samples = pd.DataFrame(rows, columns=["t_unix", "metric", "name", "value"])
    samples.astype({"metric": "string", "name": "string"}).to_parquet(
        out / SAMPLES_FILE, index=False
    )
    return out
