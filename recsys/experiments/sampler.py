"""Periodic snapshots of the cluster (replicas per deployment, worker nodes per type) to a frame.

The sampler runs a probe (a callable returning a :class:`Snapshot`) every ``interval_s`` in a
background thread. The probe is injected: the experiment passes
``deployments.cluster_probe.snapshot`` (Ray), tests pass a fake. A probe that fails records the
error in a row of its own and the sampler carries on: a gap in the samples is visible, never
silent.

``samples.parquet`` is long-form, one row per (time, metric, name)::

    t_unix  metric            name          value
    ...     running_replicas  QueryEncoder  2
    ...     target_replicas   QueryEncoder  3
    ...     starting_replicas QueryEncoder  1
    ...     worker_nodes      gpu-small     2
    ...     pending_nodes     gpu-multi     1
    ...     probe_ms          probe         14.2
    ...     probe_error       <message>     1
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from recsys.experiments.cluster_spec import ReplicaCounts

SAMPLE_COLUMNS = ["t_unix", "metric", "name", "value"]
METRICS = (
    "running_replicas",
    "target_replicas",
    "starting_replicas",
    "worker_nodes",
    "pending_nodes",
    "probe_ms",
    "probe_error",
)


@dataclass
class Snapshot:
    """The cluster at one moment."""

    t_unix: float
    worker_nodes: Mapping[str, int] = field(default_factory=dict)
    """Active worker nodes by node type (the head left out)."""
    pending_nodes: Mapping[str, int] = field(default_factory=dict)
    """Nodes being launched by type."""
    replicas: Mapping[str, ReplicaCounts] = field(default_factory=dict)
    """Replica counts per deployment."""

    def rows(self, node_types: list[str] | None = None) -> list[tuple[float, str, str, float]]:
        """Long-form rows; node types in ``node_types`` get explicit zeros when absent."""
        t = self.t_unix
        out: list[tuple[float, str, str, float]] = []
        for name, c in sorted(self.replicas.items()):
            out.append((t, "running_replicas", name, float(c.running)))
            out.append((t, "target_replicas", name, float(c.target)))
            out.append((t, "starting_replicas", name, float(c.starting)))
        types = sorted(set(node_types or []) | set(self.worker_nodes) | set(self.pending_nodes))
        for name in types:
            out.append((t, "worker_nodes", name, float(self.worker_nodes.get(name, 0))))
            out.append((t, "pending_nodes", name, float(self.pending_nodes.get(name, 0))))
        return out


class Sampler:
    """Calls ``probe`` every ``interval_s`` in a daemon thread until :meth:`stop`."""

    def __init__(
        self,
        probe: Callable[[], Snapshot],
        interval_s: float = 1.0,
        node_types: list[str] | None = None,
    ):
        if interval_s <= 0:
            raise ValueError("interval_s must be > 0")
        self.probe = probe
        self.interval_s = interval_s
        self.node_types = list(node_types or [])
        self._rows: list[tuple[float, str, str, float]] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.last: Snapshot | None = None
        """The most recent successful snapshot."""

    def start(self) -> Sampler:
        if self._thread is not None:
            raise RuntimeError("sampler already started")
        self._thread = threading.Thread(target=self._run, name="cluster-sampler", daemon=True)
        self._thread.start()
        return self

    def sample_once(self) -> Snapshot | None:
        """Take one sample now (also what the thread does each period)."""
        started = time.monotonic()
        try:
            snap = self.probe()
        except Exception as exc:  # a failed probe is data, not a crash
            message = f"{type(exc).__name__}: {exc}"[:300]
            with self._lock:
                self._rows.append((time.time(), "probe_error", message, 1.0))
            return None
        ms = (time.monotonic() - started) * 1000.0
        with self._lock:
            self._rows.extend(snap.rows(self.node_types))
            self._rows.append((snap.t_unix, "probe_ms", "probe", ms))
            self.last = snap
        return snap

    def _run(self) -> None:
        next_at = time.monotonic()
        while not self._stop.is_set():
            self.sample_once()
            next_at += self.interval_s
            delay = next_at - time.monotonic()
            if delay < 0:  # the probe took longer than a period: skip, do not burst
                next_at = time.monotonic()
                delay = 0
            self._stop.wait(delay)

    def stop(self, timeout_s: float = 30.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)

    def __enter__(self) -> Sampler:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def frame(self) -> pd.DataFrame:
        """All samples so far, long form (:data:`SAMPLE_COLUMNS`)."""
        with self._lock:
            rows = list(self._rows)
        frame = pd.DataFrame(rows, columns=SAMPLE_COLUMNS)
        return frame.astype(
            {"t_unix": "float64", "metric": "string", "name": "string", "value": "float64"}
        )

    def write(self, path: Path) -> pd.DataFrame:
        frame = self.frame()
        path.parent.mkdir(parents=True, exist_ok=True)
        frame.to_parquet(path, index=False)
        return frame


def wide(samples: pd.DataFrame, metric: str) -> pd.DataFrame:
    """One metric as a wide frame: index ``t_unix``, one column per name (forward-filled)."""
    part = samples[samples["metric"] == metric]
    if part.empty:
        return pd.DataFrame()
    table = part.pivot_table(index="t_unix", columns="name", values="value", aggfunc="last")
    table.columns = [str(c) for c in table.columns]
    return table.sort_index().ffill().fillna(0.0)
