"""The benchmark end to end on the tiny artifact: all four systems, a minimal sweep.

Runs ``scripts/bench.py`` as a user would (its own Ray instances, one at a time, each shut
down through its own handles) and checks the JSON keys, the report files, and that every
scheduled request of every rate got exactly one outcome.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from recsys.bench.topology import supports_layout
from recsys.traffic.config import ConstantShape, RouteMix, SamplingConfig, TrafficConfig
from recsys.traffic.schedule import Workload, build_schedule

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
LOW_RATE = 5.0
LOW_REQUESTS = 10
START_RATE = 15.0
DURATION_S = 2.0
SEED = 0
SYSTEMS = ("inprocess", "naive", "monolith", "serve", "serve_split") + (
    ("serve_fused",) if supports_layout() else ()
)


def test_quick_bench_runs_every_system_and_accounts_for_every_request(
    tiny_artifact: Path, tmp_path: Path
) -> None:
    out_dir = tmp_path / "bench"
    command = [
        sys.executable,
        str(ROOT / "scripts" / "bench.py"),
        "--artifacts", str(tiny_artifact),
        "--out", str(out_dir),
        "--quick",
        "--systems", ",".join(SYSTEMS),
        "--streams", "longtail,cached",
        "--variants", "none",
        "--experiments", "cache",
        "--low-rates", f"{LOW_RATE:g}",
        "--low-requests", str(LOW_REQUESTS),
        "--start-rate", f"{START_RATE:g}",
        "--max-points", "2",
        "--duration", f"{DURATION_S:g}",
        "--warmup", "1",
        "--slo-ms", "2000",
        "--seed", str(SEED),
        "--wait-for-ray-s", "600",
        "--json",
        "--no-progress",
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, timeout=1200)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    for key in (
        "serve_vs_naive_sustained_ratio",
        "serve_vs_inprocess_sustained_ratio",
        "serve_vs_monolithic_sustained_ratio",
        "serve_p50_overhead_ms",
        "serve_split_vs_naive_sustained_ratio",
        "serve_vs_naive_sustained_ratio_cached_stream",
    ):
        assert key in result
    assert result["errors"] == {}, result["errors"]
    assert result["outcome_problems"] == {}, result["outcome_problems"]
    assert set(result["sustained_rps"]) == set(SYSTEMS)
    # with a 2 s SLO every system sustains the first searched rate on the tiny catalog
    assert all(v is not None and v >= START_RATE for v in result["sustained_rps"].values())
    assert result["serve_p50_overhead_ms"] is not None
    assert result["serve_vs_naive_sustained_ratio_cached_stream"] is not None
    for stream, systems in (
        ("longtail", {"inprocess", "naive", "serve"}),
        ("cached", {"naive", "serve"}),
    ):
        rates = result["streams"][stream]["cache_hit_rate"]
        assert set(rates) >= systems
        assert all(0.0 <= v <= 1.0 for v in rates.values())

    for name in ("report.md", "summary.json", "latency_vs_rate.png", "points.parquet"):
        assert (out_dir / name).is_file(), name

    workload = Workload.from_artifact(tiny_artifact, SamplingConfig(), SEED)

    def scheduled(rate: float, duration: float, seed: int) -> int:
        traffic = TrafficConfig(
            shape=ConstantShape(rate=rate),
            duration_s=duration,
            seed=seed,
            mix=RouteMix(search=0.7, recommend=0.2, similar=0.1),
        )
        return len(build_schedule(traffic, workload))

    for system in SYSTEMS:
        records = pd.read_parquet(out_dir / f"records_{system}.parquet")
        assert records["outcome"].notna().all()
        for (stream, phase, repeat, rate), group in records.groupby(
            ["stream", "phase", "repeat", "rate"]
        ):
            duration = (
                (LOW_REQUESTS + 3 * LOW_REQUESTS**0.5) / rate if phase == "low" else DURATION_S
            )
            seed = SEED + 1009 * int(repeat)
            # one outcome per scheduled request (a rate measured twice has twice the rows)
            assert len(group) % scheduled(rate, duration, seed) == 0, (system, stream, rate)
        ok = records[records["outcome"] == "ok"]
        assert len(ok) > 0 and (ok["latency_ms"] > 0).all()
        assert ok["t_total"].notna().mean() > 0.9  # stage timings came back with the answers
