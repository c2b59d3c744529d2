"""Typed configuration of a benchmark run: the systems, the sweep, the SLO.

A *system* is one way of serving the same artifact: ``inprocess`` (the library with a dynamic
batcher on every core, no HTTP: the bound), ``naive`` (the project's FastAPI app under uvicorn,
one worker per core), ``monolith`` (one Serve replica with every stage and ``@serve.batch``),
``serve`` (the Serve app in its default local topology) and ``serve_split`` (the same app with
one deployment per stage). A *variant* is a system with one setting changed (an environment
variable, an AppConfig field, the Ray start); it is measured in the same run as the system it
names as ``baseline``.
"""

from __future__ import annotations

import os
from typing import Any, Literal, Self

from pydantic import Field, model_validator

from recsys.bench.streams import STREAMS, StreamName
from recsys.bench.topology import Layout
from recsys.config import AppConfig, StrictModel
from recsys.traffic.config import RouteMix

SystemKind = Literal["inprocess", "naive", "monolith", "serve"]
SYSTEM_KINDS: tuple[SystemKind, ...] = ("inprocess", "naive", "monolith", "serve")
RAY_KINDS: tuple[SystemKind, ...] = ("monolith", "serve")
"""Kinds that run on a Ray instance (started in a host subprocess)."""

ExperimentName = Literal["int8", "cache", "nprobe", "candidates", "raw_throughput"]
EXPERIMENTS: tuple[ExperimentName, ...] = (
    "raw_throughput",
    "int8",
    "cache",
    "nprobe",
    "candidates",
)


class SloConfig(StrictModel):
    """When a rate counts as sustained."""

    p99_ms: float = Field(100.0, gt=0)
    """Bound on the 99th percentile of latency (scheduled arrival -> answer) of good requests."""
    min_good_share: float = Field(0.99, gt=0.0, le=1.0)
    """Share of scheduled requests that must be good: HTTP 200 (or an in-process answer) and
    not degraded (a degraded answer skipped the ranker, so it is not the full service)."""


class SweepConfig(StrictModel):
    """How each system is measured: low-load points, then a search for its sustained rate.

    The search runs on a continuous rate, per system: it starts near the system's own capacity
    (estimated from the CPU per request of its low-load points), climbs or descends by
    ``step`` until it brackets the sustained rate (a passing rate below a failing one), then
    bisects (geometric middle) until the bracket is within ``tolerance``. Later repeats start
    from the previous repeat's estimate with the finer ``repeat_step``. No grid is shared
    between systems, so two systems report the same number only if they measure the same.
    """

    duration_s: float = Field(gt=0, le=600)
    """Seconds of arrivals per searched rate."""
    low_rates: list[float] = Field(default_factory=lambda: [10.0, 20.0, 40.0], min_length=1)
    """Low rates (req/s, ascending) where p50/p99 and the overhead over in-process are taken."""
    low_requests: int = Field(200, ge=1)
    """Scheduled requests at each low rate (its duration is ``low_requests / rate``)."""
    repeats: int = Field(3, ge=1, le=10)
    """Independent repeats (own seeds) of the low-load points and the search."""
    start_rate: float | None = Field(None, gt=0)
    """First searched rate of the first repeat (None: 0.8 x the system's CPU estimate)."""
    step: float = Field(1.3, gt=1.0)
    """Factor of the first repeat's climb / descent (its low-load CPU overstates the cost of
    a batching system under load, so its capacity is often well above the start)."""
    repeat_step: float = Field(1.1, gt=1.0)
    """Factor of the later repeats' climb / descent around the previous estimate."""
    tolerance: float = Field(0.05, gt=0.0, lt=1.0)
    """Bisect until the failing rate is within ``1 + tolerance`` of the passing one."""
    max_points: int = Field(10, ge=2)
    """Searched rates per repeat at most (the bracket found so far is then reported)."""
    min_rate: float = Field(1.0, gt=0)
    """The search never goes below this (a failure here: sustained 0)."""
    max_rate: float = Field(2000.0, gt=0)
    """Nor above this (a pass here: sustained >= max_rate, flagged)."""
    warmup_s: float = Field(3.0, ge=0)
    """Seconds of unrecorded traffic at ``warmup_rate`` before the sweep (JIT, caches, pools)."""
    warmup_rate: float = Field(10.0, gt=0)
    """Rate of the warm-up traffic."""
    settle_s: float = Field(2.0, ge=0)
    """Pause between two rates (queues drain, replicas settle)."""
    timeout_s: float = Field(5.0, gt=0, le=120)
    """Per-request client timeout; a request that gets no answer in time is a ``timeout``."""
    max_requests_per_point: int = Field(20_000, ge=1)
    """Hard cap on the requests scheduled for one rate."""

    @model_validator(mode="after")
    def _check_rates(self) -> Self:
        if any(r <= 0 for r in self.low_rates):
            raise ValueError("sweep.low_rates must be > 0")
        if list(self.low_rates) != sorted(set(self.low_rates)):
            raise ValueError("sweep.low_rates must be strictly ascending")
        if self.min_rate >= self.max_rate:
            raise ValueError("sweep.min_rate must be < sweep.max_rate")
        return self

    def low_duration_s(self, rate: float) -> float:
        """Seconds of arrivals at a low rate: Poisson arrivals three standard deviations above
        ``low_requests``, so a point has at least that many requests in all but ~0.1% of
        draws."""
        return (self.low_requests + 3.0 * self.low_requests**0.5) / rate


