"""The in-process system: ``Pipeline.run`` behind a dynamic batcher, driven by the schedule.

No HTTP and no Ray: a dispatcher thread releases each scheduled request at its time into a
queue (open loop: it never waits for answers); a batcher thread takes the first waiting
request, gathers more until ``max_batch_size`` or until ``batch_wait_timeout_s`` has passed
since the first one arrived (what ``@serve.batch`` does), prepares them as the ingress would
and runs one ``Pipeline.run`` for the batch. Latency counts from the *scheduled* time, like the
HTTP load generator's, so the numbers compare. A request still waiting when its client timeout
has passed is answered ``timeout`` without being computed (a client would have gone).

The records have the same columns as ``recsys.traffic.runner`` records.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from recsys.bench.config import BatchConfig
from recsys.bench.loadgen import in_niced_thread, set_thread_niceness
from recsys.bench.processes import self_cpu_s
from recsys.bench.requests import BenchRequest, from_schedule_row
from recsys.catalog import UnknownFilterError, UnknownIdError
from recsys.config import AppConfig
from recsys.pipeline import Pipeline, PreparedRequest
from recsys.traffic.runner import START_LEAD_S, RequestRecorder


@dataclass
class _Job:
    position: int
    request: BenchRequest


@dataclass
class InProcessRun:
    """Records of one schedule through the in-process system, and what it cost."""

    records: pd.DataFrame
    timings: dict[int, dict[str, float]]
    wall_s: float
    client_cpu_s: float
    """CPU of the dispatcher thread (the in-process 'load generator')."""
    server_cpu_s: float
    """CPU of this process over the run minus the dispatcher's: batcher thread, torch and
    FAISS threads (and the progress bar, negligible)."""
    batch_sizes: list[int] = field(default_factory=list)


def load_pipeline_threads(threads: int) -> None:
    """Set torch and FAISS intra-op threads of this process."""
    import faiss
    import torch

    torch.set_num_threads(threads)
    faiss.omp_set_num_threads(threads)


def load_pipeline(config: AppConfig, threads: int, warm: bool = True) -> Pipeline:
    """The pipeline with ``threads`` torch / FAISS threads (process-wide), warmed up."""
    load_pipeline_threads(threads)
    encoder = config.encoder.model_copy(update={"num_threads": threads})
    pipeline = Pipeline.load(config.model_copy(update={"encoder": encoder}))
    if warm:
        pipeline.search("warm up")
    return pipeline


def parse_schedule(schedule: pd.DataFrame) -> list[BenchRequest]:
    """Every schedule row as a :class:`BenchRequest` (parsed before the clock starts)."""
    return [
        from_schedule_row(str(route), str(path), None if pd.isna(body) else str(body))
        for route, path, body in zip(
            schedule["route"], schedule["path"], schedule["body"], strict=True
        )
    ]


class _Clock:
    """Seconds since the run's zero (``START_LEAD_S`` after setup, like the HTTP runner)."""

    def __init__(self) -> None:
        self.t0 = time.perf_counter() + START_LEAD_S

    def __call__(self) -> float:
        return time.perf_counter() - self.t0


