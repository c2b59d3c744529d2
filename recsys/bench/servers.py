"""Server subprocesses: start one, wait until it answers, stop it through its own pid.

A server is any command that serves the HTTP API: the naive uvicorn app, or a host that
starts a Ray instance and deploys a Serve app. A host that only knows its URL once it is up
(Serve's direct ingress picks a port) writes a *ready file*, JSON with ``url`` (and ``urls``,
one per ingress replica); otherwise the URL is known in advance. Stopping sends SIGTERM to
the server's own pid and waits (a Ray host then calls ``serve.shutdown()`` and
``ray.shutdown()``); if it does not exit in time it gets SIGKILL, and so does every process
of its tree that is still alive (processes this benchmark started; nothing is killed by
name).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from recsys.bench.processes import ProcessSample, read_process_table, sample_tree


class ServerStartError(RuntimeError):
    """A server exited or did not become ready in time."""


@dataclass
class ServerProcess:
    """A running server subprocess."""

    name: str
    proc: subprocess.Popen[bytes]
    base_url: str
    log_path: Path
    info: dict[str, object] = field(default_factory=dict)
    """What the host reported in its ready file (URL, Ray settings ...)."""
    known: dict[int, ProcessSample] = field(default_factory=dict)
    """Every process seen in its tree (for the last-resort cleanup)."""

    @property
    def urls(self) -> list[str]:
        """Every base URL of the server: its replicas' own ports when the host listed them
        (``urls`` in the ready file: Serve's direct ingress gives each ingress replica one),
        else ``base_url``."""
        listed = self.info.get("urls")
        if isinstance(listed, list) and listed:
            return [str(url).rstrip("/") for url in listed]
        return [self.base_url]

    @property
    def pid(self) -> int:
        return self.proc.pid

    def sample(self) -> dict[int, ProcessSample]:
        """CPU / memory of the server's process tree now (and remember its members)."""
        tree = sample_tree([self.pid])
        self.known.update(tree)
        return tree

    def alive(self) -> bool:
        return self.proc.poll() is None


def log_tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def search_answer(base_url: str) -> str:
    """``"200"`` when a search answers 200, else what it answered (for error messages)."""
    try:
        r = httpx.post(f"{base_url}/v1/search", json={"query": "warm up", "k": 1}, timeout=30)
    except httpx.HTTPError as exc:
        return f"{type(exc).__name__}: {exc}"
    return "200" if r.status_code == 200 else f"HTTP {r.status_code}: {r.text[:300]}"


def search_probe(base_url: str) -> bool:
    """Ready when a search answers 200 (every stage of the app is up)."""
    return search_answer(base_url) == "200"


def start_server(
    name: str,
    command: Sequence[str],
    *,
    log_path: Path,
    env: Mapping[str, str] | None = None,
    nice: int = 0,
    base_url: str | None = None,
    ready_file: Path | None = None,
    probe: Callable[[str], bool] = search_probe,
    timeout_s: float = 300.0,
    cwd: Path | None = None,
) -> ServerProcess:
    """Start ``command``; return once ``probe`` passes against its URL.

    ``base_url`` is the URL when known in advance; otherwise the command must write
    ``ready_file`` (JSON with ``url``). Raises :class:`ServerStartError` with the tail of the
    server's log when it exits or is not ready within ``timeout_s`` (it is stopped first).
    """
    if base_url is None and ready_file is None:
        raise ValueError("give base_url or ready_file")
    log_path.parent.mkdir(parents=True, exist_ok=True)
    full_env = dict(os.environ)
    full_env.update(env or {})
    prefix = ["nice", "-n", str(nice)] if nice > 0 else []
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [*prefix, *command],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=full_env,
            cwd=cwd,
        )
    server = ServerProcess(name, proc, base_url or "", log_path)
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise ServerStartError(
                    f"{name} exited with code {proc.returncode} while starting; "
                    f"log {log_path}:\n{log_tail(log_path)}"
                )
            if not server.base_url and ready_file is not None and ready_file.is_file():
                with contextlib.suppress(ValueError, OSError):
                    server.info = json.loads(ready_file.read_text())
                    server.base_url = str(server.info["url"]).rstrip("/")
            if server.base_url and all(probe(url) for url in server.urls):
                server.sample()
                return server
            time.sleep(1.0)
        last = search_answer(server.base_url) if server.base_url else "no URL yet"
        raise ServerStartError(
            f"{name} not ready after {timeout_s:.0f}s (last answer: {last}); "
            f"log {log_path}:\n{log_tail(log_path)}"
        )
    except BaseException:
        stop_server(server, timeout_s=60.0)
        raise


def stop_server(server: ServerProcess, timeout_s: float = 120.0) -> str:
    """SIGTERM to the server's pid, wait; then SIGKILL to it and to any leftover process of
    its tree. Returns how it ended (``exited``, ``killed``)."""
    how = "exited"
    if server.alive():
        with contextlib.suppress(ProcessLookupError):
            server.proc.send_signal(signal.SIGTERM)
        try:
            server.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            how = "killed"
            with contextlib.suppress(ProcessLookupError):
                server.proc.kill()
            server.proc.wait(timeout=30)
    # processes of the tree that outlived their parent (same pid *and* start time: ours);
    # a Ray shutdown lets its daemons exit on their own for a few seconds first
    leftovers = _leftovers(server)
    grace = time.monotonic() + 15.0
    while leftovers and time.monotonic() < grace:
        time.sleep(0.5)
        leftovers = _leftovers(server)
    for pid in leftovers:
        how = "killed"
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
    return how


def _leftovers(server: ServerProcess) -> list[int]:
    table = read_process_table()
    return [
        pid
        for pid, seen in server.known.items()
        if pid != server.pid
        and pid in table
        and table[pid].starttime_ticks == seen.starttime_ticks
        and table[pid].state != "Z"
    ]
