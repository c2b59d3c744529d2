"""Start, wait for and stop the simulated GPU cluster as local processes.

``ray start --head --autoscaling-config=FILE --block`` runs in a new session (``setsid``), its
pid, session and addresses recorded in a state directory (``.cache/cluster/state.json``, logs
beside it). Ray's autoscaler, started by the head, launches the fake worker nodes as further
raylets *in the same session*. That matters on the way down: when the head stops, the fake
provider does not stop its nodes (it created them with ``shutdown_at_exit=False``), and their
raylets, agents and log monitors live on, orphaned. :meth:`LocalCluster.down` therefore stops
the head by its pid, then every process left in the cluster's own session (and only those:
the session id is the head's pid, recorded at start), first with SIGTERM, then SIGKILL.

Nothing here imports Ray: the cluster is driven through the ``ray`` command line.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import yaml

from recsys.experiments.cluster_spec import (
    FakeClusterSpec,
    NodeStatus,
    parse_ray_status,
    render_autoscaler_config,
)

DEFAULT_STATE_DIR = Path(".cache/cluster")
"""Where ``scripts/cluster.py`` keeps the running cluster's state and logs."""
STATE_FILE = "state.json"
_UNIX_SOCKET_MAX = 107


class ClusterError(RuntimeError):
    """The cluster could not be started, reached or stopped."""


@dataclass(frozen=True)
class ClusterState:
    """What ``up`` recorded about a running cluster (``state.json``)."""

    pid: int
    """Pid of ``ray start --head --block`` (also the cluster's session and process group)."""
    session_id: int
    """Session id of every process of the cluster (the head pid: it was started by setsid)."""
    address: str
    """GCS address ``ip:port`` for ``ray.init(address=...)`` and ``ray status``."""
    node_ip: str
    """IP every node of the cluster uses."""
    temp_dir: str
    """Ray's ``--temp-dir`` for this cluster (sockets, session logs)."""
    state_dir: str
    """The state directory (absolute)."""
    token_path: str
    """File holding the cluster's authentication token (mode 0600)."""
    config_path: str
    """The rendered autoscaler config."""
    log_path: str
    """Output of ``ray start``."""
    started_unix: float
    """When ``up`` started the head."""
    spec: dict[str, object]
    """The :class:`FakeClusterSpec` it runs, as JSON data."""

    def client_env(self) -> dict[str, str]:
        """Environment a process needs to join the cluster (token auth, address)."""
        return {
            "RAY_AUTH_MODE": "token",
            "RAY_AUTH_TOKEN_PATH": self.token_path,
            "RAY_ADDRESS": self.address,
        }


@dataclass(frozen=True)
class DownReport:
    """What ``down`` did."""

    was_running: bool
    head_exited: bool
    stragglers_terminated: list[int]
    stragglers_killed: list[int]
    seconds: float


def node_ip() -> str:
    """The IP Ray would pick for this machine (the address of the default route), else
    loopback. Computed here so the autoscaler config can name the GCS before it starts."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("8.8.8.8", 80))  # UDP connect sends nothing; it only picks a route
            return str(s.getsockname()[0])
        except OSError:
            return "127.0.0.1"


def ray_executable() -> str:
    """The ``ray`` command of this Python environment."""
    beside = Path(sys.executable).parent / "ray"
    if beside.is_file():
        return str(beside)
    found = shutil.which("ray")
    if found is None:
        raise ClusterError("the `ray` command is not installed in this environment")
    return found


# --------------------------------------------------------------------------------------------
# /proc helpers (Linux)
# --------------------------------------------------------------------------------------------


def _proc_stat(pid: int) -> tuple[str, str, int, int] | None:
    """(comm, state, pgid, session) of ``pid``, or None when it is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    comm = raw[raw.index("(") + 1 : raw.rindex(")")]
    fields = raw[raw.rindex(")") + 2 :].split()
    return comm, fields[0], int(fields[2]), int(fields[3])


def _cmdline(pid: int) -> str:
    try:
        return (
            Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        )
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return ""


