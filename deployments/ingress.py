"""The HTTP ingress: validation, routing, deadlines, degradation, errors, logs and metrics.

The request path is the orchestrator's (``recsys.orchestrator``), for a group of concurrent
requests (``recsys.coalesce``; the local profile coalesces up to 16, the GPU profile sends
each request on its own): encode -> retrieve -> rank per variant within the deadline's
share -> top-k per request, or retrieval order with ``degraded: true`` when the ranker is
late, overloaded or failing. The stages are Serve deployments reached through handles
(``deployments.handles``; the split topology), or objects inside this replica
(``recsys.fused``; the fused topology), or a mix, as ``topology`` says.

The routes, models and error mapping are the API's (``recsys.api``), built over this replica
once it is warm; here: admission control, the access log and metrics. Every answer is JSON
with a request id (also in the ``X-Request-ID`` header and the access log). Bad input is a 4xx
naming the problem; overload and blown deadlines are 503 with ``Retry-After``.

Ready means ready: the replica's (async) constructor waits until every stage answers and
sends one request per route and ranker variant through the whole chain, so Serve routes
nothing to it, and the app is not RUNNING, before the chain is warm (``recsys.warmup``).
``/healthz`` says the ingress is alive; ``/readyz`` asks every stage whether it is warm,
serves the expected artifact version and (ranker) has its whole gang, and answers 503 when
one is not.
"""

import asyncio
import json
import logging
import time
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from ray import serve
from ray.serve.exceptions import BackPressureError
from ray.serve.handle import DeploymentHandle
from starlette.types import Scope

from deployments.handles import HandleEncoder, HandleRanker, HandleRetriever
from deployments.metrics import stage_metrics
from deployments.readiness import deployment_name, finish_cold_start, replica_id
from recsys import __version__
from recsys.access import access_control
from recsys.admission import (
    QUEUE_PRESSURE_HEADER,
    AdmissionPolicy,
    QueueState,
    Rejection,
    arrival_monotonic,
    queue_pressure,
)
from recsys.api import (
    create_api,
    lookup_error,
    request_id_of,
    stage_error_response,
)
from recsys.artifacts import Artifact
from recsys.catalog import Catalog, UnknownFilterError, UnknownIdError
from recsys.coalesce import Coalescer, QueueFull
from recsys.config import AppConfig
from recsys.fused import FusedStages
from recsys.orchestrator import Answer, Job, Orchestrator, StageError, breakers_for
from recsys.request import PreparedRequest, prepare
from recsys.request_ids import pick_request_id
from recsys.routing import Deadline, RoutingPolicy
from recsys.stages import EncodeStage, RankStage, RetrieveStage, StageSet
from recsys.types import ErrorResponse, Route
from recsys.warmup import (
    ARTIFACT_OPEN,
    LOAD,
    STAGES_WAIT,
    WARMUP,
    ColdStart,
    chain_calls,
    readiness,
    stage_report,
)

access_log = logging.getLogger("ray.serve")
"""The access log: one JSON line per request through Serve's replica logger, so it lands in the
replica's buffered log file (``logs/serve/replica_<app>_Ingress_<id>.log``, what log
collection on KubeRay reads) with Serve's prefix and the request id. Serve's own access line
is off for the Ingress (``deployments.app``): one line per request, this one, which also has
the route, variant, degradation and stage timings. Not on stderr: Ray's log monitor tails
every worker's stderr and relays each line through the GCS, which cost 0.13 ms of CPU per
request in the log monitor alone at 160 req/s on 2 cores."""
ACCESS_LOG_EXTRA = {"log_to_stderr": False}

WARMUP_TIMEOUT_S = 1800.0
"""How long a starting ingress waits for the stages to come up and answer its warm-up chain
(a remote artifact download or a new GPU node can take minutes); past it the replica fails
and Serve starts another."""
WARMUP_DEADLINE_MS = 120_000.0
"""Deadline of one warm-up attempt through the chain (a cold stage may be slow once)."""
READINESS_TIMEOUT_S = 2.0
"""How long ``/readyz`` waits for each stage's answer."""


def serve_request_id(scope: Scope) -> str:
    """Serve's id of the current request (the one its proxy returns in ``X-Request-ID``), the
    client's single valid header outside Serve, else a fresh one; never an invalid value
    (``recsys.request_ids``)."""
    from ray.serve.context import _get_serve_request_context

    rid = _get_serve_request_context().request_id
    return pick_request_id(str(rid) if rid else None, scope.get("headers", []))


