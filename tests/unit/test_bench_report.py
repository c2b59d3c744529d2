"""Summary, ratios and report rendering from a synthetic run; the CLI's argument handling."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from recsys.bench.harness import BenchResult
from recsys.bench.report import headline, render_markdown, rerender, write_outputs
from recsys.bench.summary import build_summary
from recsys.bench.synthetic import synthetic_result

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def result() -> BenchResult:
    return synthetic_result()


def test_summary_ratios_and_verdict(result: BenchResult) -> None:
    s = build_summary(result, "python scripts/bench.py --quick")
    r = s["ratios"]
    # the highest searched rate under each capacity: serve 30, naive 15, in-process 60
    assert s["systems"]["serve"]["sustained_rps"] == 30.0
    assert r["serve_vs_naive_sustained_ratio"] == pytest.approx(2.0)
    assert r["serve_vs_inprocess_sustained_ratio"] == pytest.approx(0.5)
    assert r["serve_vs_monolithic_sustained_ratio"] == pytest.approx(1.0)
    assert r["serve_split_vs_naive_sustained_ratio"] == pytest.approx(1.0)
    # cached stream: every capacity doubled (serve 60, naive 30)
    assert r["serve_vs_naive_sustained_ratio_cached_stream"] == pytest.approx(2.0)
    # 30 vs 12 ms at every low rate
    assert r["serve_p50_overhead_ms"] == pytest.approx(18.0)
    assert s["verdict"]["serve_sustains_at_least_naive"] is True
    assert s["verdict"]["serve_sustains_0.8_of_naive_cached_stream"] is True
    assert s["verdict"]["serve_p50_overhead_within_budget"] is False
    # naive fails above 20: the highest low rate every system keeps up with is 20
    assert s["reference_rate"] == 20.0
    assert s["systems"]["serve"]["reference"]["cpu_ms_per_req"] == pytest.approx(20.0)
    stages = s["systems"]["serve"]["stages_low"]["search"]
    assert stages["chain_wait"]["mean"] == pytest.approx(30 - 6 - 12)
    opt = s["optimisations"][0]
    assert opt["variant"] == "serve:proxy" and opt["sustained_rps"] == [30.0, 60.0]
    # 20 searches of 7 distinct queries per stream: 13 repeat, one cache answers them
    longtail = s["streams"]["longtail"]
    assert longtail["repeat_share"] == pytest.approx(13 / 20)
    assert longtail["cache_hit_rate"]["serve"] == pytest.approx(13 / 20)
    spread = longtail["sustained_spread"]["naive"]
    assert (spread["min"], spread["median"], spread["max"]) == (15.0, 15.0, 15.0)
    json.dumps(s, allow_nan=False)  # strictly valid JSON


def test_report_renders_every_section(result: BenchResult) -> None:
    s = build_summary(result)
    md = render_markdown(s, notes="Hand-written analysis.")
    for heading in (
        "## Verdict",
        "## Systems",
        "## Query streams",
        "## Low load",
        "## Where Serve's time goes",
        "## Analysis",
        "## Optimisations",
        "## Offline experiments",
        "## Every rate measured",
        "## Definitions and method",
    ):
        assert heading in md
    assert "serve:proxy" in md and "Hand-written analysis." in md
    rows = headline(s)
    assert [r["system"] for r in rows] == [
        "inprocess",
        "naive",
        "monolith",
        "serve",
        "serve_split",
    ]
    assert rows[1]["serve / this"] == "2.00"


def test_write_outputs_writes_report_json_parquet_and_plots(
    result: BenchResult, tmp_path: Path
) -> None:
    write_outputs(result, tmp_path, "cmd")
    for name in (
        "report.md",
        "summary.json",
        "points.parquet",
        "records_serve.parquet",
        "records_serve_proxy.parquet",
        "latency_vs_rate.png",
        "variants_latency_vs_rate.png",
    ):
        assert (tmp_path / name).is_file(), name
    records = pd.read_parquet(tmp_path / "records_serve.parquet")
    assert {"rate", "system", "t_encode", "t_chain_wall"} <= set(records.columns)
    # longtail: 3 low-load points and 4 searched rates; cached: 4 searched rates; 100 each
    assert len(records) == 1100
    assert set(records["stream"]) == {"longtail", "cached"}
    assert set(records["phase"]) == {"low", "search"}


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "bench.py"), *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )


def test_cli_help_explains_systems_and_variants() -> None:
    out = run_cli("--help")
    assert out.returncode == 0
    for word in (
        "inprocess",
        "naive",
        "monolith",
        "serve",
        "--quick",
        "--json",
        "proxy",
        "classic",
    ):
        assert word in out.stdout


def test_cli_reports_a_missing_artifact_clearly(tmp_path: Path) -> None:
    out = run_cli("--artifacts", str(tmp_path / "nope"), "--out", str(tmp_path / "o"))
    assert out.returncode == 2
    assert "missing" in out.stderr and "recsys build" in out.stderr


def test_cli_rejects_unknown_systems(tmp_path: Path) -> None:
    out = run_cli("--systems", "bogus", "--out", str(tmp_path))
    assert out.returncode == 2 and "unknown systems" in out.stderr


def test_rerender_uses_the_saved_summary_and_notes(result: BenchResult, tmp_path: Path) -> None:
    write_outputs(result, tmp_path, "cmd")
    (tmp_path / "notes.md").write_text("The proxy hop dominates.")
    summary = rerender(tmp_path, tmp_path / "notes.md")
    assert summary["ratios"]["serve_vs_naive_sustained_ratio"] == pytest.approx(2.0)
    assert "The proxy hop dominates." in (tmp_path / "report.md").read_text()


def test_report_names_the_commit_it_measured(result: BenchResult) -> None:
    s = build_summary(result, "cmd")
    s["environment"]["git"] = {"commit": "0123456789abcdef", "dirty_files": []}
    assert "at commit `0123456789ab` (clean tree)" in render_markdown(s)
    s["environment"]["git"]["dirty_files"] = ["recsys/x.py"]
    assert "1 changed files: recsys/x.py" in render_markdown(s)
