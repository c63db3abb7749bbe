"""The Redis connection pool: bounded, waiting a bounded time for a free connection, and closing
the connections a burst opened once they have stood idle for a while."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import weakref
from typing import Any

from redis.asyncio import BlockingConnectionPool
from redis.asyncio.connection import AbstractConnection

log = logging.getLogger("kiln.redis")


class IdleClosingPool(BlockingConnectionPool):
    """redis-py's BlockingConnectionPool (at most `max_connections`, waiting up to `timeout`
    for one) that can close what stood idle: a burst of requests opens dozens of connections,
    and redis-py keeps every one of them open for good."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._idle_since: weakref.WeakKeyDictionary[AbstractConnection, float] = (
            weakref.WeakKeyDictionary())

    async def release(self, connection: AbstractConnection) -> None:
        self._idle_since[connection] = time.monotonic()
        await super().release(connection)

    async def close_idle(self, idle_for: float, keep: int) -> int:
        """Close the free connections unused for `idle_for` seconds, but the `keep` most
        recently used; returns how many were closed."""
        now = time.monotonic()
        async with self._condition:
            free = self._available_connections  # a stack: the least recently used first
            candidates = free[:max(0, len(free) - keep)]
            stale = [c for c in candidates if now - self._idle_since.get(c, now) >= idle_for]
            for connection in stale:
                free.remove(connection)
        for connection in stale:
            with contextlib.suppress(Exception):  # it is being dropped: how it goes is moot
                await connection.disconnect()
        return len(stale)


async def close_idle_forever(pool: IdleClosingPool, idle_for: float, keep: int) -> None:
    """Every `idle_for / 2` seconds, close the connections idle for `idle_for` (0: never)."""
    if idle_for <= 0:
        return
    me = asyncio.current_task()
    while me is None or not me.cancelling():  # a cancel that a disconnect lost still ends it
        await asyncio.sleep(idle_for / 2)
        closed = await pool.close_idle(idle_for, keep)
        if closed:
            log.debug("closed %d idle Redis connection(s)", closed)
