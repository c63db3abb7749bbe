"""Redis killed and restarted on its port, from its AOF, while tasks run and wait (RELIABILITY
B1, A7): every acknowledged task still ends exactly once; a stream cut meanwhile resumes with
Last-Event-ID and loses nothing."""

from __future__ import annotations

import asyncio

from tests.chaos.history import assert_resumed, describe
from tests.chaos.outcomes import progressed
from tests.chaos.processes import Processes
from tests.chaos.session import CUBE, Session, leftover_jobs
from tests.conftest import RedisProcess

SHORT = {"mesh": "tests.helpers.pipelines:short_steps",
         "texture": "tests.helpers.pipelines:short_steps"}
OUTAGE_SECONDS = 3.0
"""As long as the lease: the worker's leases may lapse while Redis is away."""


async def test_redis_killed_and_restarted_during_tasks(
        processes_on_private_redis: Processes, private_redis: RedisProcess) -> None:
    processes = processes_on_private_redis
    web = processes.serve(pipelines=SHORT, env={"KILN_WORKERS": "2"})
    await web.ready()
    session = await Session.open(web.url, private_redis.url)
    try:
        recorder = session.recorder().start()
        tasks = [(await session.upload((f"cube-{n}.obj", CUBE)))[0] for n in range(3)]
        recorder.expect(tasks)
        await recorder.until(progressed(tasks[0], 0.25), 20, "progress of the first task")

        private_redis.stop()  # kill -9: what was acknowledged must be in the AOF
        # the stream itself rides out the outage (the hub resubscribes); a client whose own
        # connection drops meanwhile must come back with Last-Event-ID and miss nothing
        recorder.cut()
        await asyncio.sleep(OUTAGE_SECONDS)  # the outage itself
        private_redis.start()
        (late,) = await session.upload(("late.obj", CUBE))
        recorder.expect([late])
        history = await recorder.until_done(45)

        await session.check(recorder)
        assert {history.terminal(t)["state"] for t in [*tasks, late]  # type: ignore[index]
                } == {"SUCCESS"}, "a task did not survive the outage"
        assert_resumed(history)
        resumed = [c for c in history.reconnects if c.status == 200 and c.events]
        assert resumed and resumed[0].cursor is not None, (
            f"no reconnect resumed with Last-Event-ID:\n{describe(history)}")
        assert await leftover_jobs(private_redis.url) == []
    finally:
        await session.close()
