"""State changes renew the event log's and the task's TTLs; progress events only when a run could
outlast them (each renewal is five Redis commands)."""

from __future__ import annotations

import pytest

from records import keys
from records.events import Guard, TaskState
from records.queue import NewTask, new_task_identity
from services import open_services
from settings import Settings


@pytest.mark.parametrize(("event_ttl", "progress_renews"), [(7 * 86400, False), (60, True)])
async def test_which_events_renew_the_ttls(settings: Settings, event_ttl: int,
                                           progress_renews: bool) -> None:
    configured = settings.with_(event_ttl=event_ttl, task_timeout=600.0)
    async with open_services(configured, settings.redis_url or "") as services:
        who = new_task_identity(owner="u1", session="s1", batch="b1", kind="mesh",
                                filename="a.obj")
        assert await services.queue.submit_all([NewTask(who, "obj", 1, ("a.obj",))]) == [True]
        log, task = keys.session_stream("s1").log, keys.task(who.task_id)

        async def shorten() -> None:
            await services.redis.expire(log, 30)
            await services.redis.expire(task, 30)

        async def renewed() -> bool:
            return bool(await services.redis.ttl(log) > 30 and await services.redis.ttl(task) > 30)

        await shorten()
        assert await services.events.emit(who, Guard.CLAIM, TaskState.STARTED, attempt=1,
                                          run="r1", stage="starting")
        assert await renewed()  # a state change
        await shorten()
        assert await services.events.emit(who, Guard.RUN, TaskState.PROGRESS, attempt=1,
                                          run="r1", stage="load", progress=0.5)
        assert await renewed() == progress_renews
        assert await services.events.emit(who, Guard.RUN, TaskState.SUCCESS, attempt=1,
                                          run="r1", stage="done", progress=1.0)
        assert await renewed()  # the end: the log lives its full TTL after it
