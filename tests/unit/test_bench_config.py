"""Benchmark config: system selection, overrides, validation; schedule rows -> requests."""

from __future__ import annotations

import subprocess
import sys

import pytest
from pydantic import ValidationError

from recsys.bench.config import (
    MAIN_SYSTEMS,
    VARIANTS,
    BenchConfig,
    SweepConfig,
    SystemSpec,
    deep_merge,
    quick_sweep,
    select_systems,
)
from recsys.bench.requests import from_schedule_row
from recsys.config import AppConfig


def test_variants_pull_in_their_baseline_and_keep_main_order() -> None:
    names = [s.name for s in select_systems(["naive", "inprocess"], ["int8", "proxy"])]
    assert names == ["inprocess", "naive", "serve", "serve:int8", "serve:proxy"]
    with pytest.raises(ValueError, match="unknown systems"):
        select_systems(["bogus"], [])
    with pytest.raises(ValueError, match="unknown variants"):
        select_systems(["serve"], ["bogus"])


def test_overrides_merge_deeply_and_validate() -> None:
    base = AppConfig(artifacts="x")
    spec = VARIANTS["nocache"]
    merged = spec.app_config(base)
    assert merged.encoder.cache_size == 0
    assert merged.encoder.num_threads == base.encoder.num_threads
    assert merged.artifacts == "x"
    batch = VARIANTS["batch32"].app_config(base)
    assert batch.ranker.max_batch_size == 32 and batch.ranker.batch_wait_timeout_s == 0.005
    bad = SystemSpec(name="x", kind="serve", app_overrides={"encoder": {"bogus": 1}})
    with pytest.raises(ValidationError):
        bad.app_config(base)
    assert deep_merge({"a": {"b": 1, "c": 2}}, {"a": {"b": 3}}) == {"a": {"b": 3, "c": 2}}


def test_bench_config_checks_names_and_baselines() -> None:
    app = AppConfig()
    with pytest.raises(ValidationError, match="unique"):
        BenchConfig(
            artifacts="a",
            app=app,
            systems=[MAIN_SYSTEMS["serve"], MAIN_SYSTEMS["serve"]],
            sweep=quick_sweep(),
        )
    with pytest.raises(ValidationError, match="baseline"):
        BenchConfig(artifacts="a", app=app, systems=[VARIANTS["proxy"]], sweep=quick_sweep())
    with pytest.raises(ValidationError, match="ascending"):
        SweepConfig(low_rates=[20, 10], duration_s=1)


def test_transport_variants_set_the_env_of_the_ray_instance() -> None:
    from deployments.serve_main import LOCAL_SERVE_ENV

    # the default (serve) is throughput-optimised with direct ingress; the variants undo parts
    assert LOCAL_SERVE_ENV["RAY_SERVE_THROUGHPUT_OPTIMIZED"] == "1"
    assert LOCAL_SERVE_ENV["RAY_SERVE_ENABLE_DIRECT_INGRESS"] == "1"
    assert VARIANTS["proxy"].env == {"RAY_SERVE_ENABLE_DIRECT_INGRESS": "0"}
    classic = VARIANTS["classic"]
    assert classic.env["RAY_SERVE_THROUGHPUT_OPTIMIZED"] == "0" and classic.is_ray
    assert not MAIN_SYSTEMS["naive"].is_ray


def test_schedule_rows_become_library_requests() -> None:
    search = from_schedule_row(
        "search", "/v1/search", '{"query": "red shoes", "k": 10, "user_id": "U1"}'
    )
    assert (search.route, search.query, search.user_id, search.k) == (
        "search",
        "red shoes",
        "U1",
        10,
    )
    rec = from_schedule_row("recommend", "/v1/recommend", '{"user_id": "U2", "k": 5}')
    assert (rec.route, rec.user_id, rec.k) == ("recommend", "U2", 5)
    sim = from_schedule_row("similar", "/v1/items/I%2F001/similar?k=7", None)
    assert (sim.route, sim.item_id, sim.k) == ("similar", "I/001", 7)
    with pytest.raises(ValueError):
        from_schedule_row("similar", "/v1/other", None)
    with pytest.raises(ValueError):
        from_schedule_row("bogus", "/", "{}")


def test_the_benchmark_package_never_imports_ray() -> None:
    code = (
        "import sys\n"
        "import recsys.bench.harness, recsys.bench.report, recsys.bench.naive_server\n"
        "import recsys.bench.quality, recsys.bench.sweep\n"
        "print(','.join(m for m in sys.modules if m == 'ray' or m.startswith('ray.')))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_the_naive_app_loads_its_pipeline_off_uvicorns_event_loop(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """uvicorn calls the factory inside its running loop, where the synchronous
    Pipeline.run of the warm-up cannot run; the factory must load on a thread of its own."""
    import asyncio

    from recsys.bench import batcher, naive_app, naive_server

    seen: dict[str, object] = {}

    def fake_load(config: AppConfig, threads: int) -> str:
        try:
            asyncio.get_running_loop()
            seen["in_loop"] = True
        except RuntimeError:
            seen["in_loop"] = False
        seen["threads"] = threads
        return "pipeline"

    monkeypatch.setattr(batcher, "load_pipeline", fake_load)
    monkeypatch.setattr(naive_server, "create_app", lambda pipeline: f"app over {pipeline}")
    monkeypatch.setenv(naive_app.THREADS_ENV, "3")

    async def factory_in_a_loop() -> object:
        return naive_app.create()

    assert asyncio.run(factory_in_a_loop()) == "app over pipeline"
    assert seen == {"in_loop": False, "threads": 3}
    command = naive_app.naive_command("python", 8300, 2)
    assert command[command.index("--workers") + 1] == "2" and "--factory" in command