class BatchConfig(StrictModel):
    """Dynamic batching of the in-process batcher and of the monolith's ``@serve.batch``."""

    max_batch_size: int = Field(16, ge=1)
    """Requests per ``Pipeline.run`` at most."""
    batch_wait_timeout_s: float = Field(0.002, ge=0)
    """How long the first request of a batch waits for others to join."""


class SystemSpec(StrictModel):
    """One system (or variant) to measure."""

    name: str = Field(pattern=r"^[a-z][a-z0-9_:+.-]{0,47}$")
    """Name in tables and file names (``serve``, ``serve:proxy`` ...)."""
    kind: SystemKind
    """How it serves."""
    description: str = ""
    """One line for the report."""
    baseline: str | None = None
    """The system this variant is compared with (None: a main system)."""
    env: dict[str, str] = Field(default_factory=dict)
    """Environment of the server process (for Ray: of the whole Ray instance)."""
    app_overrides: dict[str, Any] = Field(default_factory=dict)
    """Deep-merged into the run's AppConfig (e.g. ``{"encoder": {"cache_size": 0}}``)."""
    include_dashboard: bool = False
    """Ray start: with the dashboard (Ray's default) or lean (no dashboard)."""
    batch: BatchConfig = BatchConfig()
    """Batching of ``inprocess`` and ``monolith``."""
    torch_threads: int | None = Field(None, ge=1)
    """torch / FAISS threads of ``inprocess`` (None: the machine's cores)."""
    topology: Layout | None = None
    """Serve systems: the topology to run (None: the profile's own, the default local one)."""
    streams: list[StreamName] | None = None
    """Streams this system is measured on (None: every stream of the run)."""

    def app_config(self, base: AppConfig) -> AppConfig:
        """``base`` with :attr:`app_overrides` merged in and :attr:`topology` set (validated;
        ``TopologyUnavailableError`` when this recsys cannot run that topology)."""
        from recsys.bench.topology import with_layout

        app = base
        if self.app_overrides:
            merged = deep_merge(base.model_dump(mode="json"), self.app_overrides)
            app = AppConfig.model_validate(merged)
        return with_layout(app, self.topology)

    @property
    def is_ray(self) -> bool:
        return self.kind in RAY_KINDS


def deep_merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """A copy of ``base`` with ``update`` merged in, recursively for nested dicts."""
    out = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


