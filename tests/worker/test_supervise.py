"""The worker's supervision loop rides out Redis outages but always ends when it is cancelled."""

from __future__ import annotations

import asyncio
from typing import cast

from redis.exceptions import ConnectionError as RedisConnectionError

from services import Services
from worker.runner import KilnWorker, supervise, worker_options


class _CancelTurnedIntoAnError:
    """A worker whose Redis command turns the cancel that reaches it into ConnectionError, as
    redis-py can when a cancel lands mid-reply."""

    def __init__(self) -> None:
        self.runs = 0
        self.waiting = asyncio.Event()

    async def main(self) -> None:
        self.runs += 1
        self.waiting.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            raise RedisConnectionError("Connection closed by server.") from None


async def test_a_cancel_that_a_redis_command_turned_into_an_error_still_ends_the_loop() -> None:
    worker = _CancelTurnedIntoAnError()
    loop = asyncio.create_task(supervise(cast(KilnWorker, worker)))
    await asyncio.wait_for(worker.waiting.wait(), 5)
    loop.cancel()
    done, _ = await asyncio.wait({loop}, timeout=5)
    assert done, "the supervision loop swallowed its cancel and retried forever"
    assert loop.cancelled() and worker.runs == 1


class _Outage:
    """Redis is down for the first two runs, then the worker runs to its end."""

    def __init__(self) -> None:
        self.runs = 0

    async def main(self) -> None:
        self.runs += 1
        if self.runs <= 2:
            raise RedisConnectionError("Connection refused")


async def test_an_outage_only_pauses_the_worker() -> None:
    worker = _Outage()
    await asyncio.wait_for(supervise(cast(KilnWorker, worker)), 5)
    assert worker.runs == 3


async def test_a_worker_whose_poll_lost_a_cancel_stops_at_its_next_poll(
        services: Services) -> None:
    worker = KilnWorker(**worker_options(services.settings), redis_pool=services.redis,
                        handle_signals=False, ctx={}, scheduler=services.queue.scheduler,
                        lease_s=services.settings.job_lease)
    lost = 0
    polling = asyncio.Event()

    async def poll_that_loses_a_cancel() -> None:
        nonlocal lost
        polling.set()
        if not lost:
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                lost += 1  # as redis-py's wait_for loses a cancel that lands as its send ends

    worker._poll_iteration = poll_that_loses_a_cancel  # type: ignore[method-assign]
    loop = asyncio.create_task(worker.main())
    await asyncio.wait_for(polling.wait(), 5)
    loop.cancel()
    done, _ = await asyncio.wait({loop}, timeout=5)
    assert done, "the worker polled on after its cancel was lost"
    assert loop.cancelled() and lost == 1
