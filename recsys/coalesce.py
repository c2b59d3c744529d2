"""Request coalescing: many concurrent requests travel the stage chain as one group.

On a CPU-bound machine each call between Serve deployments costs milliseconds of CPU (router,
serialisation, the actor call, the answer), paid per call, whatever it carries. The ingress
therefore sends its concurrent requests down the chain together: one encoder call, one
retriever call and one ranker call per *group*.

Groups size themselves with the load, without a timer: at most ``max_in_flight`` groups are
in the chain at once; a request that arrives while a slot is free starts a group at once (so
low load pays no wait), and requests arriving while every slot is busy queue and leave together
as the next group when a slot frees (up to ``max_batch_size``). The busier the chain, the
larger the groups and the smaller the per-request cost of the hops: a self-clocking batcher
like Triton's dynamic batcher with a bounded number of model instances.

``max_batch_size=1`` with a large ``max_in_flight`` sends every request on its own (the
per-request chain), which keeps the stages' ongoing-request counts a request count for
autoscaling. ``on_dispatch`` may refuse an item as its group forms (it returns the exception
its caller gets): admission control drops requests that queued too long
(``recsys.admission``). Pure asyncio; no Ray.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")

GroupFn = Callable[[list[T]], Awaitable[Sequence[R | BaseException]]]
"""Runs one group; returns one answer per item, in order (an exception fails only its item)."""


class QueueFull(Exception):
    """More requests are waiting for a group than the coalescer may queue: shed this one."""


@dataclass
class CoalescerStats:
    groups: int = 0
    items: int = 0
    largest: int = 0

    @property
    def mean_group(self) -> float:
        return self.items / self.groups if self.groups else 0.0


class Coalescer(Generic[T, R]):
    """Coalesces concurrent :meth:`submit` calls into groups run by ``run_group``."""

    def __init__(
        self,
        run_group: GroupFn[T, R],
        max_batch_size: int,
        max_in_flight: int,
        max_queued: int | None = None,
        on_dispatch: Callable[[T], BaseException | None] | None = None,
    ):
        if max_batch_size < 1 or max_in_flight < 1:
            raise ValueError("max_batch_size and max_in_flight must be >= 1")
        if max_queued is not None and max_queued < 0:
            raise ValueError("max_queued must be >= 0 (None: unbounded)")
        self._run_group = run_group
        self.max_batch_size = max_batch_size
        self.max_in_flight = max_in_flight
        self.max_queued = max_queued
        self._on_dispatch = on_dispatch
        self._waiting: deque[tuple[T, asyncio.Future[R]]] = deque()
        self._in_flight = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self.stats = CoalescerStats()

    @property
    def in_flight(self) -> int:
        return self._in_flight

    @property
    def queued(self) -> int:
        return len(self._waiting)

    async def submit(self, item: T) -> R:
        """Answer for ``item`` once its group has run (raises what its group raised for it).

        Cancelling the caller drops the item if its group has not started yet; a group
        already running finishes for the others. Raises :class:`QueueFull` at once when
        ``max_queued`` requests are already waiting for a free slot (load shedding: the
        caller answers "overloaded" instead of queueing without bound)."""
        if (
            self.max_queued is not None
            and self._in_flight >= self.max_in_flight
            and len(self._waiting) >= self.max_queued
        ):
            raise QueueFull(
                f"{len(self._waiting)} requests already wait for one of "
                f"{self.max_in_flight} groups in flight"
            )
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._waiting.append((item, future))
        self._dispatch()
        return await future

    def _dispatch(self) -> None:
        while self._waiting and self._in_flight < self.max_in_flight:
            group: list[tuple[T, asyncio.Future[R]]] = []
            while self._waiting and len(group) < self.max_batch_size:
                item, future = self._waiting.popleft()
                if future.done():  # skip callers that went away while queued
                    continue
                refused = self._on_dispatch(item) if self._on_dispatch else None
                if refused is not None:  # e.g. it queued too long to be worth sending
                    future.set_exception(refused)
                    continue
                group.append((item, future))
            if not group:
                continue
            self._in_flight += 1
            self.stats.groups += 1
            self.stats.items += len(group)
            self.stats.largest = max(self.stats.largest, len(group))
            task = asyncio.create_task(self._run(group))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _run(self, group: list[tuple[T, asyncio.Future[R]]]) -> None:
        try:
            answers = await self._run_group([item for item, _ in group])
            if len(answers) != len(group):
                raise RuntimeError(
                    f"group runner returned {len(answers)} answers for {len(group)} items"
                )
            for (_, future), answer in zip(group, answers, strict=True):
                if future.done():
                    continue
                if isinstance(answer, BaseException):
                    future.set_exception(answer)
                else:
                    future.set_result(answer)
        except BaseException as exc:  # the whole group failed: every caller hears why
            for _, future in group:
                if not future.done():
                    future.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
        finally:
            self._in_flight -= 1
            self._dispatch()
