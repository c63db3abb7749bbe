"""The process's shared stack: one Redis pool, one hub, and the services built on them."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, parse_qsl, urlencode, urlsplit

from arq.connections import ArqRedis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError, ResponseError

from auth.accounts import Accounts
from auth.hasher import PasswordHasher
from auth.throttle import LoginThrottle
from auth.tokens import TokenService
from auth.upload_limits import UploadLimits
from records import keys
from records.dedup import Dedup
from records.deletion import TaskDeleter
from records.events import EventWriter
from records.queue import TaskQueue, job_deserializer, job_serializer
from records.store import TaskStore
from redis_pool import IdleClosingPool, close_idle_forever
from settings import Settings
from storage import Storage
from streaming.feed import EventFeed
from streaming.hub import Hub
from streaming.slots import StreamSlots

log = logging.getLogger("kiln")

SNAPSHOT_LIMIT = 500
IDLE_KEEP = 4
"""Free Redis connections kept open however long they stand idle."""
FIRST_BACKOFF = 0.5
MAX_BACKOFF = 10.0


class RedisUnreachable(RuntimeError):
    """Redis did not answer within `redis_start_wait` seconds of starting."""


class RedisMisconfigured(RuntimeError):
    """Redis is set up to lose acknowledged work (it evicts keys when full)."""


@dataclass(frozen=True)
class Services:
    """Everything a request handler, a job or a CLI command needs; built once per process."""

    settings: Settings
    redis: ArqRedis
    hub: Hub
    tasks: TaskStore
    events: EventWriter
    queue: TaskQueue
    deleter: TaskDeleter
    dedup: Dedup
    accounts: Accounts
    tokens: TokenService
    storage: Storage
    feed: EventFeed
    logins: LoginThrottle
    uploads: UploadLimits
    slots: StreamSlots


def connect_redis(url: str, *, timeout: float = 2.0, health_interval: float = 5.0,
                  max_connections: int = 64) -> ArqRedis:
    """The asyncio Redis client shared by the web app, the hub and the embedded worker.

    Every command (connect, write, read) gives up after `timeout` seconds, so a stalled or
    half-open Redis fails the caller fast instead of hanging it. A connection idle for
    `health_interval` is PINGed before reuse, and a PING that finds it closed reconnects once;
    commands themselves are never retried (a write may have reached Redis).

    The pool is redis-py's BlockingConnectionPool, which connects a new connection outside its
    lock: the plain ConnectionPool of redis 5 connects under the lock (redis-py issue #3842), so
    with Redis stalled N callers waited N x `timeout` in turn. Waiting for a free connection is
    bounded by `timeout` too, at most `max_connections` are open, and `IdleClosingPool` closes
    those a burst opened once they stand idle.
    """
    options: dict[str, Any] = {
        "socket_timeout": timeout,
        "socket_connect_timeout": timeout,
        "health_check_interval": health_interval,
        "retry": Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,)),
        "max_connections": max_connections,
        "timeout": timeout,
    }
    if not url.startswith("unix:"):
        options["socket_keepalive"] = True
        options["socket_keepalive_options"] = _keepalive_options(health_interval)
    pool = IdleClosingPool.from_url(url, **options)
    return ArqRedis(pool, job_serializer=job_serializer, job_deserializer=job_deserializer,
                    default_queue_name=keys.QUEUE)


def _keepalive_options(health_interval: float) -> dict[int, int]:
    """TCP keepalive probes after `health_interval` idle seconds, 3 a second apart: a peer host
    that vanished is noticed even on a connection nobody writes to."""
    wanted = {"TCP_KEEPIDLE": max(1, round(health_interval)), "TCP_KEEPINTVL": 1,
              "TCP_KEEPCNT": 3}
    return {getattr(socket, name): value for name, value in wanted.items()
            if hasattr(socket, name)}


def redacted(url: str) -> str:
    """`url` without its password (in the authority or the query), fit for a log line."""
    parts = urlsplit(url)
    if parts.password is not None:
        hidden = f"{parts.username or ''}:***@{parts.netloc.rpartition('@')[2]}"
        url = url.replace(parts.netloc, hidden, 1)
    if "password" in parse_qs(parts.query):
        pairs = parse_qsl(parts.query, keep_blank_values=True)
        query = urlencode([(k, "***" if k == "password" else v) for k, v in pairs], safe="*")
        url = url.replace(parts.query, query, 1)
    return url


async def wait_for_redis(redis: ArqRedis, url: str, wait: float) -> None:
    """Return once Redis answers PING; retry with backoff for up to `wait` seconds (0: forever),
    logging one line per failed attempt, because under compose or systemd Redis may start later."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait if wait > 0 else None
    delay = FIRST_BACKOFF
    for attempt in itertools.count(1):
        try:
            await redis.ping()
            return
        except (RedisError, OSError) as exc:
            pause = delay if deadline is None else min(delay, deadline - loop.time())
            if pause <= 0:
                raise RedisUnreachable(
                    f"Redis at {redacted(url)} did not answer within {wait:g} s "
                    f"({attempt} attempts; {_reason(exc, url)})"
                ) from None
            log.warning("waiting for Redis at %s (attempt %d, next in %.1f s): %s",
                        redacted(url), attempt, pause, _reason(exc, url))
        await asyncio.sleep(pause)
        delay = min(delay * 2, MAX_BACKOFF)


def _reason(exc: BaseException, url: str) -> str:
    text = str(exc) or type(exc).__name__
    password = urlsplit(url).password
    return text.replace(password, "***") if password else text


async def check_eviction_policy(redis: ArqRedis) -> None:
    """Refuse a Redis that may evict keys: an evicted job or task key is acknowledged work lost."""
    try:
        config = await redis.config_get("maxmemory*")
    except ResponseError:  # CONFIG renamed or not permitted (managed Redis): cannot tell
        log.warning("could not read Redis's maxmemory-policy; it must be noeviction")
        return
    policy = str(config.get("maxmemory-policy") or "")
    limit = int(config.get("maxmemory") or 0)
    if policy in ("", "noeviction"):
        return
    if limit > 0:
        raise RedisMisconfigured(
            f"Redis evicts keys when full (maxmemory {limit}, maxmemory-policy {policy}): "
            "tasks and jobs would vanish; set maxmemory-policy noeviction"
        )
    log.warning("Redis's maxmemory-policy is %s: set it to noeviction before setting maxmemory",
                policy)


@contextlib.asynccontextmanager
async def open_services(settings: Settings, redis_url: str) -> AsyncIterator[Services]:
    """Connect to Redis (waiting for it up to `redis_start_wait`), start the hub, and close both
    on exit."""
    redis = connect_redis(redis_url, timeout=settings.redis_timeout,
                          health_interval=settings.redis_health_interval,
                          max_connections=settings.redis_max_connections)
    pool = redis.connection_pool
    assert isinstance(pool, IdleClosingPool)
    hub = Hub(redis, mailbox_size=settings.sse_queue_size,
              ping_interval=settings.redis_health_interval, reply_timeout=settings.redis_timeout)
    hasher = PasswordHasher(settings.hash_threads, settings.hash_waiting)
    trimmer = asyncio.create_task(close_idle_forever(pool, settings.redis_idle_close, IDLE_KEEP))
    slots = StreamSlots(redis)
    try:
        await wait_for_redis(redis, redis_url, settings.redis_start_wait)
        await check_eviction_policy(redis)
        await hub.start()
        storage = Storage(settings.data_dir)
        storage.prepare()
        events = EventWriter(redis, settings)
        store = TaskStore(redis)
        queue = TaskQueue(redis, events, settings)
        yield Services(
            settings=settings,
            redis=redis,
            hub=hub,
            tasks=store,
            events=events,
            queue=queue,
            deleter=TaskDeleter(redis, settings, queue=queue, tasks=store,
                                remove_files=storage.remove_task),
            dedup=Dedup(redis, store, settings),
            accounts=Accounts(redis, hasher),
            tokens=TokenService(str(settings.jwt_secret), settings.token_ttl, leeway=5),
            storage=storage,
            feed=EventFeed(redis, hub, store, snapshot_limit=SNAPSHOT_LIMIT),
            logins=LoginThrottle.from_settings(redis, settings),
            uploads=UploadLimits.from_settings(redis, settings),
            slots=slots,
        )
    finally:
        await slots.close()
        trimmer.cancel()
        await asyncio.wait([trimmer])
        hasher.close()
        await hub.close()
        await redis.aclose(close_connection_pool=True)