def _pids() -> list[int]:
    return [int(p) for p in os.listdir("/proc") if p.isdigit()]


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie counts as gone)."""
    stat = _proc_stat(pid)
    return stat is not None and stat[1] != "Z"


def session_members(session_id: int) -> list[int]:
    """Live processes of session ``session_id`` (zombies left out)."""
    members = []
    for pid in _pids():
        stat = _proc_stat(pid)
        if stat is not None and stat[3] == session_id and stat[1] != "Z":
            members.append(pid)
    return sorted(members)


def other_ray_instances(exclude_session: int | None = None) -> list[tuple[int, str]]:
    """Raylets and GCS servers running on this machine outside ``exclude_session``: another Ray
    instance that would compete for the cores and ports."""
    found = []
    for pid in _pids():
        stat = _proc_stat(pid)
        if stat is None or stat[1] == "Z" or stat[3] == exclude_session:
            continue
        if stat[0] in ("raylet", "gcs_server"):
            found.append((pid, _cmdline(pid)[:160]))
    return found


# --------------------------------------------------------------------------------------------
# The cluster
# --------------------------------------------------------------------------------------------


class LocalCluster:
    """One simulated cluster, identified by its state directory."""

    def __init__(self, state_dir: Path | str = DEFAULT_STATE_DIR):
        self.state_dir = Path(state_dir).resolve()

    # ---- state --------------------------------------------------------------------------------

    @property
    def state_path(self) -> Path:
        return self.state_dir / STATE_FILE

    def state(self) -> ClusterState | None:
        """The recorded state, or None when no cluster was started from this directory."""
        if not self.state_path.is_file():
            return None
        return ClusterState(**json.loads(self.state_path.read_text()))

    def running(self) -> ClusterState | None:
        """The state of a cluster whose head still runs (None otherwise)."""
        state = self.state()
        if state is None:
            return None
        stat = _proc_stat(state.pid)
        if stat is None or stat[1] == "Z" or stat[3] != state.session_id:
            return None
        return state

    def temp_dir(self) -> Path:
        """Ray's temp dir for this cluster: short and unique per state directory (Unix socket
        paths under it must stay below 108 bytes)."""
        digest = hashlib.sha256(str(self.state_dir).encode()).hexdigest()[:8]
        return Path("/tmp") / f"recsys-ray-{digest}"

    # ---- up -----------------------------------------------------------------------------------

    def up(
        self,
        spec: FakeClusterSpec,
        *,
        timeout_s: float = 180.0,
        extra_env: dict[str, str] | None = None,
        allow_other_ray: bool = False,
        code_from: Path | None = None,
        log: Callable[[str], None] = print,
    ) -> ClusterState:
        """Start the head (detached), then wait until the autoscaler runs every node type's
        ``min_workers``. Raises :class:`ClusterError` when a cluster from this state directory
        still runs, when another Ray instance runs on this machine (unless
        ``allow_other_ray``), or when the cluster is not ready within ``timeout_s``.

        ``code_from``: a repository root whose ``recsys/`` and ``deployments/`` are copied into
        the state directory and put first on every cluster process's ``PYTHONPATH``: replicas
        started later (a scale-up) run the code as it was at ``up``, whatever is edited in the
        working tree meanwhile."""
        existing = self.running()
        if existing is not None:
            raise ClusterError(
                f"a cluster from {self.state_dir} is already running (head pid {existing.pid}, "
                f"address {existing.address}); stop it first with `scripts/cluster.py down`"
            )
        others = other_ray_instances()
        if others and not allow_other_ray:
            listing = "\n".join(f"  pid {pid}: {cmd}" for pid, cmd in others[:6])
            raise ClusterError(
                "another Ray instance runs on this machine; one at a time (they would compete "
                f"for the cores and ports):\n{listing}"
            )
        self.state_dir.mkdir(parents=True, exist_ok=True)
        temp_dir = self.temp_dir()
        if len(str(temp_dir)) + 80 > _UNIX_SOCKET_MAX:
            raise ClusterError(f"temp dir {temp_dir} is too long for Ray's Unix sockets")
        ip = node_ip()
        address = f"{ip}:{spec.gcs_port}"
        config_path = self.state_dir / "autoscaler.yaml"
        config_path.write_text(
            "# Rendered by recsys.experiments.cluster_spec from a FakeClusterSpec; do not edit.\n"
            + yaml.safe_dump(render_autoscaler_config(spec, address), sort_keys=False)
        )
        token_path = self.state_dir / "auth_token"
        token_path.write_text(secrets.token_hex(32))
        token_path.chmod(0o600)
        log_path = self.state_dir / "head.log"
        env = dict(os.environ)
        env.update(
            {
                "RAY_FAKE_CLUSTER": "1",
                "AUTOSCALER_UPDATE_INTERVAL_S": f"{spec.update_interval_s:g}",
                "RAY_AUTH_MODE": "token",
                "RAY_AUTH_TOKEN_PATH": str(token_path),
                "HF_HUB_OFFLINE": env.get("HF_HUB_OFFLINE", "1"),
                "TOKENIZERS_PARALLELISM": "false",
                # SIGTERM to the head would otherwise wait up to 30 s for a node drain that a
                # head with the Serve controller on it never finishes
                "RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S": "0",
            }
        )
        env.pop("RAY_ADDRESS", None)
        if code_from is not None:
            snapshot = self.snapshot_code(code_from)
            env["PYTHONPATH"] = os.pathsep.join(
                p for p in (str(snapshot), env.get("PYTHONPATH", "")) if p
            )
            log(f"[cluster] cluster processes run the code copied to {snapshot}")
        env.update(extra_env or {})
        command = [
            ray_executable(),
            "start",
            "--head",
            "--block",
            f"--port={spec.gcs_port}",
            f"--node-ip-address={ip}",
            f"--num-cpus={spec.head_cpus}",
            "--num-gpus=0",
            "--object-store-memory=268435456",
            "--include-dashboard=false",
            "--disable-usage-stats",
            f"--temp-dir={temp_dir}",
            f"--autoscaling-config={config_path}",
        ]
        started = time.time()
        with open(log_path, "wb") as out:
            process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=os.getcwd(),
                start_new_session=True,
            )
        state = ClusterState(
            pid=process.pid,
            session_id=process.pid,
            address=address,
            node_ip=ip,
            temp_dir=str(temp_dir),
            state_dir=str(self.state_dir),
            token_path=str(token_path),
            config_path=str(config_path),
            log_path=str(log_path),
            started_unix=started,
            spec=spec.model_dump(mode="json"),
        )
        self.state_path.write_text(json.dumps(asdict(state), indent=2))
        logs_link = self.state_dir / "ray-logs"
        if logs_link.is_symlink():
            logs_link.unlink()
        if not logs_link.exists():
            logs_link.symlink_to(temp_dir / "session_latest" / "logs")
        log(f"[cluster] head pid {process.pid} starting at {address} (log: {log_path})")
        try:
            self._wait_ready(state, spec, process, timeout_s, log)
        except BaseException:
            log("[cluster] not ready: stopping what was started")
            self.down(log=log)
            raise
        log(f"[cluster] ready in {time.time() - started:.1f}s")
        return state

    def _wait_ready(
        self,
        state: ClusterState,
        spec: FakeClusterSpec,
        process: subprocess.Popen[bytes],
        timeout_s: float,
        log: Callable[[str], None],
    ) -> None:
        deadline = time.monotonic() + timeout_s
        want = spec.min_nodes()
        last = ""
        while time.monotonic() < deadline:
            if process.poll() is not None:
                tail = Path(state.log_path).read_text(errors="replace")[-3000:]
                raise ClusterError(f"`ray start` exited with {process.returncode}:\n{tail}")
            try:
                nodes = self.node_status(state, timeout_s=30)
            except ClusterError as exc:
                last = str(exc).splitlines()[0] if str(exc) else "not reachable"
                time.sleep(2)
                continue
            workers = nodes.workers()
            if "ray.head.default" in nodes.active and all(
                workers.get(name, 0) >= n for name, n in want.items()
            ):
                return
            now = f"workers {workers or '{}'}, pending {nodes.pending or '{}'}; want {want}"
            if now != last:
                log(f"[cluster] waiting: {now}")
                last = now
            time.sleep(1)
        raise ClusterError(f"cluster not ready after {timeout_s:.0f}s (last: {last})")

    def snapshot_code(
        self, root: Path, packages: tuple[str, ...] = ("recsys", "deployments")
    ) -> Path:
        """Copy ``packages`` of the repository at ``root`` into ``<state dir>/code``."""
        target = self.state_dir / "code"
        if target.exists():
            shutil.rmtree(target)
        for package in packages:
            source = Path(root) / package
            if not (source / "__init__.py").is_file():
                raise ClusterError(f"{source} is not a Python package")
            shutil.copytree(source, target / package, ignore=shutil.ignore_patterns("__pycache__"))
        return target

    # ---- status -------------------------------------------------------------------------------

    def ray_status_text(self, state: ClusterState, timeout_s: float = 30) -> str:
        """Output of ``ray status`` for the cluster (the autoscaler's view)."""
        env = dict(os.environ)
        env.update(state.client_env())
        try:
            out = subprocess.run(
                [ray_executable(), "status", f"--address={state.address}"],
                capture_output=True,
                text=True,
                env=env,
                timeout=timeout_s,
            )
        except subprocess.TimeoutExpired as exc:
            raise ClusterError(f"`ray status` did not answer within {timeout_s:.0f}s") from exc
        if out.returncode != 0 or "Node status" not in out.stdout:
            raise ClusterError((out.stderr or out.stdout).strip()[-800:] or "ray status failed")
        return out.stdout

    def node_status(self, state: ClusterState, timeout_s: float = 30) -> NodeStatus:
        """Nodes by type, parsed from ``ray status``."""
        return parse_ray_status(self.ray_status_text(state, timeout_s))

    # ---- down ---------------------------------------------------------------------------------

    def down(self, *, timeout_s: float = 60.0, log: Callable[[str], None] = print) -> DownReport:
        """Stop the head by its pid and wait; then stop every process left in the cluster's
        session (the fake worker nodes), SIGTERM first and SIGKILL after a grace period."""
        started = time.monotonic()
        state = self.state()
        if state is None:
            return DownReport(False, True, [], [], 0.0)
        head_running = self.running() is not None
        head_exited = True
        if head_running:
            log(f"[cluster] stopping head pid {state.pid}")
            os.kill(state.pid, signal.SIGTERM)
            head_exited = _wait_gone([state.pid], timeout_s / 2)
            if not head_exited:
                log(f"[cluster] head pid {state.pid} ignored SIGTERM: SIGKILL")
                _signal_all([state.pid], signal.SIGKILL)
                head_exited = _wait_gone([state.pid], 10)
        stragglers = session_members(state.session_id)
        terminated: list[int] = []
        killed: list[int] = []
        if stragglers:
            log(f"[cluster] stopping {len(stragglers)} processes left by the fake nodes")
            terminated = _signal_all(stragglers, signal.SIGTERM)
            if not _wait_gone(stragglers, min(15.0, timeout_s / 2)):
                killed = _signal_all(session_members(state.session_id), signal.SIGKILL)
                _wait_gone(killed, 10)
        left = session_members(state.session_id)
        if left:
            raise ClusterError(
                f"processes of the cluster's session {state.session_id} survived SIGKILL: {left}"
            )
        self.state_path.unlink(missing_ok=True)
        seconds = time.monotonic() - started
        log(f"[cluster] down in {seconds:.1f}s")
        return DownReport(head_running, head_exited, terminated, killed, seconds)


def _signal_all(pids: list[int], sig: signal.Signals) -> list[int]:
    sent = []
    for pid in pids:
        try:
            os.kill(pid, sig)
            sent.append(pid)
        except ProcessLookupError:
            pass
    return sent


def _wait_gone(pids: list[int], timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not any(alive(p) for p in pids):
            return True
        time.sleep(0.2)
    return not any(alive(p) for p in pids)
