"""The ingress's request coalescer: groups grow with the load, never wait at low load."""

from __future__ import annotations

import asyncio

import pytest

from recsys.coalesce import Coalescer, QueueFull


class Chain:
    """A stand-in stage chain that takes ``delay_s`` per group and records each group."""

    def __init__(self, delay_s: float = 0.02):
        self.delay_s = delay_s
        self.groups: list[list[int]] = []
        self.running = 0
        self.most_running = 0

    async def __call__(self, items: list[int]) -> list[int | BaseException]:
        self.groups.append(list(items))
        self.running += 1
        self.most_running = max(self.most_running, self.running)
        try:
            await asyncio.sleep(self.delay_s)
        finally:
            self.running -= 1
        return [ValueError(f"odd {i}") if i % 7 == 6 else i * 10 for i in items]


def test_a_lone_request_leaves_at_once() -> None:
    async def main() -> float:
        chain = Chain(delay_s=0.0)
        c = Coalescer(chain, max_batch_size=16, max_in_flight=2)
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        assert await c.submit(3) == 30
        return loop.time() - t0

    assert asyncio.run(main()) < 0.01  # no batching timer


def test_groups_grow_while_the_chain_is_busy_and_answers_stay_with_their_items() -> None:
    async def main() -> tuple[Chain, Coalescer[int, int], list[object]]:
        chain = Chain(delay_s=0.02)
        c: Coalescer[int, int] = Coalescer(chain, max_batch_size=8, max_in_flight=2)
        results = await asyncio.gather(*(c.submit(i) for i in range(40)), return_exceptions=True)
        return chain, c, results

    chain, c, results = asyncio.run(main())
    for i, r in enumerate(results):
        if i % 7 == 6:
            assert isinstance(r, ValueError) and str(r) == f"odd {i}"
        else:
            assert r == i * 10
    assert chain.most_running == 2
    assert sorted(i for g in chain.groups for i in g) == list(range(40))
    # the first two leave alone (free slots); the rest queue behind them and leave in eights
    assert chain.groups[:3] == [[0], [1], [2, 3, 4, 5, 6, 7, 8, 9]]
    assert [len(g) for g in chain.groups] == [1, 1, 8, 8, 8, 8, 6]
    assert c.stats.items == 40 and c.stats.groups == 7 and c.stats.largest == 8
    assert c.in_flight == 0 and c.queued == 0


def test_arrivals_during_a_busy_chain_form_the_next_group() -> None:
    async def main() -> list[list[int]]:
        chain = Chain(delay_s=0.05)
        c = Coalescer(chain, max_batch_size=16, max_in_flight=1)
        first = asyncio.create_task(c.submit(0))
        await asyncio.sleep(0.01)  # 0 is in the chain now
        later = [asyncio.create_task(c.submit(i)) for i in range(1, 5)]
        await asyncio.gather(first, *later)
        return chain.groups

    assert asyncio.run(main()) == [[0], [1, 2, 3, 4]]


def test_per_request_mode_sends_every_request_on_its_own() -> None:
    async def main() -> Chain:
        chain = Chain(delay_s=0.01)
        c = Coalescer(chain, max_batch_size=1, max_in_flight=256)
        await asyncio.gather(*(c.submit(i) for i in range(10)), return_exceptions=True)
        return chain

    chain = asyncio.run(main())
    assert len(chain.groups) == 10 and chain.most_running == 10


def test_a_failing_group_fails_its_callers_and_the_next_group_still_runs() -> None:
    calls: list[list[int]] = []

    async def flaky(items: list[int]) -> list[int]:
        calls.append(items)
        await asyncio.sleep(0.01)
        if len(calls) == 1:
            raise RuntimeError("stage died")
        return items

    async def main() -> list[object]:
        c = Coalescer(flaky, max_batch_size=2, max_in_flight=1)
        return await asyncio.gather(*(c.submit(i) for i in range(4)), return_exceptions=True)

    results = asyncio.run(main())  # groups [0], [1, 2], [3]: the first one fails
    assert isinstance(results[0], RuntimeError)
    assert results[1:] == [1, 2, 3]
    assert calls == [[0], [1, 2], [3]]


def test_a_caller_that_leaves_while_queued_is_not_sent() -> None:
    async def main() -> list[list[int]]:
        chain = Chain(delay_s=0.03)
        c = Coalescer(chain, max_batch_size=8, max_in_flight=1)
        first = asyncio.create_task(c.submit(0))
        await asyncio.sleep(0.005)
        gone = asyncio.create_task(c.submit(1))
        stays = asyncio.create_task(c.submit(2))
        await asyncio.sleep(0.005)
        gone.cancel()
        assert await stays == 20 and await first == 0
        return chain.groups

    assert asyncio.run(main()) == [[0], [2]]


def test_wrong_answer_count_is_an_error_for_the_group() -> None:
    async def short(items: list[int]) -> list[int]:
        return items[:-1]

    async def main() -> None:
        c = Coalescer(short, max_batch_size=4, max_in_flight=1)
        await c.submit(1)

    with pytest.raises(RuntimeError, match="0 answers for 1 items"):
        asyncio.run(main())


def test_a_full_queue_sheds_new_requests_at_once() -> None:
    async def main() -> tuple[list[object], list[list[int]]]:
        chain = Chain(delay_s=0.05)
        c = Coalescer(chain, max_batch_size=2, max_in_flight=1, max_queued=3)
        results = await asyncio.gather(*(c.submit(i) for i in range(8)), return_exceptions=True)
        return results, chain.groups

    results, groups = asyncio.run(main())  # 1 in flight, 3 queued, 4 shed
    assert results[:4] == [0, 10, 20, 30]
    assert all(isinstance(r, QueueFull) for r in results[4:])
    assert groups == [[0], [1, 2], [3]]


@pytest.mark.parametrize("size,flight", [(0, 1), (1, 0)])
def test_limits_must_be_positive(size: int, flight: int) -> None:
    with pytest.raises(ValueError):
        Coalescer(Chain(), max_batch_size=size, max_in_flight=flight)
