"""Typed configuration of a benchmark run: the systems, the sweep, the SLO.

A *system* is one way of serving the same artifact: ``inprocess`` (the library with a dynamic
batcher, no HTTP), ``naive`` (one FastAPI/uvicorn process, one request at a time), ``monolith``
(one Serve replica with every stage and ``@serve.batch``) and ``serve`` (the composed Serve
app). A *variant* is a system with one setting changed (an environment variable, an AppConfig
field, the Ray start); it is measured in the same run as the system it names as ``baseline``.
"""

from __future__ import annotations

from typing import Any, Literal, Self

from pydantic import Field, model_validator

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
    """The open-loop rate sweep every system goes through."""

    rates: list[float] = Field(min_length=1)
    """Coarse grid of offered rates (req/s), ascending; the sweep stops early once a system
    is clearly saturated and then refines between its last passing and first failing rate."""
    duration_s: float = Field(gt=0, le=600)
    """Seconds of arrivals per rate."""
    warmup_s: float = Field(3.0, ge=0)
    """Seconds of unrecorded traffic at ``warmup_rate`` before the sweep (JIT, caches, pools)."""
    warmup_rate: float = Field(10.0, gt=0)
    """Rate of the warm-up traffic."""
    settle_s: float = Field(2.0, ge=0)
    """Pause between two rates (queues drain, replicas settle)."""
    refine_steps: int = Field(1, ge=0, le=4)
    """Bisection steps between the last passing and the first failing grid rate."""
    stop_p99_factor: float = Field(3.0, gt=1.0)
    """Stop climbing after a failing rate whose p99 exceeds this multiple of the SLO (or whose
    good share is under 90%): higher rates only queue more."""
    max_failures: int = Field(2, ge=1)
    """Stop climbing after this many failing rates in a row."""
    timeout_s: float = Field(5.0, gt=0, le=120)
    """Per-request client timeout; a request that gets no answer in time is a ``timeout``."""
    max_requests_per_point: int = Field(20_000, ge=1)
    """Hard cap on the requests scheduled for one rate."""

    @model_validator(mode="after")
    def _check_rates(self) -> Self:
        if any(r <= 0 for r in self.rates):
            raise ValueError("sweep.rates must be > 0")
        if list(self.rates) != sorted(set(self.rates)):
            raise ValueError("sweep.rates must be strictly ascending")
        return self


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
    """torch / FAISS threads of ``inprocess`` (None: the run's ``torch_threads``)."""

    def app_config(self, base: AppConfig) -> AppConfig:
        """``base`` with :attr:`app_overrides` merged in (validated)."""
        if not self.app_overrides:
            return base
        merged = deep_merge(base.model_dump(mode="json"), self.app_overrides)
        return AppConfig.model_validate(merged)

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
    low_load_rate: float | None = Field(None, gt=0)
    """Rate whose p50 defines the low-load overhead (None: the first sweep rate)."""
    fixed_rates: list[float] = Field(default_factory=list)
    """Rates whose p50/p99 every system reports (added to every sweep)."""
    torch_threads: int = Field(1, ge=1)
    """torch / FAISS threads of the in-process and naive pipelines (the Serve stages use their
    StageConfig.torch_threads; the local profile has 1)."""
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
        return self.low_load_rate or self.sweep.rates[0]

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
    """Where the host writes ``{"url": ...}`` once the app answers."""


# ---- presets ---------------------------------------------------------------------------------


def full_sweep() -> SweepConfig:
    """About 3-5 minutes per system on 2 cores."""
    return SweepConfig(
        rates=[5, 10, 20, 30, 40, 50, 60, 75, 90, 110, 130, 160, 200, 250, 320, 400, 500],
        duration_s=15.0,
        warmup_s=5.0,
        settle_s=3.0,
        refine_steps=2,
    )


def quick_sweep() -> SweepConfig:
    """About a minute per system: fewer, shorter points, one refinement."""
    return SweepConfig(
        rates=[5, 10, 25, 40, 60, 90, 130, 200, 300, 450],
        duration_s=5.0,
        warmup_s=2.0,
        settle_s=1.0,
        refine_steps=1,
        max_failures=1,
    )


MAIN_SYSTEMS: dict[str, SystemSpec] = {
    "inprocess": SystemSpec(
        name="inprocess",
        kind="inprocess",
        description="library Pipeline with a dynamic batcher (16 / 2 ms); no Ray, no HTTP",
    ),
    "naive": SystemSpec(
        name="naive",
        kind="naive",
        description="one FastAPI/uvicorn process, Pipeline.run([one]) per request",
    ),
    "monolith": SystemSpec(
        name="monolith",
        kind="monolith",
        description="one Serve replica with every stage, @serve.batch 16 / 2 ms",
    ),
    "serve": SystemSpec(
        name="serve",
        kind="serve",
        description="composed Serve app (build_app, local profile), lean Ray start, "
        "throughput-optimised Serve with direct ingress (deployments.serve_main)",
    ),
}


def _serve_variant(suffix: str, description: str, **fields: Any) -> SystemSpec:
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
    "threads2": SystemSpec(
        name="inprocess:threads2",
        kind="inprocess",
        baseline="inprocess",
        description="in-process pipeline with 2 torch / FAISS threads (all cores)",
        torch_threads=2,
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
