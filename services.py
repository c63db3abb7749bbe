"""The process's shared stack: one Redis pool, one hub, and the services built on them."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass

from arq.connections import ArqRedis
from redis.asyncio import ConnectionPool

import keys
from accounts import Accounts
from auth.tokens import TokenService
from event_stream import EventFeed
from events import EventWriter
from records import TaskStore
from settings import Settings
from storage import Storage
from streaming import Hub
from tasks.queue import TaskQueue, job_deserializer, job_serializer

log = logging.getLogger("kiln")

SNAPSHOT_LIMIT = 500


@dataclass(frozen=True)
class Services:
    """Everything a request handler, a job or a CLI command needs; built once per process."""

    settings: Settings
    redis: ArqRedis
    hub: Hub
    tasks: TaskStore
    events: EventWriter
    queue: TaskQueue
    accounts: Accounts
    tokens: TokenService
    storage: Storage
    feed: EventFeed


def connect_redis(url: str) -> ArqRedis:
    """The asyncio Redis client shared by the web app, the hub and the embedded worker."""
    pool = ConnectionPool.from_url(url, socket_connect_timeout=5, max_connections=512)
    return ArqRedis(pool, job_serializer=job_serializer, job_deserializer=job_deserializer,
                    default_queue_name=keys.QUEUE)


@contextlib.asynccontextmanager
async def open_services(settings: Settings, redis_url: str) -> AsyncIterator[Services]:
    """Connect to Redis, start the hub, and close both on exit."""
    redis = connect_redis(redis_url)
    hub = Hub(redis, mailbox_size=settings.sse_queue_size)
    try:
        await redis.ping()
        await hub.start()
        storage = Storage(settings.data_dir)
        storage.prepare()
        events = EventWriter(redis, settings)
        store = TaskStore(redis)
        yield Services(
            settings=settings,
            redis=redis,
            hub=hub,
            tasks=store,
            events=events,
            queue=TaskQueue(redis, events, settings),
            accounts=Accounts(redis),
            tokens=TokenService(str(settings.jwt_secret), settings.token_ttl, leeway=5),
            storage=storage,
            feed=EventFeed(redis, hub, store, snapshot_limit=SNAPSHOT_LIMIT),
        )
    finally:
        await hub.close()
        await redis.aclose(close_connection_pool=True)
