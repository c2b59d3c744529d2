"""The HTTP load: ``recsys.traffic.runner`` in a niced thread, plus each answer's stage timings.

The runner records ``timings_ms["total"]`` of every answer but not the other stage timings the
per-stage breakdown needs. Rather than changing it, :func:`capture_timings` wraps the runner's
answer reader for the duration of one run and keeps each good answer's whole ``timings_ms``
(the runner's own records are untouched). The runner should grow an option for this (a
``timings_ms`` JSON column); until then this wrapper is the one place that knows.

Niceness is per thread on Linux: the sending thread lowers its own priority to the level of
Ray's workers, so the load generator competes with every server on equal terms, and the
benchmark's main thread keeps its priority for starting servers.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import httpx
import pandas as pd

from recsys.traffic import runner
from recsys.traffic.config import TrafficConfig
from recsys.traffic.runner import RunResult

T = TypeVar("T")


@contextlib.contextmanager
def capture_timings() -> Iterator[dict[int, dict[str, float]]]:
    """While active, the ``timings_ms`` of every 2xx answer, by schedule position."""
    captured: dict[int, dict[str, float]] = {}
    original = runner._read_answer

    def reading(rec: Any, i: int, response: httpx.Response) -> None:
        original(rec, i, response)
        if 200 <= response.status_code < 300:
            try:
                body = response.json()
            except ValueError:
                return
            timings = body.get("timings_ms") if isinstance(body, dict) else None
            if isinstance(timings, dict):
                captured[i] = {
                    str(k): float(v) for k, v in timings.items() if isinstance(v, int | float)
                }

    runner._read_answer = reading
    try:
        yield captured
    finally:
        runner._read_answer = original


def set_thread_niceness(nice: int) -> None:
    """Lower the calling thread's priority to ``nice`` (never raises it; Linux only)."""
    if not hasattr(os, "setpriority") or nice <= 0:
        return
    tid = threading.get_native_id()
    with contextlib.suppress(OSError):
        current = os.getpriority(os.PRIO_PROCESS, tid)
        if nice > current:
            os.setpriority(os.PRIO_PROCESS, tid, nice)


def in_niced_thread(fn: Callable[[], T], nice: int, name: str = "bench-load") -> T:
    """Run ``fn`` in a fresh thread at niceness ``nice``; return its result or raise its error."""
    box: dict[str, Any] = {}

    def target() -> None:
        set_thread_niceness(nice)
        try:
            box["value"] = fn()
        except BaseException as exc:  # re-raised in the caller
            box["error"] = exc

    thread = threading.Thread(target=target, name=name, daemon=True)
    thread.start()
    thread.join()
    if "error" in box:
        raise box["error"]
    return box["value"]


@dataclass
class HttpRun:
    """One open-loop HTTP run: the runner's records, and the timings of good answers."""

    result: RunResult
    timings: dict[int, dict[str, float]]

    @property
    def records(self) -> pd.DataFrame:
        return self.result.records


def send_schedule(
    schedule: pd.DataFrame,
    config: TrafficConfig,
    *,
    nice: int,
    progress: bool,
    request_id_prefix: str = "bench",
) -> HttpRun:
    """Send ``schedule`` open-loop to ``config.target`` from a niced thread."""

    def go() -> HttpRun:
        # ``runner.run`` installs signal handlers, which only the main thread may: run the
        # coroutine in this thread's own loop instead (Ctrl-C still reaches the main thread)
        with capture_timings() as timings:
            result = asyncio.run(
                runner.run_async(
                    schedule, config, progress=progress, request_id_prefix=request_id_prefix
                )
            )
        return HttpRun(result, dict(timings))

    return in_niced_thread(go, nice)