class InProcessServer:
    """A loaded :class:`Pipeline` served through a dynamic batcher."""

    def __init__(self, pipeline: Pipeline, batch: BatchConfig, timeout_s: float):
        self.pipeline = pipeline
        self.batch = batch
        self.timeout_s = timeout_s

    def serve_schedule(
        self, schedule: pd.DataFrame, *, nice: int = 0, progress: bool = True
    ) -> InProcessRun:
        """Serve every scheduled request at its time; one outcome per request."""
        requests = parse_schedule(schedule)
        scheduled = schedule["scheduled_s"].to_numpy(dtype=np.float64)
        rec = RequestRecorder(schedule)
        timings: dict[int, dict[str, float]] = {}
        sizes: list[int] = []
        jobs: queue.Queue[_Job | None] = queue.Queue()
        bar = tqdm(total=rec.n, unit="req", desc="inprocess", mininterval=0.5, disable=not progress)
        clock = _Clock()
        cpu0 = self_cpu_s()
        failure: list[BaseException] = []

        def batcher() -> None:
            set_thread_niceness(nice)
            try:
                while True:
                    batch, stop = self._gather(jobs, rec, clock)
                    if batch:
                        self._run_batch(batch, rec, timings, scheduled, clock)
                        sizes.append(len(batch))
                        bar.update(len(batch))
                    if stop:
                        return
            except BaseException as exc:  # surfaced by the caller
                failure.append(exc)

        worker = threading.Thread(target=batcher, name="bench-batcher", daemon=True)
        worker.start()

        def dispatch() -> float:
            cpu_start = time.thread_time()
            for i, req in enumerate(requests):
                delay = scheduled[i] - clock()
                if delay > 0:
                    time.sleep(delay)
                rec.sent[i] = clock()
                jobs.put(_Job(i, req))
            jobs.put(None)
            return time.thread_time() - cpu_start

        client_cpu = in_niced_thread(dispatch, nice, name="bench-dispatch")
        worker.join(timeout=self.timeout_s + 120.0)
        bar.close()
        if failure:
            raise RuntimeError("in-process batcher failed") from failure[0]
        for i in range(rec.n):
            if rec.outcome[i] is None:  # the batcher did not finish (should not happen)
                rec.outcome[i] = "cancelled" if not np.isnan(rec.sent[i]) else "not_sent"
                rec.error[i] = "in-process batcher did not answer in time"
        wall = clock()
        server_cpu = max(0.0, self_cpu_s() - cpu0 - client_cpu)
        return InProcessRun(rec.frame(schedule), timings, wall, client_cpu, server_cpu, sizes)

    def _gather(
        self, jobs: queue.Queue[_Job | None], rec: RequestRecorder, clock: _Clock
    ) -> tuple[list[_Job], bool]:
        """One batch: block for the first job, then take more until ``max_batch_size`` or
        until the wait, counted from the first job's arrival, is over (for a backlog that
        arrival is in the past: then only jobs already queued join). Returns (batch, stop)."""
        first = jobs.get()
        if first is None:
            return [], True
        batch = [first]
        deadline = float(rec.sent[first.position]) + self.batch.batch_wait_timeout_s
        while len(batch) < self.batch.max_batch_size:
            remaining = deadline - clock()
            try:
                job = jobs.get_nowait() if remaining <= 0 else jobs.get(timeout=remaining)
            except queue.Empty:
                break
            if job is None:
                return batch, True
            batch.append(job)
        return batch, False

    def _run_batch(
        self,
        batch: Sequence[_Job],
        rec: RequestRecorder,
        timings: dict[int, dict[str, float]],
        scheduled: np.ndarray,
        clock: _Clock,
    ) -> None:
        start = clock()
        live: list[_Job] = []
        for job in batch:
            i = job.position
            if start - scheduled[i] > self.timeout_s:
                rec.outcome[i] = "timeout"
                rec.error[i] = f"no answer within {self.timeout_s:g}s"
                rec.done[i] = rec.sent[i] + self.timeout_s
            else:
                live.append(job)
        prepared: list[tuple[_Job, PreparedRequest]] = []
        p = self.pipeline
        for job in live:
            i = job.position
            try:
                prep = job.request.prepare(p.catalog, p.policy, p.config.default_k, f"bench-{i}")
            except UnknownIdError as exc:
                self._fail(rec, i, 404, f"unknown_{exc.kind}", clock())
                continue
            except UnknownFilterError:
                self._fail(rec, i, 422, "unknown_filter_value", clock())
                continue
            prepared.append((job, prep))
        if not prepared:
            return
        try:
            answers = p.run([prep for _, prep in prepared])
        except Exception as exc:  # one failed batch fails its requests, not the run
            done = clock()
            for job, _ in prepared:
                self._fail(rec, job.position, 500, f"{type(exc).__name__}: {exc}"[:300], done)
            return
        done = clock()
        for (job, _), answer in zip(prepared, answers, strict=True):
            i = job.position
            rec.done[i] = done
            rec.status[i] = 200
            rec.outcome[i] = "ok"
            rec.variant[i] = answer.variant
            rec.degraded[i] = answer.degraded
            rec.server_ms[i] = (done - rec.sent[i]) * 1000.0
            timings[i] = {
                **answer.timings_ms,
                "compute": answer.timings_ms.get("total", 0.0),
                "batch_size": float(len(prepared)),
                "queue": round((start - rec.sent[i]) * 1000.0, 3),
                "total": round(rec.server_ms[i], 3),
            }

    @staticmethod
    def _fail(rec: RequestRecorder, i: int, status: int, error: str, done: float) -> None:
        rec.status[i] = status
        rec.outcome[i] = "http_error"
        rec.error[i] = error
        rec.done[i] = done


def raw_batched_throughput(
    pipeline: Pipeline, requests: Sequence[BenchRequest], batch_sizes: Sequence[int]
) -> list[dict[str, float]]:
    """Closed-loop ``Pipeline.run`` over ``requests`` in batches, query cache off: the
    compute bound of this machine for each batch size (req/s and ms per batch)."""
    from recsys.cache import EmbeddingCache

    saved = pipeline.cache
    pipeline.cache = EmbeddingCache(0)
    p = pipeline
    try:
        prepared = [
            r.prepare(p.catalog, p.policy, p.config.default_k, f"raw-{i}")
            for i, r in enumerate(requests)
        ]
        p.run(prepared[:4])  # warm
        rows = []
        for size in batch_sizes:
            started = time.perf_counter()
            batches = 0
            for s in range(0, len(prepared), size):
                p.run(prepared[s : s + size])
                batches += 1
            wall = time.perf_counter() - started
            rows.append(
                {
                    "batch_size": float(size),
                    "req_per_s": len(prepared) / wall,
                    "ms_per_batch": wall / batches * 1000.0,
                }
            )
        return rows
    finally:
        pipeline.cache = saved
