"""One benchmark run: every system through the same schedules, then the offline experiments.

For each system in order: wait until the machine is quiet (no other Ray instance, little
other load), start it (in this process, or a subprocess), measure its idle cost, warm it up;
then for each query stream and each repeat: the low-load points (main stream), and the search
for the sustained rate (``recsys.bench.sweep``; a rate overlapped by someone else's work is
measured again); stop it through its own handle. A system whose config is the same as one
already measured (``serve_split`` while the default local topology is split) is not measured
twice: it reports that system's points. A system that fails to start or breaks mid-sweep is
recorded with its error and the run goes on with the next one; an interrupt stops the current
server and still writes what was measured.
"""

from __future__ import annotations

import functools
import json
import os
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from recsys.bench.analysis import outcome_problems, summarise_point
from recsys.bench.batcher import (
    InProcessServer,
    load_pipeline,
    load_pipeline_threads,
    parse_schedule,
    raw_batched_throughput,
)
from recsys.bench.config import BenchConfig, HostSpec, SystemSpec
from recsys.bench.naive_app import naive_command, naive_env
from recsys.bench.processes import foreign_ray_pids, load_average
from recsys.bench.servers import ServerProcess, start_server, stop_server
from recsys.bench.streams import StreamMaker, StreamName, search_queries
from recsys.bench.sweep import PointResult, capacity_estimate, search_start, search_sustained
from recsys.bench.targets import (
    HttpTarget,
    InProcessTarget,
    Log,
    QuietGuard,
    background_cores,
    measure_idle,
)
from recsys.bench.topology import layout_of
from recsys.pipeline import Pipeline
from recsys.traffic.config import ConstantShape, SamplingConfig, TrafficConfig
from recsys.traffic.schedule import Workload, build_schedule

PLACEHOLDER_TARGET = "http://127.0.0.1:9"
"""Target written into traffic configs before a system's URL is known."""


class ArtifactMissingError(FileNotFoundError):
    """The artifact directory is missing or incomplete."""


def check_artifact(path: str | Path) -> Path:
    """The artifact directory, or a clear error naming what is missing and how to build it."""
    root = Path(path)
    needed = [root / "manifest.json", root / "data" / "queries.parquet", root / "index.faiss"]
    missing = [str(p) for p in needed if not p.exists()]
    if missing:
        raise ArtifactMissingError(
            f"artifact {root} is missing {', '.join(missing)}; build one with "
            f"`recsys build --out {root}` (the benchmark never builds or modifies artifacts)"
        )
    return root


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# ---- results -----------------------------------------------------------------------------------


@dataclass
class SystemRun:
    """Everything measured for one system."""

    spec: SystemSpec
    points: list[PointResult] = field(default_factory=list)
    startup_s: float | None = None
    idle: dict[str, Any] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    stopped: str | None = None
    log_path: str | None = None
    outcome_problems: list[str] = field(default_factory=list)
    searches: list[tuple[str, str]] = field(default_factory=list)
    """(stream, query) of every search sent, in order (for the cache hit rates)."""
    searches_by_repeat: list[dict[str, Any]] = field(default_factory=list)
    """One row per (stream, repeat) search: sustained, failing rate, pinned, points."""
    same_as: str | None = None
    """The system whose measurements these are (same config, measured once)."""


@dataclass
class BenchResult:
    """One benchmark run."""

    config: BenchConfig
    systems: list[SystemRun]
    experiments: dict[str, Any]
    environment: dict[str, Any]
    started_at: float
    finished_at: float
    search_queries: list[str] = field(default_factory=list)
    """The search queries of every measured schedule, in the order they were sent."""


# ---- the run -----------------------------------------------------------------------------------


