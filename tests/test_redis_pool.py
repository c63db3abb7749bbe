"""The Redis pool is bounded, and closes the connections a burst opened once they stand idle."""

from __future__ import annotations

import asyncio

import redis.asyncio as redis_async

from redis_pool import IdleClosingPool
from services import connect_redis


async def _clients(url: str) -> int:
    """Connections Redis sees, not counting the one asking."""
    probe = redis_async.Redis.from_url(url)
    try:
        return len(await probe.client_list()) - 1
    finally:
        await probe.aclose()


async def _burst(redis: redis_async.Redis, count: int) -> None:
    """`count` commands at once, each holding its connection for a second."""
    async def hold(i: int) -> None:
        await redis.blpop([f"nothing-{i}"], timeout=1)  # type: ignore[misc]  # a union in the stub

    await asyncio.gather(*(hold(i) for i in range(count)))


async def test_a_burst_opens_connections_and_idle_ones_are_closed(redis_url: str) -> None:
    redis = connect_redis(redis_url)
    try:
        await _burst(redis, 20)
        assert await _clients(redis_url) >= 20
        pool = redis.connection_pool
        assert isinstance(pool, IdleClosingPool)
        assert await pool.close_idle(60.0, keep=4) == 0  # nothing has stood idle a minute yet
        assert await pool.close_idle(0.0, keep=4) >= 16
        assert await _clients(redis_url) <= 4
        assert await redis.ping()  # what is left works, and a new burst opens again
        await _burst(redis, 8)
        assert await _clients(redis_url) >= 8
    finally:
        await redis.aclose(close_connection_pool=True)


async def test_the_pool_never_opens_more_than_its_bound(redis_url: str) -> None:
    redis = connect_redis(redis_url, timeout=5.0, max_connections=5)
    try:
        await _burst(redis, 15)  # three rounds of five: the rest wait for a free connection
        assert await _clients(redis_url) <= 5
    finally:
        await redis.aclose(close_connection_pool=True)
