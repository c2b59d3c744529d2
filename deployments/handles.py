"""The stages interface (``recsys.stages``) over Serve deployment handles: the split topology.

A call returns Serve's ``DeploymentResponse``; when the previous stage's pending answer is
one too, it goes into the call as an argument, so the ingress never awaits it: Serve resolves
it (by reference through Ray's object store with its default transport, by value in the
ingress's router with the gRPC transport of throughput-optimised mode). An in-process answer
(a partial topology: a stage inside the ingress before one apart) is awaited first, in a task.
"""

from __future__ import annotations

import asyncio
from typing import Any

from ray.serve.handle import DeploymentHandle, DeploymentResponse

from recsys.stages import EncodedGroup, Pending, QueryRows, Ranked, Retrieved, upstream
from recsys.types import RankQuery, RetrievalRequest


def _call(method: Any, *args: Any) -> Pending[Any]:
    """``method.remote(*args)``, with any argument that is an awaitable but not a Serve
    response awaited first (then the call is a task)."""
    local = [
        i
        for i, a in enumerate(args)
        if hasattr(a, "__await__") and not isinstance(a, DeploymentResponse)
    ]
    if not local:
        return method.remote(*args)

    async def after() -> Any:
        resolved = list(args)
        for i in local:
            resolved[i] = await upstream(resolved[i])
        return await method.remote(*resolved)

    return asyncio.ensure_future(after())


class HandleEncoder:
    def __init__(self, handle: DeploymentHandle):
        self.handle = handle

    def encode(self, queries: list[str]) -> Pending[EncodedGroup]:
        return _call(self.handle.encode, queries)


class HandleRetriever:
    def __init__(self, handle: DeploymentHandle):
        self.handle = handle

    def retrieve(
        self,
        requests: list[RetrievalRequest],
        encoded: Pending[EncodedGroup] | None,
        query_rows: QueryRows,
    ) -> Pending[list[Retrieved]]:
        return _call(self.handle.retrieve, requests, encoded, query_rows)


class HandleRanker:
    def __init__(self, handle: DeploymentHandle):
        self.handle = handle

    def rank(
        self, queries: list[RankQuery], retrieved: Pending[list[Retrieved]], picks: list[int]
    ) -> Pending[list[Ranked]]:
        return _call(self.handle.rank, queries, retrieved, picks)
