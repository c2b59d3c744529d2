"""The naive baseline: one FastAPI/uvicorn process running the pipeline once per request.

What a team would build first: the same endpoints and ``prepare`` as the Serve ingress, and
``Pipeline.run([one])`` per request in FastAPI's thread pool, no batching. The query cache is
an unsynchronised LRU, so a lock lets one request compute at a time (parsing, validation and
serialisation of the others go on around it). One uvicorn worker, no access log.

    python -m recsys.bench.naive_server --artifacts artifacts/demo --port 8300
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from typing import Any

from fastapi import FastAPI, Path, Query
from fastapi.responses import JSONResponse

from recsys.bench.batcher import load_pipeline
from recsys.bench.requests import BenchRequest
from recsys.catalog import UnknownFilterError, UnknownIdError
from recsys.config import AppConfig
from recsys.pipeline import Pipeline, new_request_id
from recsys.types import MAX_K, RecommendRequest, SearchRequest


def create_app(pipeline: Pipeline) -> FastAPI:
    """The HTTP API over one in-process pipeline."""
    app = FastAPI(title="recsys (naive baseline)")
    lock = threading.Lock()

    def handle(req: BenchRequest) -> JSONResponse:
        started = time.perf_counter()
        rid = new_request_id()
        p = pipeline
        try:
            prep = req.prepare(p.catalog, p.policy, p.config.default_k, rid)
        except UnknownIdError as exc:
            return _error(404, f"unknown_{exc.kind}", str(exc), rid)
        except UnknownFilterError as exc:
            return _error(422, "unknown_filter_value", str(exc), rid)
        with lock:
            waited = time.perf_counter()
            answer = p.run([prep])[0]
        body = answer.model_dump()
        body["timings_ms"] = {
            **answer.timings_ms,
            "compute": answer.timings_ms.get("total", 0.0),
            "queue": round((waited - started) * 1000.0, 3),
            "total": round((time.perf_counter() - started) * 1000.0, 3),
        }
        return JSONResponse(body)

    @app.get("/healthz")
    def healthz() -> dict[str, Any]:
        return {"status": "ok", "items": len(pipeline.catalog)}

    @app.post("/v1/search")
    def search(body: SearchRequest) -> JSONResponse:
        return handle(
            BenchRequest(
                "search", k=body.k, query=body.query, user_id=body.user_id, filters=body.filters
            )
        )

    @app.post("/v1/recommend")
    def recommend(body: RecommendRequest) -> JSONResponse:
        return handle(BenchRequest("recommend", k=body.k, user_id=body.user_id))

    @app.get("/v1/items/{item_id}/similar")
    def similar(
        item_id: str = Path(min_length=1, max_length=64),
        k: int | None = Query(None, ge=1, le=MAX_K),
    ) -> JSONResponse:
        return handle(BenchRequest("similar", k=k, item_id=item_id))

    return app


def _error(status: int, error: str, detail: str, request_id: str) -> JSONResponse:
    return JSONResponse(
        {"error": error, "detail": detail, "request_id": request_id}, status_code=status
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