class IngressMetrics:
    """The orchestrator's reports as Serve metrics (``recsys.orchestrator.Observer``)."""

    def __init__(self, admission: AdmissionPolicy):
        self.metrics = stage_metrics()
        self.admission = admission

    def group_done(self, size: int, chain_ms: float) -> None:
        self.admission.observe_group(chain_ms)
        self.metrics.batch_size.observe(size, tags={"stage": "ingress_group"})

    def degraded(self, route: Route, reason: str) -> None:
        self.metrics.degraded.inc(tags={"route": route, "reason": reason})

    def query_cache(self, hits: int, lookups: int, hit_ratio: float) -> None:
        tags = {"stage": "ingress"}
        if hits:
            self.metrics.cache_hits.inc(hits, tags=tags)
        self.metrics.cache_lookups.inc(lookups, tags=tags)
        self.metrics.cache_hit_ratio.set(hit_ratio, tags=tags)


@serve.deployment
@serve.ingress()
class Ingress:
    """FastAPI ingress over the encoder, retriever and one ranker per variant: deployment
    handles for the stages the topology puts apart (``None`` / no entry for the others), the
    in-process stages (``recsys.fused``) for those it puts in the ingress."""

    async def __init__(  # type: ignore[misc]  # Serve awaits an async constructor
        self,
        config: AppConfig,
        encoder: DeploymentHandle | None,
        retriever: DeploymentHandle | None,
        rankers: dict[str, DeploymentHandle],
    ):
        self.cold = ColdStart(deployment_name("Ingress"))
        self.warm = False
        self.served = 0
        self.config = config
        with self.cold.phase(ARTIFACT_OPEN):
            self.artifact = Artifact.open(config.artifacts, config.cache_dir)
        with self.cold.phase(LOAD):
            self.catalog = Catalog.from_artifact(self.artifact)
            self.fused = FusedStages.load(config, self.artifact)
        self.policy = RoutingPolicy(config.routing)
        self.metrics = stage_metrics()
        self.retry_after = {"Retry-After": str(config.routing.retry_after_s)}
        admission = config.ingress.admission
        self.admission = AdmissionPolicy(
            admission.max_queue_ms,
            retry_after_min_ms=admission.retry_after_min_ms,
            enabled=admission.enabled,
            brownout_queue_ms=admission.brownout_queue_ms,
        )
        self.orchestrator = Orchestrator(
            self._stage_set(encoder, retriever, rankers),
            self.policy,
            self.catalog,
            self.artifact.version,
            config.retrieval.n_candidates,
            query_cache_size=config.ingress.query_cache_size,
            breakers=breakers_for(self.policy.variants, admission),
            observer=IngressMetrics(self.admission),
            skip_ranker=self.admission.brownout,
        )
        self.coalescer: Coalescer[Job, Answer] = Coalescer(
            self.orchestrator.run_group,
            max_batch_size=config.ingress.group_max_size,
            max_in_flight=config.ingress.groups_in_flight,
            max_queued=config.ingress.group_queue_limit,
            on_dispatch=self._shed_if_late,
        )
        handles = [encoder, retriever, *rankers.values()]
        self.stages = {h.deployment_name: h for h in handles if h is not None}
        own_ranker = {v.name for v in config.routing.variants if v.artifacts is None}
        self.expected_versions = {
            **({retriever.deployment_name: self.artifact.version} if retriever else {}),
            **{
                rankers[v].deployment_name: self.artifact.version
                for v in own_ranker
                if v in rankers
            },
        }
        await self._warm_up()

    def _stage_set(
        self,
        encoder: DeploymentHandle | None,
        retriever: DeploymentHandle | None,
        rankers: dict[str, DeploymentHandle],
    ) -> StageSet:
        """Each stage from its handle, or in-process where the topology puts it here."""
        local = self.fused

        def pick(handle: DeploymentHandle | None, inside: Any, adapter: Any, role: str) -> Any:
            if inside is not None:
                return inside
            if handle is None:
                raise ValueError(f"the topology puts the {role} apart but it has no handle")
            return adapter(handle)

        enc: EncodeStage = pick(encoder, local.encoder, HandleEncoder, "encoder")
        ret: RetrieveStage = pick(retriever, local.retriever, HandleRetriever, "retriever")
        ranks: dict[str, RankStage] = {
            v: pick(rankers.get(v), local.rankers.get(v), HandleRanker, f"ranker {v}")
            for v in self.policy.variants
        }
        return StageSet(enc, ret, ranks)

    async def _warm_up(self) -> None:
        """Wait for every stage apart, warm the in-process ones, then send one request per
        route and variant through the chain until all come back ranked; only then does Serve
        route to this replica."""
        started = time.monotonic()
        with self.cold.phase(STAGES_WAIT):  # a handle's call waits for a running replica

            async def ready(handle: DeploymentHandle) -> Any:
                return await handle.readiness.remote()

            waits = (ready(h) for h in self.stages.values())
            await asyncio.wait_for(asyncio.gather(*waits), timeout=WARMUP_TIMEOUT_S)
        calls = chain_calls(
            list(self.catalog.user_index),
            list(self.catalog.item_ids[:1]),
            list(self.catalog.titles[:32]),
            self.policy.variant_for,
            self.policy.variants,
        )
        log = logging.getLogger("ray.serve")
        with self.cold.phase(WARMUP):
            await asyncio.to_thread(
                self.fused.warm_up,
                self.artifact,
                self.config.retrieval.n_candidates,
                self.config.ingress.group_max_size,
            )
            while True:
                jobs = [
                    Job(
                        prepare(c.route, self.catalog, self.policy, self.config.default_k, **c.ids),
                        Deadline.starting_now(WARMUP_DEADLINE_MS),
                    )
                    for c in calls
                ]
                answers = await self.orchestrator.run_group(jobs)
                missed = [
                    a.detail if isinstance(a, StageError) else a.response.degraded_reason
                    for a in answers
                    if isinstance(a, StageError) or a.response.degraded
                ]
                if not missed:
                    break
                if time.monotonic() - started > WARMUP_TIMEOUT_S:
                    raise RuntimeError(f"warm-up through the chain kept failing: {missed}")
                log.warning("warm-up through the chain not answered yet (%s); retrying", missed)
                await asyncio.sleep(1.0)
        # the warm-up's queries are not the shoppers': start with an empty query cache, and
        # with no group times from cold stages in the admission's estimate
        self.orchestrator.forget_queries()
        self.admission.forget_groups()
        self.warm = True
        finish_cold_start(self.cold)

    # ---- the API's backend (recsys.api) ------------------------------------------------------

    def __serve_build_asgi_app__(self) -> FastAPI:
        """The HTTP API over this replica (``recsys.api``), built once it is warm."""
        ingress = self.config.ingress
        return create_api(
            self,
            max_body_bytes=ingress.max_body_bytes,
            max_query_chars=ingress.max_query_chars,
            max_k=ingress.max_k,
            access=access_control(ingress),
            request_id=serve_request_id,
        )

    async def healthz(self) -> dict[str, Any]:
        return {"status": "ok", "items": len(self.catalog), "version": self.artifact.version}

    async def readyz(self, request: Request) -> JSONResponse:
        reports: dict[str, dict[str, Any] | str] = {
            self.cold.stage: stage_report(
                self.cold.stage,
                self.cold,
                warm=self.warm,
                version=self.artifact.version,
                served=self.served,
                replica=replica_id(),
            )
            | ({"in_process": self.fused.served()} if self.fused.roles else {}),
            **await self._stage_reports(READINESS_TIMEOUT_S),
        }
        ready, body = readiness(reports, self.expected_versions)
        body["version"] = self.artifact.version
        body["topology"] = self.config.topology.layout
        if ready:
            return JSONResponse(body)
        error = ErrorResponse(
            error="not_ready", detail="; ".join(body["problems"]), request_id=request_id_of(request)
        )
        return JSONResponse(
            {**error.model_dump(), **body}, status_code=503, headers=self.retry_after
        )

    async def _stage_reports(self, timeout_s: float) -> dict[str, dict[str, Any] | str]:
        """Each stage's ``readiness()`` answer (from one of its replicas), or why none came."""

        async def ask(handle: DeploymentHandle) -> dict[str, Any] | str:
            response = handle.readiness.remote()
            try:
                return dict(await asyncio.wait_for(response, timeout=timeout_s))
            except TimeoutError:
                response.cancel()
                return f"no answer within {timeout_s:g} s"
            except BackPressureError:
                return "overloaded: its queue is full"
            except Exception as exc:  # unavailable, or its replica failed
                return f"unavailable ({type(exc).__name__}: {exc})"

        answers = await asyncio.gather(*(ask(h) for h in self.stages.values()))
        return dict(zip(self.stages, answers, strict=True))

    async def version(self) -> dict[str, Any]:
        quality = self.artifact.quality()
        if self.config.retrieval.mode != "auto":
            quality["retrieval_mode"] = self.config.retrieval.mode
        return {
            "artifact_version": self.artifact.version,
            "config_hash": self.config.config_hash(),
            "variants": self.policy.variants,
            "tp": self.config.topology.tp,
            "topology": self.config.topology.layout,
            "recsys_version": __version__,
            **quality,
        }

    # ---- the request path --------------------------------------------------------------------

    async def answer(
        self, request: Request, route: Route, k: int | None, **ids: Any
    ) -> JSONResponse:
        request_id = request_id_of(request)
        # the clock starts when the request reached the server (recsys.admission)
        deadline = Deadline(
            arrival_monotonic(request.scope.get("headers") or []),
            self.config.routing.deadline_ms / 1000.0,
        )
        self.served += 1
        try:
            prep = prepare(
                route,
                self.catalog,
                self.policy,
                k or self.config.default_k,
                request_id=request_id,
                **ids,
            )
        except (UnknownIdError, UnknownFilterError) as exc:
            resp = lookup_error(exc, request_id)
            return self._finish(resp, request_id, route, None, deadline, {})
        try:
            refused = self.admission.on_arrival(deadline.elapsed_ms(), self._queue_state())
            if refused is not None:
                raise self._overloaded(refused)
            answer = await self._run(prep, deadline)
        except StageError as exc:
            self.metrics.rejected.inc(tags={"stage": exc.stage, "reason": exc.reason})
            headers = dict(exc.headers or self.retry_after)
            if exc.stage == "ingress" or exc.reason == "deadline":  # shed: a full queue
                budget = self.admission.max_queue_ms
                queued = max(deadline.elapsed_ms(), budget)
                headers[QUEUE_PRESSURE_HEADER.decode()] = queue_pressure(queued, budget)
            resp = stage_error_response(exc, request_id, headers)
            return self._finish(resp, request_id, route, prep.decision.variant, deadline, {})
        waited = answer.timings.get("group_wait", 0.0)
        pressure = queue_pressure(waited, self.admission.max_queue_ms)
        return self._finish(
            JSONResponse(
                answer.response.model_dump(),
                headers={QUEUE_PRESSURE_HEADER.decode(): pressure},
            ),
            request_id,
            route,
            prep.decision.variant,
            deadline,
            answer.timings,
            degraded=answer.response.degraded_reason,
        )

    async def _run(self, prep: PreparedRequest, deadline: Deadline) -> Answer:
        """This request's answer, computed with whatever requests are concurrent with it
        (``recsys.coalesce``, ``recsys.orchestrator``): raises :class:`StageError` when it
        gets a 503."""
        try:
            return await self.coalescer.submit(Job(prep, deadline))
        except QueueFull as exc:
            detail = f"ingress is overloaded ({exc}); retry later"
            raise StageError("ingress", "overloaded", detail) from None

    def _queue_state(self) -> QueueState:
        c = self.coalescer
        return QueueState(c.queued, c.in_flight, c.max_in_flight, c.max_batch_size)

    @staticmethod
    def _overloaded(refused: Rejection) -> StageError:
        return StageError("ingress", "overloaded", refused.detail, headers=refused.headers)

    def _shed_if_late(self, job: Job) -> StageError | None:
        """Coalescer hook as a group forms: drop a request that queued past the limit."""
        refused = self.admission.on_dispatch(job.deadline.elapsed_ms(), self._queue_state())
        return None if refused is None else self._overloaded(refused)

    def _finish(
        self,
        response: JSONResponse,
        request_id: str,
        route: Route,
        variant: str | None,
        deadline: Deadline,
        timings: dict[str, float],
        degraded: str | None = None,
    ) -> JSONResponse:
        status = response.status_code
        total = deadline.elapsed_ms()
        self.metrics.requests.inc(
            tags={"route": route, "variant": variant or "-", "status": str(status)}
        )
        self.metrics.stage_latency.observe(total, tags={"stage": "ingress_total"})
        access_log.info(
            json.dumps(
                {
                    "ts": round(time.time(), 3),
                    "request_id": request_id,
                    "route": route,
                    "variant": variant,
                    "status": status,
                    "degraded": degraded,
                    "total_ms": round(total, 2),
                    "timings_ms": {k: round(v, 2) for k, v in timings.items()},
                }
            ),
            extra=ACCESS_LOG_EXTRA,
        )
        return response
