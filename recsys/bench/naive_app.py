"""The naive baseline as a team would run it: the project's FastAPI app under uvicorn, one
worker process per core.

``recsys.bench.naive_server`` is the app (routes over one in-process ``Pipeline``); this module
is how the benchmark launches it::

    RECSYS_BENCH_NAIVE_CONFIG='{"artifacts": "artifacts/demo"}' \\
        python -m uvicorn recsys.bench.naive_app:create --factory --workers 2 --port 8300

uvicorn imports :func:`create` in each worker, so every worker loads its own pipeline (the
same library code, its own query cache) and nothing is shared or serialised between them.
The app's config and the torch / FAISS threads of each worker come from the environment.
"""

from __future__ import annotations

import concurrent.futures
import os

from fastapi import FastAPI

from recsys.config import AppConfig

CONFIG_ENV = "RECSYS_BENCH_NAIVE_CONFIG"
"""AppConfig as JSON (unset: ``AppConfig()``)."""
THREADS_ENV = "RECSYS_BENCH_NAIVE_THREADS"
"""torch / FAISS threads of each worker (unset: 1)."""


def create() -> FastAPI:
    """The naive app of one uvicorn worker (uvicorn's ``--factory``).

    uvicorn calls this inside its running event loop, where the synchronous
    ``Pipeline.run`` of the warm-up cannot run its own loop: the pipeline is loaded and
    warmed on a thread of its own (the routes call it from FastAPI's thread pool)."""
    from recsys.bench.batcher import load_pipeline
    from recsys.bench.naive_server import create_app
    from recsys.pipeline import Pipeline

    raw = os.environ.get(CONFIG_ENV)
    config = AppConfig.model_validate_json(raw) if raw else AppConfig()
    threads = int(os.environ.get(THREADS_ENV, "1"))
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="naive-load") as pool:
        pipeline: Pipeline = pool.submit(load_pipeline, config, threads).result()
    return create_app(pipeline)


def naive_command(python: str, port: int, workers: int, host: str = "127.0.0.1") -> list[str]:
    """The uvicorn command line of the naive baseline with ``workers`` processes."""
    return [
        python, "-m", "uvicorn", f"{__name__}:create", "--factory",
        "--workers", str(workers),
        "--host", host, "--port", str(port),
        "--log-level", "warning", "--no-access-log",
    ]  # fmt: skip


def naive_env(app: AppConfig, threads: int) -> dict[str, str]:
    """The environment :func:`create` reads."""
    return {CONFIG_ENV: app.model_dump_json(exclude_defaults=True), THREADS_ENV: str(threads)}
