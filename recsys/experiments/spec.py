"""The typed description of one experiment run (``experiment.json`` in the result directory).

Everything the analysis needs to interpret the raw parquet files travels here: the load shape
(when the load rose and fell), the SLO, the cluster (GPUs per node type, minimum nodes), the
policy and every override of the serve config, and the command that reproduces the run.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import Field

from recsys.config import StrictModel
from recsys.experiments.cluster_spec import FakeClusterSpec
from recsys.experiments.policies import AutoscalingPolicy, StageOverrides
from recsys.traffic.config import TrafficConfig

SPEC_FILE = "experiment.json"
REQUESTS_FILE = "requests.parquet"
SAMPLES_FILE = "samples.parquet"
SUMMARY_FILE = "summary.json"
REPORT_FILE = "report.md"
DECISIONS_FILE = "policy_decisions.jsonl"
PROFILE_STEP_S = 30.0
"""Resolution of the earlier day's load given to the predictive policy (a metrics export)."""
"""The predictive policy's decisions, one JSON line per control-loop tick (raw, not committed)."""


class ExperimentSpec(StrictModel):
    """One run: cluster, app overrides, policy, traffic, analysis settings."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,79}$")
    """Run name (the result directory's name by default)."""
    profile: str = "gpu"
    """Serve profile deployed (``deployments/configs/<profile>.yaml``)."""
    policy: AutoscalingPolicy
    """Serve autoscaling policy under test."""
    stages: StageOverrides = StageOverrides()
    """Non-resource overrides of the model stages."""
    config_diff: list[tuple[str, Any, Any]] = Field(default_factory=list)
    """Every ``(field, profile value, experiment value)`` that differs from the profile."""
    replica_gpus: dict[str, float] = Field(default_factory=dict)
    """Logical GPUs one replica of each deployment holds (a ranker gang: all its bundles)."""
    cluster: FakeClusterSpec
    """The simulated cluster."""
    traffic: TrafficConfig
    """The traffic run (shape, duration, mix, seed, timeout)."""
    slo_ms: float = Field(1000.0, gt=0)
    """Latency objective: a request meets it with a 2xx, non-degraded answer within this many
    milliseconds of its scheduled time."""
    window_s: float = Field(10.0, gt=0)
    """Width of the windows of the latency and rate series (10 s: ~100 requests at 10 req/s,
    so a window's p99 tolerates one miss)."""
    warmup_s: float = Field(20.0, ge=0)
    """Low-rate traffic before the recorded run (not recorded)."""
    tail_s: float = Field(150.0, ge=0)
    """Seconds observed after the last arrival (scale-down); the cost window is
    ``[0, duration + tail_s]``."""
    sample_interval_s: float = Field(1.0, gt=0)
    """Period of the replica and node samples."""
    port: int = Field(8000, ge=1, le=65535)
    """Serve's HTTP port on the head (loopback)."""
    node_arrival_s: dict[str, float] = Field(default_factory=dict)
    """Seconds from a node's request until it joins, by node type."""
    replica_start_s: float = Field(0.0, ge=0)
    """Expected replica start (artifact download + model load), part of the predictive
    policy's lead time."""
    announce_s: float | None = Field(None, ge=0)
    """How long before the load's rise the event was announced to the policy (None: not)."""
    events: list[dict[str, float]] = Field(default_factory=list)
    """Announced events as given to the policy (unix times)."""
    daily_profile: list[float] | None = None
    """The earlier day's load given to the predictive policy (ranker ongoing requests per
    30 s from the day's start; None: no daily shape given)."""
    usd_per_gpu_hour: float = Field(2.0, gt=0)
    """Price the cost per million requests is stated at."""
    ranker_service_s: float | None = Field(None, gt=0)
    """Device time of one ranker batch of one (the hindsight allocation's capacity model)."""
    ranker_budget_s: float | None = Field(None, gt=0)
    """The ranker's share of the deadline (a request through the ranker later is degraded)."""
    commit: str = ""
    """The commit the run's code came from."""
    dirty_files: list[str] = Field(default_factory=list)
    """Tracked files that differed from the commit (empty unless ``--allow-dirty``)."""
    command: str = ""
    """The command line that reproduces this run."""
    host: dict[str, Any] = Field(default_factory=dict)
    """Where it ran: CPU count, memory, versions."""

    @property
    def cost_window_s(self) -> float:
        return self.traffic.duration_s + self.tail_s

    def write(self, directory: Path) -> Path:
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / SPEC_FILE
        path.write_text(json.dumps(self.model_dump(mode="json"), indent=2) + "\n")
        return path

    @classmethod
    def read(cls, directory: Path) -> ExperimentSpec:
        path = Path(directory) / SPEC_FILE
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found: is {directory} an experiment directory?")
        return cls.model_validate_json(path.read_text())
