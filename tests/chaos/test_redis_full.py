"""Redis full (maxmemory reached, noeviction) while tasks run (RELIABILITY B6): new uploads are
refused with 503 and leave nothing behind; once memory is freed, every acknowledged task ends
exactly once and the streams lose nothing."""

from __future__ import annotations

import asyncio

import redis.asyncio as aioredis

from tests.chaos.history import assert_resumed
from tests.chaos.outcomes import progressed
from tests.chaos.processes import Processes
from tests.chaos.session import CUBE, Session, leftover_jobs
from tests.conftest import RedisProcess

SHORT = {"mesh": "tests.helpers.pipelines:short_steps",
         "texture": "tests.helpers.pipelines:short_steps"}
FULL_SECONDS = 3.0
"""How long Redis stays full: several progress events of the running tasks hit it."""


async def test_redis_full_mid_task_refuses_uploads_then_every_task_ends(
        processes_on_private_redis: Processes, private_redis: RedisProcess) -> None:
    web = processes_on_private_redis.serve(pipelines=SHORT, env={"KILN_WORKERS": "2"})
    await web.ready()
    session = await Session.open(web.url, private_redis.url)
    admin = aioredis.Redis.from_url(private_redis.url)
    try:
        recorder = session.recorder().start()
        tasks = [(await session.upload((f"cube-{n}.obj", CUBE)))[0] for n in range(3)]
        recorder.expect(tasks)
        await recorder.until(progressed(tasks[0], 0.25), 20, "progress of the first task")

        await admin.config_set("maxmemory", 1)  # noeviction: every write is refused
        try:
            refused = await session.client.upload(("during.obj", CUBE))
            await asyncio.sleep(FULL_SECONDS)  # the fault itself, while the tasks run on
        finally:
            await admin.config_set("maxmemory", 0)
        assert refused.status_code == 503, refused.text
        assert refused.json()["error"] == "unavailable"

        (late,) = await session.upload(("late.obj", CUBE))
        recorder.expect([late])
        history = await recorder.until_done(45)

        await session.check(recorder)
        assert_resumed(history)  # a stream cut by the fault came back from where it was
        ended = {t: (history.terminal(t) or {}).get("state") for t in [*tasks, late]}
        assert set(ended.values()) == {"SUCCESS"}, ended
        assert await leftover_jobs(private_redis.url) == []
    finally:
        await admin.aclose()
        await session.close()
