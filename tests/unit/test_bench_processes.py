"""CPU accounting from /proc text: parsing, process trees, roles, usage over an interval."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from recsys.bench import processes as P


def stat_line(
    pid: int,
    comm: str,
    ppid: int,
    utime: int,
    stime: int,
    start: int = 100,
    rss: int = 10,
    nice: int = 0,
) -> str:
    # fields 3.. : state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt
    # utime stime cutime cstime priority nice num_threads itrealvalue starttime vsize rss ...
    rest = [
        "S", ppid, 1, 1, 0, -1, 0, 0, 0, 0, 0, utime, stime, 0, 0, 20, nice, 4, 0, start,
        123456, rss, 0,
    ]  # fmt: skip
    return f"{pid} ({comm}) " + " ".join(str(v) for v in rest)


def test_parse_proc_stat_survives_spaces_and_parentheses_in_the_name() -> None:
    s = P.parse_proc_stat(
        stat_line(42, "ray::Serve (x) y)", 7, 300, 200, start=555, rss=3, nice=15)
    )
    assert (s.pid, s.comm, s.ppid) == (42, "ray::Serve (x) y)", 7)
    assert (s.utime_ticks, s.stime_ticks, s.nice, s.starttime_ticks) == (300, 200, 15, 555)
    assert s.cpu_s == pytest.approx(500 / P.CLOCK_TICKS)
    assert s.rss_bytes == 3 * P.PAGE_SIZE


def test_parse_real_proc_stat_of_this_process() -> None:
    s = P.parse_proc_stat(Path(f"/proc/{os.getpid()}/stat").read_text())
    assert s.pid == os.getpid() and s.ppid == os.getppid()


def test_parse_machine_stat_counts_busy_without_idle_and_iowait() -> None:
    text = "cpu  100 5 50 1000 20 3 2 1 0 0\ncpu0 50 2 25 500 10 1 1 0 0 0\nintr 1\n"
    m = P.parse_machine_stat(text)
    assert m.busy_ticks == 100 + 5 + 50 + 3 + 2 + 1
    assert m.total_ticks == m.busy_ticks + 1000 + 20
    with pytest.raises(ValueError):
        P.parse_machine_stat("cpu0 1 2 3 4\n")


def test_descendants_walks_the_whole_tree_only() -> None:
    table = {
        pid: P.parse_proc_stat(stat_line(pid, "p", ppid, 0, 0))
        for pid, ppid in [(1, 0), (10, 1), (11, 10), (12, 11), (13, 10), (20, 1)]
    }
    assert P.descendants(table, [10]) == {10, 11, 12, 13}
    assert P.descendants(table, [99]) == set()


@pytest.mark.parametrize(
    ("cmdline", "role"),
    [
        ("ray::ServeReplica:recsys:QueryEncoder", "replica:QueryEncoder"),
        ("ray::ProxyActor", "serve_proxy"),
        ("ray::ServeController", "serve_controller"),
        ("/x/ray/core/src/ray/gcs/gcs_server --log_dir=/tmp", "ray_gcs"),
        ("/x/ray/core/src/ray/raylet/raylet --raylet_socket_name=a", "ray_raylet"),
        ("/x/python -u /x/ray/dashboard/agent.py --node-id=1", "ray_dashboard_agent"),
        ("/x/python /x/ray/dashboard/dashboard.py --host=127.0.0.1", "ray_dashboard"),
        ("/x/python scripts/bench.py host --spec s.json", "host"),
    ],
)
def test_process_roles(cmdline: str, role: str) -> None:
    assert P.process_role(cmdline, "comm") == role


def sample(
    pid: int, role: str, cpu: float, start: int = 1, rss: int = 100, ppid: int = 0
) -> P.ProcessSample:
    return P.ProcessSample(
        pid=pid, role=role, cpu_s=cpu, rss_bytes=rss, starttime_ticks=start, ppid=ppid
    )


def test_tree_usage_differences_cpu_and_handles_new_and_reused_pids() -> None:
    before = {1: sample(1, "a", 10.0), 2: sample(2, "b", 5.0), 3: sample(3, "b", 1.0, start=7)}
    after = {
        1: sample(1, "a", 12.5),
        2: sample(2, "b", 5.5),
        3: sample(3, "b", 0.25, start=9),  # pid reused by a new process: counts from zero
        4: sample(4, "c", 0.75),  # started during the interval
    }
    u = P.tree_usage(before, after)
    assert u.cpu_by_role == pytest.approx({"a": 2.5, "b": 0.75, "c": 0.75})
    assert u.cpu_s == pytest.approx(4.0)
    assert u.rss_bytes == 400 and u.n_processes == 4
    assert u.roles == {"a": 1, "b": 2, "c": 1}


def test_sample_tree_of_this_process_sees_it() -> None:
    tree = P.sample_tree([os.getpid()])
    assert os.getpid() in tree and tree[os.getpid()].cpu_s > 0


def test_tree_usage_counts_an_exited_child_through_the_parent_that_reaped_it() -> None:
    # an idle worker (pid 2) used 3 s before the interval and 1 s in it, then exited; the
    # raylet (pid 1) reaped it, so its cutime grew by 4 s and its own CPU by 0.5 s
    before = {1: sample(1, "ray_raylet", 10.0), 2: sample(2, "ray_idle_worker", 3.0, ppid=1)}
    after = {1: sample(1, "ray_raylet", 14.5)}
    u = P.tree_usage(before, after)
    assert u.cpu_by_role == pytest.approx({"ray_raylet": 1.5})


def test_parse_proc_stat_reads_children_cpu() -> None:
    line = stat_line(5, "raylet", 1, 100, 50)
    fields = line.split(" ")
    fields[15], fields[16] = "30", "20"  # cutime, cstime (fields 16 and 17)
    s = P.parse_proc_stat(" ".join(fields))
    assert (s.cutime_ticks, s.cstime_ticks) == (30, 20)
    assert s.cpu_with_children_s == pytest.approx(200 / P.CLOCK_TICKS)
    assert s.cpu_s == pytest.approx(150 / P.CLOCK_TICKS)
