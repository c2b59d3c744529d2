"""The open-loop sender: fire every scheduled request at its time, record one outcome each.

One asyncio loop dispatches requests at their scheduled times as independent tasks; nothing
waits for earlier answers, so a slow service faces the same arrivals as a fast one. Each
record keeps the scheduled time, the actual send time (their difference, ``send_lag_ms``,
shows when the generator itself fell behind: coordinated omission would show there) and the
completion time. ``latency_ms`` is measured from the *scheduled* time, so generator lag
counts against the service, never hides it.

Every scheduled request ends with exactly one outcome:

* ``ok``: a 2xx answer;
* ``http_error``: any other status (``status`` says which; 503 is overload);
* ``timeout``: no complete answer within ``timeout_s``;
* ``error``: the connection failed (refused, reset, protocol error);
* ``cancelled``: the run was interrupted while it was in flight;
* ``not_sent``: the run was interrupted before its time came.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import signal
import ssl
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from tqdm import tqdm

from recsys.traffic.config import TrafficConfig

OUTCOMES = ("ok", "http_error", "timeout", "error", "cancelled", "not_sent")
SENT_OUTCOMES = ("ok", "http_error", "timeout", "error", "cancelled")
"""Outcomes of requests that were sent."""
RECORD_COLUMNS = [
    "id",
    "scheduled_s",
    "sent_s",
    "done_s",
    "send_lag_ms",
    "latency_ms",
    "response_ms",
    "route",
    "method",
    "status",
    "outcome",
    "variant",
    "degraded",
    "degraded_reason",
    "error",
    "server_total_ms",
]
META_PREFIX = "recsys.traffic."
"""Prefix of the keys ``requests.parquet`` carries in its metadata: ``t0_unix``, ``wall_s``,
``client_cpu_s``, ``client_cpu_wait_s``, ``client_nice`` (the sender's niceness) and
``config`` (the TrafficConfig as JSON)."""
START_LEAD_S = 0.25
SHARD_CONNECTIONS = 32
"""Connections per httpx pool (see :class:`ClientShards`)."""
"""Time between setting up the run and its first scheduled instant."""


@dataclass
class RunResult:
    """Records of one run and what it cost the client."""

    records: pd.DataFrame
    """One row per scheduled request (:data:`RECORD_COLUMNS`)."""
    t0_unix: float
    """Unix time of the schedule's zero (``scheduled_s`` is relative to it)."""
    wall_s: float
    """From the first scheduled instant to the last outcome."""
    client_cpu_s: float
    """CPU seconds the sending thread used (the generator's own cost on a shared machine)."""
    client_cpu_wait_s: float | None = None
    """Seconds the sending thread was ready to run but waited for a CPU (Linux schedstat;
    None elsewhere). Large values mean send lag came from a saturated machine, not from the
    generator's own work."""

    @property
    def sent(self) -> int:
        return int(self.records["sent_s"].notna().sum())


class RequestRecorder:
    """Column arrays for ``n`` scheduled requests (one row each, in schedule order), filled in
    as they are sent and answered; ``frame`` gives the ``RECORD_COLUMNS`` table."""

    def __init__(self, schedule: pd.DataFrame):
        n = len(schedule)
        self.n = n
        self.sent = np.full(n, np.nan)
        self.done = np.full(n, np.nan)
        self.status = np.full(n, -1, dtype=np.int32)
        self.outcome: list[str | None] = [None] * n
        self.variant: list[str | None] = [None] * n
        self.degraded: list[bool | None] = [None] * n
        self.reason: list[str | None] = [None] * n
        self.error: list[str | None] = [None] * n
        self.server_ms = np.full(n, np.nan)

    def frame(self, schedule: pd.DataFrame) -> pd.DataFrame:
        scheduled = schedule["scheduled_s"].to_numpy(dtype=np.float64)
        return pd.DataFrame(
            {
                "id": schedule["id"].to_numpy(dtype=np.int64),
                "scheduled_s": scheduled,
                "sent_s": self.sent,
                "done_s": self.done,
                "send_lag_ms": (self.sent - scheduled) * 1000.0,
                "latency_ms": (self.done - scheduled) * 1000.0,
                "response_ms": (self.done - self.sent) * 1000.0,
                "route": schedule["route"].astype("string").to_numpy(),
                "method": schedule["method"].astype("string").to_numpy(),
                "status": self.status,
                "outcome": pd.array(self.outcome, dtype="string"),
                "variant": pd.array(self.variant, dtype="string"),
                "degraded": pd.array(self.degraded, dtype="boolean"),
                "degraded_reason": pd.array(self.reason, dtype="string"),
                "error": pd.array(self.error, dtype="string"),
                "server_total_ms": self.server_ms,
            },
            columns=RECORD_COLUMNS,
        )


class ClientShards:
    """``max_connections`` spread over small connection pools, each request on the least busy.

    httpx's pool (httpcore) scans all its connections and waiting requests on every event, so
    one pool of a thousand connections costs O(n^2) CPU under load: at 80 req/s with 250
    requests in flight it saturated a core and fell seconds behind its schedule. Pools of
    :data:`SHARD_CONNECTIONS` keep every scan short; choosing the least busy pool means a
    request waits for a connection only when all ``max_connections`` are in use.

    With several targets (``TrafficConfig.targets``) each has its own pools, the connections
    split evenly, and a request goes to the target with the fewest requests in flight (ties
    to the one sent the fewest): least-connections balancing, as a load balancer in front of
    the replicas would do it.
    """

    def __init__(self, config: TrafficConfig):
        targets = config.targets
        per_target = max(1, config.max_connections // len(targets))
        n = max(1, math.ceil(per_target / SHARD_CONNECTIONS))
        per = math.ceil(per_target / n)
        limits = httpx.Limits(max_connections=per, max_keepalive_connections=per)
        tls = ssl.create_default_context()  # one for all: building one per client costs ~30 ms
        self.clients = [
            [
                httpx.AsyncClient(
                    base_url=target,
                    limits=limits,
                    timeout=httpx.Timeout(config.timeout_s),
                    headers={"content-type": "application/json"},
                    verify=tls,
                )
                for _ in range(n)
            ]
            for target in targets
        ]
        self.busy = [[0] * n for _ in targets]
        """Requests in flight per pool, per target."""
        self.sent = [0] * len(targets)
        """Requests sent to each target so far."""

    @contextlib.asynccontextmanager
    async def lease(self) -> AsyncIterator[httpx.AsyncClient]:
        t = min(range(len(self.busy)), key=lambda j: (sum(self.busy[j]), self.sent[j]))
        busy = self.busy[t]
        i = min(range(len(busy)), key=busy.__getitem__)
        busy[i] += 1
        self.sent[t] += 1
        try:
            yield self.clients[t][i]
        finally:
            busy[i] -= 1

    async def __aenter__(self) -> ClientShards:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await asyncio.gather(
            *(c.aclose() for pools in self.clients for c in pools), return_exceptions=True
        )


def _read_answer(rec: RequestRecorder, i: int, response: httpx.Response) -> None:
    rec.status[i] = response.status_code
    try:
        body: Any = response.json()
    except (json.JSONDecodeError, UnicodeDecodeError, ValueError):
        body = None
    if 200 <= response.status_code < 300:
        rec.outcome[i] = "ok"
        if isinstance(body, dict):
            rec.variant[i] = body.get("variant")
            rec.degraded[i] = bool(body.get("degraded", False))
            rec.reason[i] = body.get("degraded_reason")
            total = (body.get("timings_ms") or {}).get("total")
            if isinstance(total, int | float):
                rec.server_ms[i] = float(total)
        return
    rec.outcome[i] = "http_error"
    if isinstance(body, dict) and body.get("error"):
        rec.error[i] = str(body["error"])
    else:
        rec.error[i] = f"HTTP {response.status_code}: {response.text[:120]}"


async def run_async(
    schedule: pd.DataFrame,
    config: TrafficConfig,
    *,
    progress: bool = True,
    request_id_prefix: str = "load",
    stop: asyncio.Event | None = None,
) -> RunResult:
    """Send ``schedule`` (from :func:`recsys.traffic.schedule.build_schedule`) to
    ``config.targets`` open-loop; return one record per scheduled request.

    Setting ``stop`` ends the run early: requests in flight are cancelled (``cancelled``), the
    rest are ``not_sent``, and the records so far are returned as usual.
    """
    stop = stop or asyncio.Event()
    rec = RequestRecorder(schedule)
    scheduled = schedule["scheduled_s"].to_numpy(dtype=np.float64)
    methods = schedule["method"].astype(str).tolist()
    paths = schedule["path"].astype(str).tolist()
    bodies = [None if pd.isna(b) else str(b).encode() for b in schedule["body"]]
    loop = asyncio.get_running_loop()
    bar = tqdm(total=rec.n, unit="req", desc="traffic", mininterval=0.5, disable=not progress)
    state = {"inflight": 0, "failed": 0, "last_postfix": 0.0}
    tasks: set[asyncio.Task[None]] = set()
    cpu0 = time.thread_time()
    wait0 = _run_queue_wait_s()

    async with ClientShards(config) as clients:

        async def send(i: int) -> None:
            rec.sent[i] = loop.time() - t0
            state["inflight"] += 1
            try:
                async with clients.lease() as client:
                    response = await asyncio.wait_for(
                        client.request(
                            methods[i],
                            paths[i],
                            content=bodies[i],
                            headers={"x-request-id": f"{request_id_prefix}-{i}"},
                        ),
                        timeout=config.timeout_s,
                    )
                _read_answer(rec, i, response)
            except TimeoutError:
                rec.outcome[i] = "timeout"
                rec.error[i] = f"no answer within {config.timeout_s:g}s"
            except asyncio.CancelledError:
                rec.outcome[i] = "cancelled"
                rec.error[i] = "run interrupted while in flight"
                raise
            except httpx.HTTPError as exc:
                rec.outcome[i] = "error"
                rec.error[i] = f"{type(exc).__name__}: {exc}"[:300]
            except Exception as exc:  # never lose an outcome
                rec.outcome[i] = "error"
                rec.error[i] = f"{type(exc).__name__}: {exc}"[:300]
            finally:
                rec.done[i] = loop.time() - t0
                state["inflight"] -= 1
                if rec.outcome[i] != "ok":
                    state["failed"] += 1
                bar.update(1)
                now = loop.time()
                if now - state["last_postfix"] > 0.5:
                    state["last_postfix"] = now
                    bar.set_postfix(
                        inflight=state["inflight"], failed=state["failed"], refresh=False
                    )

        t0 = loop.time() + START_LEAD_S
        t0_unix = time.time() + START_LEAD_S
        next_i = 0
        try:
            while next_i < rec.n and not stop.is_set():
                delay = t0 + scheduled[next_i] - loop.time()
                if delay > 0:
                    # short naps so a stop request is seen within 50 ms
                    await asyncio.sleep(min(delay, 0.05))
                    continue
                now = loop.time() - t0
                while next_i < rec.n and scheduled[next_i] <= now:
                    task = asyncio.create_task(send(next_i))
                    tasks.add(task)
                    task.add_done_callback(tasks.discard)
                    next_i += 1
            # every send is bounded by wait_for(timeout_s); the margin covers a stuck loop
            deadline = loop.time() + config.timeout_s + 30.0
            while tasks and not stop.is_set() and loop.time() < deadline:
                await asyncio.sleep(0.05)
        finally:
            for task in list(tasks):
                task.cancel()
            if tasks:
                await asyncio.gather(*tasks, return_exceptions=True)
            for i in range(next_i, rec.n):
                rec.outcome[i] = "not_sent"
            bar.close()
        wall = loop.time() - t0
    wait1 = _run_queue_wait_s()
    waited = None if wait0 is None or wait1 is None else wait1 - wait0
    return RunResult(rec.frame(schedule), t0_unix, wall, time.thread_time() - cpu0, waited)


def _run_queue_wait_s() -> float | None:
    """Time this thread has spent runnable but not running (``/proc/thread-self/schedstat``)."""
    try:
        fields = Path("/proc/thread-self/schedstat").read_text().split()
        return int(fields[1]) / 1e9
    except (OSError, IndexError, ValueError):
        return None


def run(
    schedule: pd.DataFrame,
    config: TrafficConfig,
    *,
    progress: bool = True,
    request_id_prefix: str = "load",
) -> RunResult:
    """:func:`run_async` in a fresh event loop; SIGINT / SIGTERM stop the run early (the
    records so far are still returned)."""

    async def main() -> RunResult:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        try:
            return await run_async(
                schedule, config, progress=progress, request_id_prefix=request_id_prefix, stop=stop
            )
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)

    return asyncio.run(main())


def write_records(result: RunResult, path: Path, config: TrafficConfig | None = None) -> None:
    """``requests.parquet``: the records, with the run's facts in the file metadata."""
    path.parent.mkdir(parents=True, exist_ok=True)
    table = pa.Table.from_pandas(result.records, preserve_index=False)
    meta = dict(table.schema.metadata or {})
    facts = {
        "t0_unix": repr(result.t0_unix),
        "wall_s": repr(result.wall_s),
        "client_cpu_s": repr(result.client_cpu_s),
        "client_cpu_wait_s": repr(result.client_cpu_wait_s),
        "client_nice": repr(os.nice(0)),
    }
    if config is not None:
        facts["config"] = config.model_dump_json()
    for key, value in facts.items():
        meta[(META_PREFIX + key).encode()] = value.encode()
    pq.write_table(table.replace_schema_metadata(meta), path)


def read_records(path: Path) -> tuple[pd.DataFrame, dict[str, str]]:
    """The records of ``requests.parquet`` and the run's facts from its metadata
    (``t0_unix``, ``wall_s``, ``client_cpu_s``, ``config``; values as strings)."""
    table = pq.read_table(path)
    meta = {
        k.decode()[len(META_PREFIX) :]: v.decode()
        for k, v in (table.schema.metadata or {}).items()
        if k.decode().startswith(META_PREFIX)
    }
    return table.to_pandas(), meta
