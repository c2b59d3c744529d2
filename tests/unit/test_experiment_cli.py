"""The command lines explain themselves, and the traffic CLI plans a run from an artifact
(dry run: nothing is sent, no cluster)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("command", "expected"),
    [
        (["scripts/cluster.py", "--help"], ["up", "down", "status", "fake multi-node provider"]),
        (["scripts/cluster.py", "up", "--help"], ["--gpu-multi-max", "--idle-timeout"]),
        (
            ["scripts/experiment.py", "--help"],
            ["--shape", "--policy", "--duration", "--out", "reactive"],
        ),
        (["scripts/compare_policies.py", "--help"], ["comparison", "--out"]),
        (["-m", "recsys.traffic", "--help"], ["Open-loop", "--shape", "--allow-non-loopback"]),
    ],
)
def test_help_explains(command: list[str], expected: list[str]) -> None:
    out = subprocess.run(
        [sys.executable, *command], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    for word in expected:
        assert word in out.stdout


def test_traffic_cli_plans_a_run(tiny_artifact: Path, tmp_path: Path) -> None:
    config = tmp_path / "traffic.json"
    config.write_text(
        json.dumps(
            {
                "shape": {"kind": "step", "low": 2, "high": 20, "t_up": 5, "t_down": 15},
                "duration_s": 20,
                "seed": 5,
            }
        )
    )
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "recsys.traffic",
            "--artifacts",
            str(tiny_artifact),
            "--config",
            str(config),
            "--out",
            str(tmp_path / "r.parquet"),
            "--dry-run",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert "search" in out.stdout and "(step)" in out.stderr
    assert not (tmp_path / "r.parquet").exists()


def test_traffic_cli_refuses_a_remote_target(tiny_artifact: Path, tmp_path: Path) -> None:
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "recsys.traffic",
            "--artifacts",
            str(tiny_artifact),
            "--target",
            "http://10.0.0.1:8000",
            "--rate",
            "1",
            "--out",
            str(tmp_path / "r.parquet"),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2 and "loopback" in out.stderr
