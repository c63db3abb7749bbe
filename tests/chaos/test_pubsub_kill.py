"""The server's pub/sub connection killed by Redis while a task runs (RELIABILITY B1, variant
`CLIENT KILL TYPE pubsub`): the hub reconnects within a second, subscribes each channel once
again (no duplicate subscription, so no duplicate events), and the open stream — never cut
itself — gets every event of the task exactly once, gaps filled from the log."""

from __future__ import annotations

import asyncio
import time

from redis.asyncio import Redis

from tests.chaos.history import describe
from tests.chaos.outcomes import progressed
from tests.chaos.processes import Processes
from tests.chaos.session import CUBE, Session, leftover_jobs

SHORT = {"mesh": "tests.helpers.pipelines:short_steps",
         "texture": "tests.helpers.pipelines:short_steps"}
RECONNECT = 1.0
"""RELIABILITY B1's bound on the hub's reconnect."""


async def _subscriptions(redis: Redis) -> dict[bytes, int]:
    """Every subscribed channel and how many subscribers it has."""
    channels = await redis.pubsub_channels()
    return {bytes(n): int(c) for n, c in await redis.pubsub_numsub(*channels)} if channels else {}


async def _until_subscribed(redis: Redis, expected: dict[bytes, int], timeout: float  # noqa: ASYNC109
                            ) -> float:
    """Seconds until Redis shows exactly `expected` again; fail after `timeout`."""
    started = time.monotonic()
    found: dict[bytes, int] = {}
    while time.monotonic() - started < timeout:
        found = await _subscriptions(redis)
        if found == expected:
            return time.monotonic() - started
        await asyncio.sleep(0.02)  # polling Redis for the hub's resubscription
    raise AssertionError(f"subscriptions {found} after {timeout:g} s, expected {expected}")


async def test_pubsub_connection_killed_while_a_task_runs(processes: Processes,
                                                          redis_url: str) -> None:
    web = processes.serve(pipelines=SHORT)
    await web.ready()
    session = await Session.open(web.url, redis_url)
    redis = Redis.from_url(redis_url)
    try:
        recorder = session.recorder().start()
        (tid,) = await session.upload(("cube.obj", CUBE))
        recorder.expect([tid])
        await recorder.until(progressed(tid, 0.2), 20, "progress on attempt 1")
        before = await _subscriptions(redis)
        assert before and all(n == 1 for n in before.values()), before

        killed = await redis.execute_command("CLIENT", "KILL", "TYPE", "pubsub")
        assert int(killed) >= 1, "no pub/sub connection to kill"
        took = await _until_subscribed(redis, before, 5)
        assert took < RECONNECT, f"the hub took {took:.2f} s to subscribe again"

        # a second kill, later in the task, must be just as harmless
        await recorder.until(progressed(tid, 0.6), 20, "progress past 60 %")
        assert int(await redis.execute_command("CLIENT", "KILL", "TYPE", "pubsub")) >= 1
        await _until_subscribed(redis, before, 5)
        history = await recorder.until_done(20)

        await session.check(recorder)
        assert len(history.connections) == 1, (
            f"the stream itself was cut by the hub's reconnect:\n{describe(history)}")
        terminal = history.terminal(tid)
        assert terminal is not None and terminal["state"] == "SUCCESS", terminal
        assert await leftover_jobs(redis_url) == []
    finally:
        await redis.aclose()
        await session.close()