class BenchConfig(StrictModel):
    """Everything one benchmark run needs."""

    artifacts: str
    """Local artifact directory (read only)."""
    app: AppConfig
    """The serving config every system uses (the ``local`` profile, artifacts overridden)."""
    systems: list[SystemSpec] = Field(min_length=1)
    """Systems and variants, measured in this order."""
    sweep: SweepConfig
    slo: SloConfig = SloConfig()
    seed: int = 0
    """Seed of every schedule: the same rate gives the same requests for every system."""
    mix: RouteMix = RouteMix(search=0.7, recommend=0.2, similar=0.1)
    """Endpoint mix: mostly search, some recommendations and similar items."""
    streams: list[StreamName] = Field(default_factory=lambda: list(STREAMS), min_length=1)
    """Query streams measured, the first one the main one (the old keys of ``--json``)."""
    torch_threads: int = Field(1, ge=1)
    """torch / FAISS threads of each naive worker (the Serve stages use their
    StageConfig.torch_threads; the local profile has 1)."""
    cores: int = Field(default_factory=lambda: os.cpu_count() or 1, ge=1)
    """Cores of the machine: torch / FAISS threads of the in-process bound, uvicorn workers
    of the naive server (one per core)."""
    nice: int = Field(15, ge=0, le=19)
    """Niceness of the load generator, the in-process pipeline and the naive server: Ray runs
    its workers at 15, so everything that does request work competes on equal terms."""
    experiments: list[ExperimentName] = Field(default_factory=list)
    """Offline experiments to run after the sweeps."""
    ray_num_cpus: int = Field(2, ge=1)
    """``num_cpus`` of the Ray instance (logical; the local profile asks for fractions)."""
    wait_for_ray_s: float = Field(1800.0, ge=0)
    """How long to wait for the machine to be quiet (no other Ray instance, background load
    under ``max_background_cores``) before starting a system."""
    max_background_cores: float = Field(0.5, gt=0)
    """Busy cores (not ours) above which the machine counts as busy, before a system starts
    and during a rate (which is then measured again)."""
    point_retries: int = Field(2, ge=0)
    """How often a rate overlapped by other work is measured again (the last one is kept)."""

    @model_validator(mode="after")
    def _check_systems(self) -> Self:
        names = [s.name for s in self.systems]
        if len(set(names)) != len(names):
            raise ValueError(f"system names must be unique, got {names}")
        for s in self.systems:
            if s.baseline is not None and s.baseline not in names:
                raise ValueError(f"{s.name}: baseline {s.baseline!r} is not in the run")
        return self

    @property
    def low_rate(self) -> float:
        """The lowest low-load rate (the headline table's low-load column)."""
        return self.sweep.low_rates[0]

    @property
    def main_stream(self) -> StreamName:
        return self.streams[0]

    def streams_of(self, spec: SystemSpec) -> list[StreamName]:
        """The streams ``spec`` is measured on (this run's, in its order)."""
        wanted = spec.streams if spec.streams is not None else STREAMS
        return [s for s in self.streams if s in wanted]

    def system(self, name: str) -> SystemSpec:
        for s in self.systems:
            if s.name == name:
                return s
        raise KeyError(name)


class HostSpec(StrictModel):
    """What a Ray host process (``scripts/bench.py host``) starts: the contract between the
    Ray-free harness and the Ray side."""

    kind: Literal["monolith", "serve"]
    app: AppConfig
    """The app's config (``serve``: ``build_app``'s args; ``monolith``: the pipeline's)."""
    batch: BatchConfig = BatchConfig()
    """The monolith's ``@serve.batch`` settings."""
    torch_threads: int = Field(1, ge=1)
    """The monolith replica's torch / FAISS threads."""
    include_dashboard: bool = False
    num_cpus: int = Field(2, ge=1)
    port: int = Field(ge=1, le=65535)
    """Serve's HTTP proxy port on 127.0.0.1."""
    ready_file: str
    """Where the host writes ``{"url": ..., "urls": [...]}`` once the app answers (``urls``:
    each ingress replica's own port under direct ingress)."""


# ---- presets ---------------------------------------------------------------------------------


def full_sweep() -> SweepConfig:
    """20 s per searched rate, three repeats, 200 requests at each of three low rates."""
    return SweepConfig(
        duration_s=20.0,
        low_rates=[10.0, 20.0, 40.0],
        low_requests=200,
        repeats=3,
        step=1.4,
        tolerance=0.05,
        max_points=9,
        warmup_s=5.0,
        settle_s=2.0,
    )


def quick_sweep() -> SweepConfig:
    """One repeat of shorter points, a coarser bracket: the same keys in under 15 minutes."""
    return SweepConfig(
        duration_s=6.0,
        low_rates=[10.0, 20.0, 40.0],
        low_requests=200,
        repeats=1,
        step=1.5,
        tolerance=0.12,
        max_points=7,
        warmup_s=2.0,
        settle_s=1.0,
    )


MAIN_SYSTEMS: dict[str, SystemSpec] = {
    "inprocess": SystemSpec(
        name="inprocess",
        kind="inprocess",
        description="library Pipeline with a dynamic batcher (16 / 2 ms), torch / FAISS on "
        "every core; no Ray, no HTTP: the bound",
        streams=["longtail"],
    ),
    "naive": SystemSpec(
        name="naive",
        kind="naive",
        description="the project's FastAPI app (recsys.bench.naive_server) under "
        "`uvicorn --workers <cores>`, Pipeline.run([one]) per request, 1 torch thread a worker",
    ),
    "monolith": SystemSpec(
        name="monolith",
        kind="monolith",
        description="one Serve replica with every stage, @serve.batch 16 / 2 ms",
        streams=["longtail"],
    ),
    "serve": SystemSpec(
        name="serve",
        kind="serve",
        description="the Serve app in the default local topology (local profile), lean Ray "
        "start, throughput-optimised Serve with direct ingress (deployments.serve_main)",
    ),
    "serve_split": SystemSpec(
        name="serve_split",
        kind="serve",
        description="the Serve app in the split topology (one deployment per stage), "
        "otherwise as `serve`",
        topology="split",
        streams=["longtail"],
    ),
    "serve_fused": SystemSpec(
        name="serve_fused",
        kind="serve",
        description="the Serve app in the fused topology (the stages inside the ingress "
        "replicas), otherwise as `serve`",
        topology="fused",
        streams=["longtail"],
    ),
}
DEFAULT_SYSTEMS = ("inprocess", "naive", "serve", "serve_split", "serve_fused")
"""Measured unless --systems says otherwise (the monolith only on request). A topology
system whose config is the default's is measured once."""


