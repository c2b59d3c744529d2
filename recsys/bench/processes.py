"""CPU seconds, memory and roles of processes, read from ``/proc`` (Linux).

Two ways to count what serving cost, used together:

* **process tree**: ``utime + stime`` of every process descended from the server's root pid
  (for Ray: the host driver, which starts GCS, raylet, dashboard, and through the raylet every
  worker: controller, proxy, replicas), plus ``cutime + cstime`` (children that exited and
  were reaped), differenced over the measured interval. A process that starts during the
  interval counts from zero; one that exits counts through the parent that reaped it.
* **machine**: busy jiffies of ``/proc/stat`` over the interval minus the benchmark process's
  own CPU (the load generator): a cross-check that also sees processes outside the tree.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

PROC = Path("/proc")
CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


@dataclass(frozen=True)
class ProcStat:
    """The fields of ``/proc/<pid>/stat`` this module uses."""

    pid: int
    comm: str
    state: str
    ppid: int
    utime_ticks: int
    stime_ticks: int
    cutime_ticks: int
    """CPU of children that exited and were waited for (Ray's raylet reaps its workers)."""
    cstime_ticks: int
    nice: int
    starttime_ticks: int
    rss_pages: int

    @property
    def cpu_s(self) -> float:
        """Own CPU seconds."""
        return (self.utime_ticks + self.stime_ticks) / CLOCK_TICKS

    @property
    def cpu_with_children_s(self) -> float:
        """Own CPU seconds plus those of children that exited and were reaped."""
        ticks = self.utime_ticks + self.stime_ticks + self.cutime_ticks + self.cstime_ticks
        return ticks / CLOCK_TICKS

    @property
    def rss_bytes(self) -> int:
        return self.rss_pages * PAGE_SIZE


def parse_proc_stat(text: str) -> ProcStat:
    """Parse one ``/proc/<pid>/stat`` line.

    The command name sits in parentheses and may itself contain spaces and parentheses, so
    the fields after it are found from the *last* ``)``.
    """
    open_at = text.index("(")
    close_at = text.rindex(")")
    pid = int(text[:open_at].strip())
    comm = text[open_at + 1 : close_at]
    rest = text[close_at + 1 :].split()
    # rest[0] is field 3 (state); field n is rest[n - 3]
    return ProcStat(
        pid=pid,
        comm=comm,
        state=rest[0],
        ppid=int(rest[1]),
        utime_ticks=int(rest[11]),
        stime_ticks=int(rest[12]),
        cutime_ticks=int(rest[13]),
        cstime_ticks=int(rest[14]),
        nice=int(rest[16]),
        starttime_ticks=int(rest[19]),
        rss_pages=int(rest[21]),
    )


@dataclass(frozen=True)
class MachineCpu:
    """Aggregate CPU time of the machine from the first line of ``/proc/stat``."""

    busy_ticks: int
    total_ticks: int

    @property
    def busy_s(self) -> float:
        return self.busy_ticks / CLOCK_TICKS

    @property
    def total_s(self) -> float:
        return self.total_ticks / CLOCK_TICKS


def parse_machine_stat(text: str) -> MachineCpu:
    """``cpu user nice system idle iowait irq softirq steal guest guest_nice``: busy is
    everything but idle and iowait (guest time is already inside user / nice)."""
    for line in text.splitlines():
        fields = line.split()
        if fields and fields[0] == "cpu":
            values = [int(v) for v in fields[1:]]
            values += [0] * (10 - len(values))
            user, nice, system, idle, iowait, irq, softirq, steal = values[:8]
            busy = user + nice + system + irq + softirq + steal
            return MachineCpu(busy_ticks=busy, total_ticks=busy + idle + iowait)
    raise ValueError("no aggregate 'cpu' line in /proc/stat text")


def read_machine_cpu(proc: Path = PROC) -> MachineCpu:
    return parse_machine_stat((proc / "stat").read_text())


def read_process_table(proc: Path = PROC) -> dict[int, ProcStat]:
    """Every live process's stat (processes that exit while reading are skipped)."""
    table: dict[int, ProcStat] = {}
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = parse_proc_stat((entry / "stat").read_text())
        except (OSError, ValueError, IndexError):
            continue
        table[stat.pid] = stat
    return table


def descendants(table: Mapping[int, ProcStat], roots: Iterable[int]) -> set[int]:
    """``roots`` (those alive in ``table``) and every process below them."""
    children: dict[int, list[int]] = {}
    for stat in table.values():
        children.setdefault(stat.ppid, []).append(stat.pid)
    found: set[int] = set()
    todo = [r for r in roots if r in table]
    while todo:
        pid = todo.pop()
        if pid in found:
            continue
        found.add(pid)
        todo.extend(children.get(pid, []))
    return found


def read_cmdline(pid: int, proc: Path = PROC) -> str:
    """The process's command line (Ray workers set it to ``ray::<Actor>...``)."""
    try:
        raw = (proc / str(pid) / "cmdline").read_bytes()
    except OSError:
        return ""
    return raw.replace(b"\0", b" ").decode("utf-8", "replace").strip()


def process_role(cmdline: str, comm: str) -> str:
    """A short role name for a serving process, from its command line.

    ``ray::ServeReplica:<app>:<Deployment>`` -> ``replica:<Deployment>``; Serve's proxy and
    controller, Ray's daemons and agents by name; anything else by its executable.
    """
    head = cmdline.split(" ", 1)[0] if cmdline else comm
    if head.startswith("ray::ServeReplica:"):
        return "replica:" + head.split(":")[-1]
    named = {
        "ray::ProxyActor": "serve_proxy",
        "ray::ServeController": "serve_controller",
        "ray::DashboardAgent": "ray_dashboard_agent",
        "ray::RuntimeEnvAgent": "ray_runtime_env_agent",
        "ray::IDLE": "ray_idle_worker",
    }
    if head in named:
        return named[head]
    if head.startswith("ray::"):
        return "ray_worker:" + head[5:].split(".")[0]
    for key, role in (
        ("gcs_server", "ray_gcs"),
        ("raylet", "ray_raylet"),
        ("dashboard/dashboard.py", "ray_dashboard"),
        ("dashboard/agent.py", "ray_dashboard_agent"),
        ("log_monitor.py", "ray_log_monitor"),
        ("autoscaler/_private/monitor.py", "ray_monitor"),
        ("runtime_env/agent", "ray_runtime_env_agent"),
        ("default_worker.py", "ray_idle_worker"),
    ):
        if key in cmdline:
            return role
    return "host" if "python" in head or not head else Path(head).name


@dataclass(frozen=True)
class ProcessSample:
    """One process at one instant."""

    pid: int
    role: str
    cpu_s: float
    """Own CPU plus that of reaped children (see :func:`tree_usage`)."""
    rss_bytes: int
    starttime_ticks: int
    ppid: int = 0


def sample_tree(roots: Iterable[int], proc: Path = PROC) -> dict[int, ProcessSample]:
    """CPU, memory and role of every process in the trees below ``roots``."""
    table = read_process_table(proc)
    out: dict[int, ProcessSample] = {}
    for pid in descendants(table, roots):
        stat = table[pid]
        out[pid] = ProcessSample(
            pid=pid,
            role=process_role(read_cmdline(pid, proc), stat.comm),
            cpu_s=stat.cpu_with_children_s,
            rss_bytes=stat.rss_bytes,
            starttime_ticks=stat.starttime_ticks,
            ppid=stat.ppid,
        )
    return out


@dataclass(frozen=True)
class TreeUsage:
    """What a process tree used between two samples."""

    cpu_s: float
    """CPU seconds of the whole tree over the interval."""
    cpu_by_role: dict[str, float]
    """The same, by :func:`process_role`."""
    rss_bytes: int
    """Resident memory of the tree at the second sample (shared pages count once per process,
    so this over-counts libraries mapped by many workers)."""
    rss_by_role: dict[str, int]
    n_processes: int
    roles: dict[str, int]
    """Number of processes per role at the second sample (e.g. replicas per deployment)."""


def tree_usage(
    before: Mapping[int, ProcessSample], after: Mapping[int, ProcessSample]
) -> TreeUsage:
    """CPU used between ``before`` and ``after``; memory and roles at ``after``.

    Each process counts its own CPU plus that of its children that exited and were reaped
    (``cutime`` / ``cstime``), so a worker that exits during the interval still counts: under
    the role of the process that reaped it (Ray's idle workers under the raylet). What such a
    child had used *before* the interval is taken off again. A pid counts as the same process
    only if its start time matches (pids are reused)."""
    cpu_by_role: dict[str, float] = {}
    rss_by_role: dict[str, int] = {}
    roles: dict[str, int] = {}

    def same(a: ProcessSample | None, b: ProcessSample) -> bool:
        return a is not None and a.starttime_ticks == b.starttime_ticks

    for pid, now in after.items():
        then = before.get(pid)
        base = then.cpu_s if then is not None and same(then, now) else 0.0
        cpu_by_role[now.role] = cpu_by_role.get(now.role, 0.0) + max(0.0, now.cpu_s - base)
        rss_by_role[now.role] = rss_by_role.get(now.role, 0) + now.rss_bytes
        roles[now.role] = roles.get(now.role, 0) + 1
    for pid, then in before.items():
        if same(after.get(pid), then):
            continue
        parent = after.get(then.ppid)
        if parent is not None:  # reaped by a parent still in the tree: remove its past
            cpu_by_role[parent.role] = max(0.0, cpu_by_role[parent.role] - then.cpu_s)
    return TreeUsage(
        cpu_s=sum(cpu_by_role.values()),
        cpu_by_role=dict(sorted(cpu_by_role.items())),
        rss_bytes=sum(rss_by_role.values()),
        rss_by_role=dict(sorted(rss_by_role.items())),
        n_processes=len(after),
        roles=dict(sorted(roles.items())),
    )


def self_cpu_s() -> float:
    """CPU seconds of this process (all threads) so far."""
    t = os.times()
    return t.user + t.system


def foreign_ray_pids(own_pids: Iterable[int], proc: Path = PROC) -> list[int]:
    """Pids of Ray daemons (raylet, gcs_server) that are not ours: another Ray instance."""
    own = set(own_pids)
    return sorted(
        pid
        for pid, stat in read_process_table(proc).items()
        if pid not in own and stat.comm in ("raylet", "gcs_server")
    )


def load_average() -> float:
    """One-minute load average."""
    return os.getloadavg()[0]
