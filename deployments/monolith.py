"""Monolithic Serve deployment: every stage in one replica, behind the same HTTP API.

The benchmark's yardstick for the cost of composition: the same API (``recsys.api``) and the
same orchestrator over in-process stages (``Pipeline.run``) as the in-process pipeline, one
Serve replica, and ``@serve.batch`` across concurrent requests. The batch runs in a worker
thread (``asyncio.to_thread``) so the replica's event loop keeps accepting requests (which
form the next batch) while torch computes; one batch at a time, as the pipeline's query cache
is not thread-safe. (The fused topology of the real app, ``topology.layout: fused``, is the
same idea with the ingress's admission control, deadlines and breakers.)

    serve run deployments.monolith:build_monolith app='{"artifacts": "artifacts/demo"}'
"""

import asyncio
import time
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import Field
from ray import serve
from ray.serve import Application

from recsys.api import create_api, lookup_error, request_id_of
from recsys.catalog import UnknownFilterError, UnknownIdError
from recsys.config import AppConfig, StrictModel
from recsys.pipeline import Pipeline, PreparedRequest, prepare
from recsys.types import RankedResponse, Route


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


@serve.deployment
@serve.ingress()
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

    def __serve_build_asgi_app__(self) -> FastAPI:
        ingress = self.pipeline.config.ingress
        return create_api(
            self,
            title="recsys (monolith)",
            max_body_bytes=ingress.max_body_bytes,
            max_query_chars=ingress.max_query_chars,
            max_k=ingress.max_k,
        )

    async def healthz(self) -> dict[str, Any]:
        return {"status": "ok", "items": len(self.pipeline.catalog)}

    async def readyz(self, request: Request) -> JSONResponse:
        return JSONResponse({"ready": True, "problems": [], "stages": {}})

    async def version(self) -> dict[str, Any]:
        p = self.pipeline
        return {"artifact_version": p.artifact.version, "variants": p.policy.variants}

    async def answer(
        self, request: Request, route: Route, k: int | None, **ids: Any
    ) -> JSONResponse:
        started = time.perf_counter()
        request_id = request_id_of(request)
        p = self.pipeline
        try:
            prep = prepare(
                route, p.catalog, p.policy, k or p.config.default_k, request_id=request_id, **ids
            )
        except (UnknownIdError, UnknownFilterError) as exc:
            return lookup_error(exc, request_id)
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
