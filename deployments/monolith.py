"""Monolithic Serve deployment: every stage in one replica, behind the same HTTP API.

The benchmark's yardstick for the cost of composition: the same ``prepare`` and
``Pipeline.run`` as the in-process pipeline, one Serve replica with its FastAPI ingress, and
``@serve.batch`` across concurrent requests. The batch runs in a worker thread
(``asyncio.to_thread``) so the replica's event loop keeps accepting requests (which form the
next batch) while torch computes; one batch at a time, as the pipeline's query cache is not
thread-safe.

    serve run deployments.monolith:build_monolith app='{"artifacts": "artifacts/demo"}'
"""

import asyncio
import time
from typing import Any

from fastapi import FastAPI, Path, Query
from fastapi.responses import JSONResponse
from pydantic import Field
from ray import serve
from ray.serve import Application

from recsys.catalog import UnknownFilterError, UnknownIdError
from recsys.config import AppConfig, StrictModel
from recsys.pipeline import Pipeline, PreparedRequest, new_request_id, prepare
from recsys.types import MAX_K, RankedResponse, RecommendRequest, Route, SearchRequest


class MonolithArgs(StrictModel):
    """Typed arguments of :func:`build_monolith`."""

    app: AppConfig = AppConfig()
    """Artifacts, retrieval, routing and encoder settings (the stage configs are unused)."""
    max_batch_size: int = Field(16, ge=1)
    """``@serve.batch`` maximum batch size (requests per ``Pipeline.run``)."""
    batch_wait_timeout_s: float = Field(0.002, ge=0)
    """``@serve.batch`` wait for a batch to fill."""
    torch_threads: int = Field(1, ge=1)
    """torch / FAISS threads in the replica."""
    num_cpus: float = Field(1.0, ge=0)
    """Logical CPUs of the replica."""
    max_ongoing_requests: int = Field(256, ge=1)
    """Requests the replica works on at once (they wait in the batch queue)."""
    max_queued_requests: int = Field(256, ge=-1)
    """Requests queued at the proxy before back-pressure."""


app = FastAPI(title="recsys (monolith)")


def _error(status: int, error: str, detail: str, request_id: str) -> JSONResponse:
    return JSONResponse(
        {"error": error, "detail": detail, "request_id": request_id}, status_code=status
    )


@serve.deployment
@serve.ingress(app)
class Monolith:
    """Encoder, retriever and ranker in one replica, batched across requests."""

    def __init__(self, args: MonolithArgs):
        import faiss
        import torch

        torch.set_num_threads(args.torch_threads)
        faiss.omp_set_num_threads(args.torch_threads)
        encoder = args.app.encoder.model_copy(update={"num_threads": args.torch_threads})
        self.pipeline = Pipeline.load(args.app.model_copy(update={"encoder": encoder}))
        self.run_batch.set_max_batch_size(args.max_batch_size)
        self.run_batch.set_batch_wait_timeout_s(args.batch_wait_timeout_s)
        self.pipeline.search("warm up")  # first call allocates; keep it out of a request

    @app.get("/healthz")
    async def healthz(self) -> dict[str, Any]:
        return {"status": "ok", "items": len(self.pipeline.catalog)}

    @app.post("/v1/search")
    async def search(self, body: SearchRequest) -> JSONResponse:
        return await self._handle(
            "search", body.k, query=body.query, user_id=body.user_id, filters=body.filters
        )

    @app.post("/v1/recommend")
    async def recommend(self, body: RecommendRequest) -> JSONResponse:
        return await self._handle("recommend", body.k, user_id=body.user_id)

    @app.get("/v1/items/{item_id}/similar")
    async def similar(
        self,
        item_id: str = Path(min_length=1, max_length=64),
        k: int | None = Query(None, ge=1, le=MAX_K),
    ) -> JSONResponse:
        return await self._handle("similar", k, item_id=item_id)

    async def _handle(self, route: Route, k: int | None, **ids: Any) -> JSONResponse:
        started = time.perf_counter()
        request_id = new_request_id()
        p = self.pipeline
        try:
            prep = prepare(
                route, p.catalog, p.policy, k or p.config.default_k, request_id=request_id, **ids
            )
        except UnknownIdError as exc:
            return _error(404, f"unknown_{exc.kind}", str(exc), request_id)
        except UnknownFilterError as exc:
            return _error(422, "unknown_filter_value", str(exc), request_id)
        answer, batch_started, size = await self.run_batch(prep)
        body = answer.model_dump()
        body["timings_ms"] = {
            **answer.timings_ms,
            "compute": answer.timings_ms.get("total", 0.0),
            "queue": round((batch_started - started) * 1000.0, 3),
            "batch_size": float(size),
            "total": round((time.perf_counter() - started) * 1000.0, 3),
        }
        return JSONResponse(body)

    @serve.batch(max_batch_size=16, batch_wait_timeout_s=0.002)
    async def run_batch(
        self, prepared: list[PreparedRequest]
    ) -> list[tuple[RankedResponse, float, int]]:
        started = time.perf_counter()
        answers = await asyncio.to_thread(self.pipeline.run, prepared)
        return [(a, started, len(prepared)) for a in answers]


def build_monolith(args: MonolithArgs | dict[str, Any]) -> Application:
    """The one-replica application (no autoscaling: the point is one process)."""
    config = args if isinstance(args, MonolithArgs) else MonolithArgs.model_validate(args)
    return Monolith.options(  # type: ignore[attr-defined]  # @serve.deployment class
        name="Monolith",
        ray_actor_options={"num_cpus": config.num_cpus},
        max_ongoing_requests=config.max_ongoing_requests,
        max_queued_requests=config.max_queued_requests,
    ).bind(config)