def _serve_variant(suffix: str, description: str, **fields: Any) -> SystemSpec:
    fields.setdefault("streams", ["longtail"])
    return SystemSpec(
        name=f"serve:{suffix}", kind="serve", baseline="serve", description=description, **fields
    )


def _stages(max_batch_size: int, wait_s: float) -> dict[str, Any]:
    stage = {"max_batch_size": max_batch_size, "batch_wait_timeout_s": wait_s}
    return {"query_encoder": stage, "retriever": stage, "ranker": stage}


PROXY_ENV = {"RAY_SERVE_ENABLE_DIRECT_INGRESS": "0"}

VARIANTS: dict[str, SystemSpec] = {
    "proxy": _serve_variant(
        "proxy",
        "HTTP through Serve's proxy (direct ingress off), otherwise the same throughput-"
        "optimised Serve: one more process and hop per request",
        env=PROXY_ENV,
    ),
    "classic": _serve_variant(
        "classic",
        "Serve's own defaults (RAY_SERVE_THROUGHPUT_OPTIMIZED=0): HTTP through the proxy, Ray "
        "actor calls between replicas, user code and router on threads of their own",
        env={"RAY_SERVE_THROUGHPUT_OPTIMIZED": "0", **PROXY_ENV},
    ),
    "uncoalesced": _serve_variant(
        "uncoalesced",
        "ingress sends every request down the chain on its own (no coalescing)",
        app_overrides={"ingress": {"group_max_size": 1, "groups_in_flight": 256}},
    ),
    "inflight1": _serve_variant(
        "inflight1",
        "ingress coalescing with 1 group in flight (no overlap between stages)",
        app_overrides={"ingress": {"groups_in_flight": 1}},
    ),
    "inflight4": _serve_variant(
        "inflight4",
        "ingress coalescing with 4 groups in flight (smaller groups, more overlap)",
        app_overrides={"ingress": {"groups_in_flight": 4}},
    ),
    "batch8": _serve_variant(
        "batch8", "every stage @serve.batch 8 / 0 ms", app_overrides=_stages(8, 0.0)
    ),
    "batch32": _serve_variant(
        "batch32", "every stage @serve.batch 32 / 5 ms", app_overrides=_stages(32, 0.005)
    ),
    "int8": _serve_variant(
        "int8",
        "encoder int8 dynamic quantisation",
        app_overrides={"encoder": {"precision": "int8"}},
    ),
    "nocache": _serve_variant(
        "nocache",
        "query-embedding caches off (encoder cache_size 0, ingress query_cache_size 0)",
        app_overrides={"encoder": {"cache_size": 0}, "ingress": {"query_cache_size": 0}},
    ),
    "ingresscache": _serve_variant(
        "ingresscache",
        "query cache of 4096 vectors at the ingress: a cached search skips the encoder call",
        app_overrides={"ingress": {"query_cache_size": 4096}},
    ),
    "threads1": SystemSpec(
        name="inprocess:threads1",
        kind="inprocess",
        baseline="inprocess",
        description="in-process pipeline with 1 torch / FAISS thread (one core)",
        torch_threads=1,
        streams=["longtail"],
    ),
    "dashboard": _serve_variant(
        "dashboard", "default Ray start (dashboard and its agents on)", include_dashboard=True
    ),
}


def select_systems(systems: list[str], variants: list[str]) -> list[SystemSpec]:
    """Main systems by name, then variants by suffix; a variant pulls in its baseline."""
    unknown = [s for s in systems if s not in MAIN_SYSTEMS]
    if unknown:
        raise ValueError(f"unknown systems {unknown}; choose from {list(MAIN_SYSTEMS)}")
    bad = [v for v in variants if v not in VARIANTS]
    if bad:
        raise ValueError(f"unknown variants {bad}; choose from {list(VARIANTS)}")
    names = list(dict.fromkeys(systems))
    for v in variants:
        base = VARIANTS[v].baseline
        if base is not None and base not in names:
            names.append(base)
    ordered = [s for s in MAIN_SYSTEMS if s in names]
    return [MAIN_SYSTEMS[s] for s in ordered] + [VARIANTS[v] for v in dict.fromkeys(variants)]
