"""The recsys command line: help that explains, plans, clear errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from recsys.cli import build_parser, main


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "recsys.cli", *args], capture_output=True, text=True, timeout=120
    )


def test_help_lists_commands_and_explains() -> None:
    out = run("--help")
    assert out.returncode == 0
    for cmd in ("build", "eval", "serve", "plan", "query"):
        assert cmd in out.stdout
    assert "Ray Serve" in out.stdout


@pytest.mark.parametrize("cmd", ["build", "eval", "serve", "plan", "query"])
def test_each_command_has_help(cmd: str) -> None:
    help_text = build_parser()._subparsers._group_actions[0].choices[cmd].format_help()  # type: ignore[union-attr]
    assert "usage: recsys " + cmd in help_text and len(help_text) > 150


def test_plan_prints_ranks_and_refuses_infeasible(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plan", "--tp", "2", "--shoppers", "1000", "--items", "500", "--dim", "8"]) == 0
    out = capsys.readouterr().out
    assert "tp=2" in out and "rank" in out
    code = main(
        ["plan", "--tp", "1", "--shoppers", "50000000", "--dim", "128", "--device-gb", "16"]
    )
    assert code == 3
    assert "at least 2 devices of 16 GiB" in capsys.readouterr().out


def test_plan_json_and_measure_on_a_real_artifact(
    tiny_artifact: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert (
        main(["plan", "--tp", "2", "--artifacts", str(tiny_artifact), "--measure", "--json"]) == 0
    )
    data = json.loads(capsys.readouterr().out)
    measured = data["measured"]
    total = data["plan"]["total_table_bytes"]
    assert [m["rank"] for m in measured] == [0, 1]
    assert all(abs(m["table_bytes"] / total - 0.5) < 0.01 for m in measured)


def test_missing_artifact_is_a_clear_error() -> None:
    out = run("eval", "--artifacts", "/nonexistent/art")
    assert out.returncode == 2
    assert "does not exist" in out.stderr and "Traceback" not in out.stderr


def test_build_refuses_to_overwrite(tmp_path: Path) -> None:
    (tmp_path / "x").mkdir()
    out = run("build", "--out", str(tmp_path / "x"), "--items", "200")
    assert out.returncode == 2 and "already exists" in out.stderr
