"""The naive baseline: one FastAPI/uvicorn process running the pipeline once per request.

What a team would build first: the same HTTP API as the Serve ingress (``recsys.api``: routes,
models, errors, request ids) over ``Pipeline.run([one])`` per request (the same orchestrator
as the ingress, in-process stages), in a worker thread, no batching. The query cache is an
unsynchronised LRU, so a lock lets one request compute at a time (parsing, validation and
serialisation of the others go on around it). One uvicorn worker, no access log.

    python -m recsys.bench.naive_server --artifacts artifacts/demo --port 8300
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import threading
import time
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from recsys.api import create_api, lookup_error, request_id_of, stage_error_response
from recsys.bench.batcher import load_pipeline
from recsys.catalog import UnknownFilterError, UnknownIdError
from recsys.config import AppConfig
from recsys.orchestrator import StageError
from recsys.pipeline import Pipeline, PreparedRequest, prepare
from recsys.types import RankedResponse, Route


class NaiveBackend:
    """``recsys.api``'s backend over one in-process pipeline, one request at a time."""

    def __init__(self, pipeline: Pipeline):
        self.pipeline = pipeline
        self.lock = threading.Lock()
        self.retry_after = {"Retry-After": str(pipeline.config.routing.retry_after_s)}

    async def answer(
        self, request: Request, route: Route, k: int | None, **ids: Any
    ) -> JSONResponse:
        started = time.perf_counter()
        rid = request_id_of(request)
        p = self.pipeline
        try:
            prep = prepare(
                route, p.catalog, p.policy, k or p.config.default_k, request_id=rid, **ids
            )
        except (UnknownIdError, UnknownFilterError) as exc:
            return lookup_error(exc, rid)
        try:
            answer, waited = await asyncio.to_thread(self._compute, prep)
        except StageError as exc:
            return stage_error_response(exc, rid, self.retry_after)
        body = answer.model_dump()
        body["timings_ms"] = {
            **answer.timings_ms,
            "compute": answer.timings_ms.get("total", 0.0),
            "queue": round((waited - started) * 1000.0, 3),
            "total": round((time.perf_counter() - started) * 1000.0, 3),
        }
        return JSONResponse(body)

    def _compute(self, prep: PreparedRequest) -> tuple[RankedResponse, float]:
        with self.lock:
            waited = time.perf_counter()
            return self.pipeline.run([prep])[0], waited

    async def healthz(self) -> dict[str, Any]:
        return {"status": "ok", "items": len(self.pipeline.catalog)}

    async def readyz(self, request: Request) -> JSONResponse:
        return JSONResponse({"ready": True, "problems": [], "stages": {}})

    async def version(self) -> dict[str, Any]:
        p = self.pipeline
        return {
            "artifact_version": p.artifact.version,
            "config_hash": p.config.config_hash(),
            "variants": p.policy.variants,
        }


def create_app(pipeline: Pipeline) -> FastAPI:
    """The HTTP API over one in-process pipeline."""
    ingress = pipeline.config.ingress
    return create_api(
        NaiveBackend(pipeline),
        title="recsys (naive baseline)",
        max_body_bytes=ingress.max_body_bytes,
        max_query_chars=ingress.max_query_chars,
        max_k=ingress.max_k,
    )


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m recsys.bench.naive_server",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--artifacts", help="artifact directory (overrides --config's)")
    p.add_argument("--config", help="AppConfig as a JSON string (default: AppConfig())")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8300)
    p.add_argument("--threads", type=int, default=1, help="torch / FAISS threads")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    import uvicorn

    config = AppConfig.model_validate_json(args.config) if args.config else AppConfig()
    if args.artifacts:
        config = config.model_copy(update={"artifacts": args.artifacts})
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    pipeline = load_pipeline(config, args.threads)
    uvicorn.run(
        create_app(pipeline),
        host=args.host,
        port=args.port,
        workers=1,
        log_level="warning",
        access_log=False,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
