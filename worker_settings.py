"""Composition root of a worker run by arq's own CLI: `arq worker_settings.WorkerSettings`.

The same job code as the embedded worker and `kiln worker`. arq's CLI always builds its stock
Worker, which polls the queue every KILN_POLL_DELAY seconds; `kiln worker` runs `KilnWorker`,
woken by each enqueue instead. Redis is REDIS_URL, or the private redis of a running `kiln serve`
in the same data directory.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any, ClassVar

from arq.connections import RedisSettings
from arq.worker import Function, func

import keys
from redis_server import PrivateRedis
from services import open_services
from settings import Settings
from tasks.jobs import WorkerContext, pipelines_for, process_asset
from tasks.queue import PROCESS_ASSET, job_deserializer, job_serializer
from worker import child_pool, handle_control, sweeper_for

_settings = Settings.from_env()


def _redis_url(settings: Settings) -> str:
    return settings.redis_url or PrivateRedis(settings.private_redis_dir).url


async def startup(ctx: dict[str, Any]) -> None:
    stack = contextlib.AsyncExitStack()
    ctx["kiln_stack"] = stack
    services = await stack.enter_async_context(open_services(_settings, _redis_url(_settings)))
    pool = child_pool(_settings)
    await pool.start()
    stack.push_async_callback(pool.close)
    context = WorkerContext(services=services, pool=pool, pipelines=pipelines_for(_settings))
    services.hub.on_control(lambda message: handle_control(message, context))
    sweeper = asyncio.create_task(sweeper_for(services).run(), name="kiln-sweep")
    stack.push_async_callback(_cancel, sweeper)
    ctx["kiln"] = context


async def _cancel(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def shutdown(ctx: dict[str, Any]) -> None:
    stack: contextlib.AsyncExitStack | None = ctx.get("kiln_stack")
    if stack is not None:
        await stack.aclose()


class WorkerSettings:
    """Read by arq's CLI; mirrors `worker.build_worker`."""

    functions: ClassVar[list[Function]] = [
        func(process_asset, name=PROCESS_ASSET, max_tries=1_000_000)]
    queue_name = keys.QUEUE
    redis_settings = RedisSettings.from_dsn(_redis_url(_settings))
    on_startup = startup
    on_shutdown = shutdown
    max_jobs = _settings.worker_concurrency
    job_timeout = _settings.task_timeout + 60
    keep_result = 0
    poll_delay = _settings.poll_delay
    job_serializer = staticmethod(job_serializer)
    job_deserializer = staticmethod(job_deserializer)
