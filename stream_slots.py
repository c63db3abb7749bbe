"""At most N open event streams per session, counted in Redis across every web process.

Each open stream holds a slot: a member of the session's sorted set scored by the time its lease
ends, renewed while the stream is open and removed when it closes. A process that dies without
closing its streams leaves slots that simply expire, so nothing leaks and no cleanup is needed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import AsyncIterator

from redis.asyncio import Redis
from redis.exceptions import RedisError

import keys
from ids import new_id

log = logging.getLogger("kiln.streams")

LEASE = 30.0
"""Seconds a slot outlives its last renewal: how long a killed process's streams still count."""

RENEW_EVERY = LEASE / 3

# KEYS[1] slots; ARGV: now, lease end, limit, slot id, key ttl (ms).
# Returns 0 when the slot is taken, else seconds until the soonest slot's lease ends.
_TAKE = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[3]) then
  local soonest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
  return math.max(1, math.ceil(tonumber(soonest[2]) - tonumber(ARGV[1])))
end
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[4])
redis.call('PEXPIRE', KEYS[1], ARGV[5])
return 0
"""


class StreamsFull(Exception):
    """The session already has its limit of open streams."""

    def __init__(self, limit: int, retry_after: int) -> None:
        super().__init__(f"this session already has {limit} open event streams")
        self.limit = limit
        self.retry_after = retry_after


def slots_key(session_id: str) -> str:
    """Sorted set: slot id -> end of its lease (unix seconds); beside the session's stream."""
    return f"{keys.session_stream(session_id).channel}:sse"


class StreamSlot:
    """One open stream's place in its session's count."""

    def __init__(self, redis: Redis, key: str, slot_id: str) -> None:
        self._redis = redis
        self._key = key
        self._id = slot_id

    @contextlib.asynccontextmanager
    async def held(self) -> AsyncIterator[None]:
        """Renew the lease while the body runs; give the slot back when it ends."""
        renewer = asyncio.create_task(self._renew())
        try:
            yield
        finally:
            renewer.cancel()
            await asyncio.wait([renewer])
            with contextlib.suppress(RedisError, OSError):
                await self._redis.zrem(self._key, self._id)

    async def _renew(self) -> None:
        while True:
            await asyncio.sleep(RENEW_EVERY)
            try:
                async with self._redis.pipeline(transaction=False) as pipe:
                    pipe.zadd(self._key, {self._id: time.time() + LEASE})
                    pipe.pexpire(self._key, math.ceil(LEASE * 1000))
                    await pipe.execute()
            except (RedisError, OSError) as exc:  # the stream itself notices an outage
                log.warning("could not renew a stream slot: %s", type(exc).__name__)


async def take_slot(redis: Redis, session_id: str, limit: int) -> StreamSlot:
    """A slot for one more stream of the session, or StreamsFull."""
    key = slots_key(session_id)
    slot_id = new_id()
    now = time.time()
    take = redis.register_script(_TAKE)
    wait = await take(keys=[key], args=[repr(now), repr(now + LEASE), limit, slot_id,
                                        math.ceil(LEASE * 1000)])
    if int(wait):
        raise StreamsFull(limit, int(wait))
    return StreamSlot(redis, key, slot_id)
