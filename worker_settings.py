"""Composition root of a worker run by arq's own CLI: `arq worker_settings.WorkerSettings`.

The same job code as the embedded worker and `kiln worker`. arq's CLI always builds its stock
Worker, which polls arq's queue every KILN_POLL_DELAY seconds; a `StockAdmitter` beside it moves
jobs from the scheduler into that queue as its slots free. `kiln worker` runs `KilnWorker`, which
admits and starts jobs itself, woken by each enqueue. Redis is REDIS_URL, or the private redis
of a running `kiln serve` in the same data directory.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any, cast

from arq.connections import RedisSettings
from redis.exceptions import RedisError

from redis_server import redis_for, redis_url_of
from services import open_services
from settings import Settings
from worker.jobs import JobContext, WorkerContext, pipelines_for
from worker.runner import (
    StockAdmitter,
    child_pool,
    handle_control,
    sweeper_for,
    worker_options,
)

_settings = Settings.from_env()


async def startup(ctx: dict[str, Any]) -> None:
    job = cast(JobContext, ctx)
    stack = contextlib.AsyncExitStack()
    job["kiln_stack"] = stack
    url = await stack.enter_async_context(redis_for(_settings))
    services = await stack.enter_async_context(open_services(_settings, url))
    pool = child_pool(_settings)
    await pool.start()
    stack.push_async_callback(pool.close)
    context = WorkerContext(services=services, pool=pool, pipelines=pipelines_for(_settings))
    admitter = StockAdmitter(context, _settings)
    services.hub.on_control(lambda message: handle_control(message, context, admitter))
    for name, work in (("kiln-sweep", sweeper_for(services).run()),
                       ("kiln-admit", admitter.run())):
        stack.push_async_callback(_cancel, asyncio.create_task(work, name=name))
    job["kiln"] = context
    job["kiln_admitter"] = admitter
    await admitter.admit_once()  # before arq's first poll: a burst ends on an empty queue


async def job_started(ctx: dict[str, Any]) -> None:
    cast(JobContext, ctx)["kiln"].arq_jobs += 1


async def job_ended(ctx: dict[str, Any]) -> None:
    """The slot of the job ending goes to the next job at once, so arq's queue is never empty
    while jobs wait (a burst would end)."""
    job = cast(JobContext, ctx)
    job["kiln"].arq_jobs -= 1
    with contextlib.suppress(RedisError, OSError):
        await job["kiln_admitter"].admit_once()


async def _cancel(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def shutdown(ctx: dict[str, Any]) -> None:
    stack = cast(JobContext, ctx).get("kiln_stack")
    if stack is not None:
        await stack.aclose()


class WorkerSettings:
    """Read by arq's CLI: `worker_options` (the options every Kiln worker shares), Redis, and the
    startup and shutdown that build the job context."""

    redis_settings = RedisSettings.from_dsn(redis_url_of(_settings))
    on_startup = startup
    on_shutdown = shutdown
    on_job_start = job_started
    on_job_end = job_ended


for _name, _value in worker_options(_settings).items():
    setattr(WorkerSettings, _name, _value)