class Benchmark:
    """Runs the systems of a :class:`BenchConfig` and the offline experiments."""

    def __init__(
        self,
        config: BenchConfig,
        out_dir: Path,
        *,
        ray_host_command: Sequence[str] | None = None,
        progress: bool = True,
        log: Log = print,
        cwd: Path | None = None,
        time_budget_s: float | None = None,
    ):
        self.config = config
        self.out_dir = out_dir
        self.logs_dir = out_dir / "logs"
        self.ray_host_command = list(ray_host_command) if ray_host_command else None
        self.progress = progress
        self.log = log
        self.cwd = cwd
        self.time_budget_s = time_budget_s
        self.workload = Workload.from_artifact(
            check_artifact(config.artifacts), SamplingConfig(), config.seed
        )
        self.stream_maker = StreamMaker.from_artifact(config.artifacts, config.seed)
        self._raw_rows: list[dict[str, Any]] = []
        self._schedules: dict[
            tuple[float, str, int, float], tuple[TrafficConfig, pd.DataFrame]
        ] = {}

    # -- schedules --

    def schedule(
        self,
        rate: float,
        stream: StreamName | None = None,
        repeat: int = 0,
        duration_s: float | None = None,
    ) -> tuple[TrafficConfig, pd.DataFrame]:
        """The schedule of ``rate`` in ``stream`` for ``repeat`` (the same object for every
        system): arrivals, routes, shoppers and items from the traffic module with the
        repeat's seed, search queries from the stream."""
        stream = stream or self.config.main_stream
        seed = self.config.seed + 1009 * repeat
        duration = self.config.sweep.duration_s if duration_s is None else duration_s
        key = (float(rate), stream, seed, duration)
        if key not in self._schedules:
            traffic = TrafficConfig(
                target=PLACEHOLDER_TARGET,
                shape=ConstantShape(rate=rate),
                duration_s=duration,
                seed=seed,
                mix=self.config.mix,
                timeout_s=self.config.sweep.timeout_s,
                max_requests=self.config.sweep.max_requests_per_point,
            )
            base = build_schedule(traffic, self.workload)
            variant_key = hash((round(rate * 10), seed, round(duration * 10))) & 0xFFFFFFFF
            self._schedules[key] = (traffic, self.stream_maker.apply(stream, base, variant_key))
        return self._schedules[key]

    def warmup_schedule(self) -> tuple[TrafficConfig, pd.DataFrame]:
        sweep = self.config.sweep
        return self.schedule(sweep.warmup_rate, repeat=7919, duration_s=sweep.warmup_s)

    # -- systems --

    def run(self) -> BenchResult:
        started = time.time()
        environment = environment_facts(self.config)
        load = environment["load_average_start"]
        slo = self.config.slo.p99_ms
        self.log(
            f"[bench] {len(self.config.systems)} systems, SLO p99 <= {slo:g} ms; load {load:.2f}"
        )
        runs: list[SystemRun] = []
        interrupted = False
        for spec in self.config.systems:
            elapsed = time.time() - started
            reason = None
            if interrupted:
                reason = "skipped: run interrupted"
            elif self.time_budget_s is not None and elapsed > self.time_budget_s:
                reason = f"skipped: time budget spent ({elapsed:.0f}s)"
            if reason is not None:
                self.log(f"[bench] {spec.name}: {reason}")
                runs.append(SystemRun(spec, error=reason))
                continue
            twin = self._measured_twin(spec, runs)
            if twin is not None:
                self.log(f"[bench] {spec.name}: same config as {twin.spec.name}, not run again")
                runs.append(self._copy_of(twin, spec))
                continue
            try:
                runs.append(self.run_system(spec))
            except KeyboardInterrupt:  # the server is stopped; keep what was measured
                interrupted = True
                runs.append(SystemRun(spec, error="interrupted"))
                self.log("[bench] interrupted: writing what was measured")
        experiments = {} if interrupted else self.run_experiments()
        environment["load_average_end"] = load_average()
        queries = self.search_queries()
        return BenchResult(
            self.config, runs, experiments, environment, started, time.time(), queries
        )

    def search_queries(self) -> list[str]:
        """Main-stream search queries of the first repeat's schedules, in the order they were
        built (for the offline cache experiment)."""
        out: list[str] = []
        first_seed = self.config.seed
        for (_, stream, seed, _), (_, frame) in self._schedules.items():
            if stream == self.config.main_stream and seed == first_seed:
                out += search_queries(frame)
        return out

    def _identity(self, spec: SystemSpec) -> str | None:
        """What makes a system's measurements (None: its config cannot be built)."""
        try:
            app = spec.app_config(self.config.app)
        except ValueError:
            return None
        data = spec.model_dump(exclude={"name", "description", "baseline", "streams", "topology"})
        return json.dumps([data, app.model_dump(mode="json")], sort_keys=True)

    def _measured_twin(self, spec: SystemSpec, runs: Sequence[SystemRun]) -> SystemRun | None:
        """An already measured system with the same config on every stream ``spec`` needs."""
        mine = self._identity(spec)
        if mine is None:
            return None
        streams = set(self.config.streams_of(spec))
        for run in runs:
            if run.error or run.same_as or not run.points:
                continue
            if self._identity(run.spec) == mine and streams <= set(
                self.config.streams_of(run.spec)
            ):
                return run
        return None

    def _copy_of(self, twin: SystemRun, spec: SystemSpec) -> SystemRun:
        streams = set(self.config.streams_of(spec))
        return SystemRun(
            spec,
            points=[p for p in twin.points if p.summary.get("stream") in streams],
            startup_s=twin.startup_s,
            idle=twin.idle,
            info={**twin.info, "same_as": twin.spec.name},
            stopped=twin.stopped,
            log_path=twin.log_path,
            searches=twin.searches,
            searches_by_repeat=[r for r in twin.searches_by_repeat if r["stream"] in streams],
            same_as=twin.spec.name,
        )

    def run_system(self, spec: SystemSpec) -> SystemRun:
        result = SystemRun(spec)
        self.log(f"[bench] === {spec.name} ({spec.kind}): {spec.description}")
        try:
            if spec.kind == "inprocess":
                self._run_inprocess(spec, result)
            else:
                self._run_http(spec, result)
        except KeyboardInterrupt:
            raise
        except Exception as exc:
            result.error = f"{type(exc).__name__}: {exc}"
            self.log(f"[bench] {spec.name} failed: {result.error}")
        return result

    def _sweep(self, inner: InProcessTarget | HttpTarget, result: SystemRun) -> None:
        spec = result.spec
        sweep = self.config.sweep
        server = inner.server if isinstance(inner, HttpTarget) else None
        target = QuietGuard(
            inner,
            lambda: self._wait_for_quiet(server),
            self.config.max_background_cores,
            self.config.point_retries,
            self.log,
        )
        warm_traffic, warm = self.warmup_schedule()
        if len(warm):
            result.searches += [(self.config.main_stream, q) for q in search_queries(warm)]
            inner.run(warm, warm_traffic, False)
            inner.settle(sweep.settle_s)

        def measure(
            rate: float, stream: StreamName, repeat: int, phase: str, duration: float | None
        ) -> PointResult:
            traffic, schedule = self.schedule(rate, stream, repeat, duration)
            result.searches += [(stream, q) for q in search_queries(schedule)]
            run = target.run(schedule, traffic, self.progress)
            summary = summarise_point(
                run.records, rate=rate, duration_s=traffic.duration_s, slo=self.config.slo
            )
            summary.update(stream=stream, repeat=repeat, phase=phase)
            point = PointResult(summary, run)
            result.points.append(point)  # kept even if a later rate is interrupted
            problems = outcome_problems(run.records, summary["n"])
            result.outcome_problems += [f"{stream} rate {rate:g}: {p}" for p in problems]
            verdict = "pass" if summary["passes"] else "FAIL"
            self.log(
                f"[bench] {spec.name} {stream} r{repeat + 1} {phase} @ {rate:g} req/s: "
                f"p50 {summary['p50_ms']:.1f} ms, p99 {summary['p99_ms']:.1f} ms, "
                f"good {summary['good_share']:.1%}, cpu {run.server_cpu_s:.1f}s -> {verdict}"
            )
            target.settle(sweep.settle_s)
            return point

        estimate: float | None = None
        sustained_by_stream: dict[str, float] = {}
        for stream in self.config.streams_of(spec):
            previous: float | None = None
            for repeat in range(sweep.repeats):
                if stream == self.config.main_stream:
                    for rate in sweep.low_rates:
                        point = measure(rate, stream, repeat, "low", sweep.low_duration_s(rate))
                        if estimate is None or rate == sweep.low_rates[-1]:
                            estimate = (
                                capacity_estimate(
                                    point.run, int(point.summary["n_good"]), self.config.cores
                                )
                                or estimate
                            )
                start, step = search_start(
                    sweep,
                    previous=previous,
                    other_stream=max(sustained_by_stream.values(), default=None),
                    estimate=estimate,
                )
                found = search_sustained(
                    functools.partial(
                        measure, stream=stream, repeat=repeat, phase="search", duration=None
                    ),
                    start,
                    sweep,
                    step,
                )
                previous = found.sustained or None
                if found.sustained and stream not in sustained_by_stream:
                    sustained_by_stream[stream] = found.sustained
                row = {
                    "stream": stream,
                    "repeat": repeat,
                    "start": start,
                    "sustained": found.sustained,
                    "failing": found.failing,
                    "pinned": found.pinned,
                    "points": len(found.points),
                }
                result.searches_by_repeat.append(row)
                self.log(
                    f"[bench] {spec.name} {stream} repeat {repeat + 1}: sustained "
                    f"{found.sustained:g} req/s (fails at {found.failing}, "
                    f"{'pinned' if found.pinned else 'point cap'})"
                )

    def _run_inprocess(self, spec: SystemSpec, result: SystemRun) -> None:
        background = self._wait_for_quiet()
        started = time.monotonic()
        app = spec.app_config(
            self.config.app.model_copy(update={"artifacts": self.config.artifacts})
        )
        threads = spec.torch_threads or self.config.cores
        pipeline = load_pipeline(app, threads)
        result.startup_s = time.monotonic() - started
        server = InProcessServer(pipeline, spec.batch, self.config.sweep.timeout_s)
        result.info = {
            "torch_threads": threads,
            "batch": spec.batch.model_dump(),
            "background_cores_at_start": background,
        }
        self._sweep(InProcessTarget(spec.name, server, self.config.nice), result)
        result.stopped = "exited"
        if "raw_throughput" in self.config.experiments:
            self._raw_throughput(pipeline, spec.name, threads)
        load_pipeline_threads(self.config.torch_threads)  # back to the run's setting

    def _raw_throughput(self, pipeline: Pipeline, system: str, threads: int) -> None:
        _, schedule = self.schedule(self.config.sweep.low_rates[-1])
        requests = parse_schedule(schedule)[:512]
        rows = raw_batched_throughput(pipeline, requests, (1, 4, 16, 32, 64))
        self._raw_rows += [{"system": system, "torch_threads": threads, **r} for r in rows]

    def _server_command(
        self, spec: SystemSpec, port: int
    ) -> tuple[list[str], Path | None, str | None]:
        """(command, ready file, base URL) of a system's server process."""
        app = spec.app_config(
            self.config.app.model_copy(update={"artifacts": self.config.artifacts})
        )
        if spec.kind == "naive":
            command = naive_command(_python(), port, self.config.cores)
            return command, None, f"http://127.0.0.1:{port}"
        if self.ray_host_command is None:
            raise RuntimeError(f"{spec.name} needs a Ray host command (scripts/bench.py host)")
        ready = self.logs_dir / f"{_safe(spec.name)}.ready.json"
        ready.unlink(missing_ok=True)
        host = HostSpec(
            kind="monolith" if spec.kind == "monolith" else "serve",
            app=app,
            batch=spec.batch,
            torch_threads=self.config.torch_threads,
            include_dashboard=spec.include_dashboard,
            num_cpus=self.config.ray_num_cpus,
            port=port,
            ready_file=str(ready),
        )
        spec_path = self.logs_dir / f"{_safe(spec.name)}.host.json"
        spec_path.write_text(host.model_dump_json(indent=2, exclude_defaults=True))
        return [*self.ray_host_command, "--spec", str(spec_path)], ready, None

    def _wait_for_quiet(self, server: ServerProcess | None = None) -> float:
        """Wait (polling every 30 s) while another Ray instance runs on this machine or other
        work keeps more than ``max_background_cores`` busy: one Ray instance at a time, and no
        measurement next to someone else's. ``server`` (ours, running) does not count.
        Returns the background load last measured."""
        waited = 0.0
        while True:
            others = foreign_ray_pids(own_pids=server.known if server is not None else ())
            background = background_cores(3.0, server)
            if not others and background <= self.config.max_background_cores:
                return background
            if waited >= self.config.wait_for_ray_s:
                raise RuntimeError(
                    f"machine not quiet after {waited:.0f}s: other Ray pids {others}, "
                    f"{background:.2f} cores busy"
                )
            self.log(
                f"[bench] machine busy (other Ray pids {others}, {background:.2f} cores in "
                "use); waiting 30 s"
            )
            time.sleep(30.0)
            waited += 30.0

    def _run_http(self, spec: SystemSpec, result: SystemRun) -> None:
        self.logs_dir.mkdir(parents=True, exist_ok=True)
        background = self._wait_for_quiet()
        port = free_port()
        command, ready, url = self._server_command(spec, port)
        env = dict(spec.env)
        if spec.kind == "naive":
            app = spec.app_config(
                self.config.app.model_copy(update={"artifacts": self.config.artifacts})
            )
            env.update(naive_env(app, self.config.torch_threads))
        log_path = self.logs_dir / f"{_safe(spec.name)}.log"
        result.log_path = str(log_path)
        started = time.monotonic()
        server = start_server(
            spec.name,
            command,
            log_path=log_path,
            env=env,
            nice=0 if spec.is_ray else self.config.nice,
            base_url=url,
            ready_file=ready,
            timeout_s=600.0,
            cwd=self.cwd,
        )
        try:
            result.startup_s = time.monotonic() - started
            result.info = {
                "url": server.base_url,
                **server.info,
                "env": spec.env,
                "background_cores_at_start": background,
                **({"workers": self.config.cores} if spec.kind == "naive" else {}),
                **(
                    {"topology": layout_of(spec.app_config(self.config.app))} if spec.is_ray else {}
                ),
            }
            result.idle = measure_idle(server, self.idle_seconds())
            self._sweep(HttpTarget(spec.name, server, self.config.nice), result)
        finally:
            result.stopped = stop_server(server)
            self.log(f"[bench] {spec.name} stopped ({result.stopped})")

    def idle_seconds(self) -> float:
        return min(10.0, max(2.0, self.config.sweep.duration_s / 2))

    # -- offline experiments --

    def run_experiments(self) -> dict[str, Any]:
        from recsys.bench import quality

        names = self.config.experiments
        out: dict[str, Any] = {}
        if "raw_throughput" in names and self._raw_rows:
            out["raw_throughput"] = self._raw_rows
        offline = [n for n in names if n in ("int8", "nprobe", "candidates")]
        threads = self.config.torch_threads
        if offline:
            self._wait_for_quiet()  # their timings matter too
            self.log(f"[bench] offline experiments: {', '.join(offline)}")
            data = quality.EvalData.load(self.config.artifacts)
            steps: dict[str, Callable[[], Any]] = {
                "int8": lambda: quality.encoder_precision(data, threads),
                "nprobe": lambda: quality.nprobe_sweep(data, (8, 16, 32, 64, 128), threads),
                "candidates": lambda: quality.candidates_sweep(data, (100, 200, 400), threads),
            }
            for name in offline:
                started = time.monotonic()
                try:
                    out[name] = steps[name]()
                except Exception as exc:  # an experiment failing must not lose the sweeps
                    out[name] = {"error": f"{type(exc).__name__}: {exc}"}
                self.log(f"[bench] {name}: {time.monotonic() - started:.0f}s")
        if "cache" in names:
            queries = self.search_queries()
            capacities = sorted({0, 1000, self.config.app.encoder.cache_size})
            out["cache"] = {
                "n_queries": len(queries),
                "rows": quality.cache_replay(queries, capacities),
            }
        return out


def environment_facts(config: BenchConfig) -> dict[str, Any]:
    """Machine, library versions and artifact facts for the report."""
    from importlib import metadata

    versions = {}
    for dist in ("ray", "torch", "faiss-cpu", "fastapi", "uvicorn", "httpx"):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            versions[dist] = "-"
    manifest = json.loads((Path(config.artifacts) / "manifest.json").read_text())
    index = manifest.get("reports", {}).get("index", {})
    from recsys.reporting import git_state

    commit, dirty = git_state(Path(__file__).resolve().parents[2])
    return {
        "cpus": os.cpu_count(),
        "git": {"commit": commit, "dirty_files": dirty},
        "load_average_start": load_average(),
        "versions": versions,
        "artifact": {
            "path": config.artifacts,
            "version": manifest.get("version"),
            "n_items": index.get("ntotal"),
            "index": index.get("factory"),
            "nprobe": index.get("param_value"),
        },
    }


def _python() -> str:
    import sys

    return sys.executable


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
