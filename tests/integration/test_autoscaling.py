"""A short autoscaling experiment on the simulated GPU cluster, end to end through
``scripts/experiment.py``: fake-provider cluster up, the GPU serve config deployed, a step of
open-loop traffic, then teardown.

Asserts that the step adds at least one replica and at least one worker node, that every
request sent has a recorded outcome, and that the cluster is gone afterwards (no process of
its session left). The ranker's GPU time is simulated (``--device-ms 1000`` per batch of one),
so one ranker gang serves ~1 req/s whatever the CPU, while one replica per stage carries over
10 req/s on 2 cores (results/experiments/old-simulation/capacity-cpu): the step from 0.35 to
3 req/s needs more gangs, hence more ``gpu-multi`` nodes, and leaves the cores room for their
start-ups.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from recsys.experiments.local_cluster import LocalCluster, other_ray_instances, session_members
from tests.integration.conftest import free_port

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]


def test_step_adds_replicas_and_nodes_and_every_request_has_an_outcome(
    tiny_artifact: Path, tmp_path: Path
) -> None:
    others = other_ray_instances()
    if others:
        pytest.skip(
            f"another Ray instance runs on this machine (pid {others[0][0]}): one at a time"
        )
    out = tmp_path / "step"
    state_dir = tmp_path / "cluster"
    command = [
        sys.executable,
        str(ROOT / "scripts" / "experiment.py"),
        "--shape=step",
        "--rate=0.35",
        "--peak=3",
        "--duration=60",
        "--t-up=8",
        "--t-down=50",
        "--policy=reactive",
        "--ranker-batch=1",
        "--device-ms=1000",
        "--deadline-ms=4000",
        "--slo-ms=4000",
        "--warmup=5",
        "--tail=60",
        "--idle-timeout=8",
        "--node-arrival-s=0",  # instant nodes: the delayed provider has its own unit test
        "--allow-dirty",  # a test runs from whatever tree it is in
        "--gpu-small-max=2",
        "--gpu-multi-max=3",
        "--timeout=5",
        f"--port={free_port()}",
        f"--artifacts={tiny_artifact}",
        f"--state-dir={state_dir}",
        f"--out={out}",
    ]
    started = time.monotonic()
    env = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    elapsed = time.monotonic() - started
    print(f"experiment took {elapsed:.0f}s")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]

    summary = json.loads((out / "summary.json").read_text())
    assert summary["requests_sent"] > 100
    assert summary["requests_sent"] == summary["requests_with_outcome"]
    base_replicas = sum(summary["baseline_replicas"].values())
    base_nodes = sum(summary["baseline_worker_nodes"].values())
    assert summary["max_replicas_total"] >= base_replicas + 1, summary
    assert summary["max_worker_nodes"] >= base_nodes + 1, summary
    assert summary["time_to_scale_up_s"] is not None
    for file in ("report.md", "latency.png", "scaling.png", "load.png", "samples.parquet"):
        assert (out / file).is_file(), file

    # torn down: no state, no process of the cluster's session, no raylet of ours
    run = json.loads((out / "run.json").read_text())
    assert LocalCluster(state_dir).state() is None
    assert session_members(int(run["cluster_session"])) == []
    assert not [
        pid for pid, cmd in other_ray_instances() if str(LocalCluster(state_dir).temp_dir()) in cmd
    ]
