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

from records import keys
from records.ids import new_id

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

    def __init__(self, slots: StreamSlots, key: str, slot_id: str) -> None:
        self._slots = slots
        self.key = key
        self.id = slot_id

    @contextlib.asynccontextmanager
    async def held(self) -> AsyncIterator[None]:
        """Keep the lease renewed while the body runs; give the slot back when it ends."""
        self._slots.renew_with_the_others(self)
        try:
            yield
        finally:
            await self._slots.give_back(self)


class StreamSlots:
    """Every slot this process holds, renewed together: one pipeline every RENEW_EVERY seconds
    for all of them, so a process holding 10,000 streams keeps one task and one round trip for
    them rather than one each."""

    def __init__(self, redis: Redis) -> None:
        self._redis = redis
        self._held: dict[str, set[str]] = {}  # slots key -> ids held here
        self._renewer: asyncio.Task[None] | None = None
        self._take = redis.register_script(_TAKE)
        self._closed = False

    async def take(self, session_id: str, limit: int) -> StreamSlot:
        """A slot for one more stream of the session, or StreamsFull."""
        key = slots_key(session_id)
        slot_id = new_id()
        now = time.time()
        wait = await self._take(keys=[key], args=[repr(now), repr(now + LEASE), limit, slot_id,
                                                  math.ceil(LEASE * 1000)])
        if int(wait):
            raise StreamsFull(limit, int(wait))
        return StreamSlot(self, key, slot_id)

    def renew_with_the_others(self, slot: StreamSlot) -> None:
        self._held.setdefault(slot.key, set()).add(slot.id)
        if not self._closed and (self._renewer is None or self._renewer.done()):
            self._renewer = asyncio.create_task(self._renew_forever(), name="kiln-stream-slots")

    async def give_back(self, slot: StreamSlot) -> None:
        ids = self._held.get(slot.key)
        if ids is not None:
            ids.discard(slot.id)
            if not ids:
                del self._held[slot.key]
        if self._closed:
            return  # the process is stopping and its Redis pool is closed: the lease lapses
        with contextlib.suppress(RedisError, OSError):
            await self._redis.zrem(slot.key, slot.id)

    async def close(self) -> None:
        self._closed = True
        if self._renewer is not None:
            self._renewer.cancel()
            await asyncio.wait([self._renewer])

    async def renew(self) -> None:
        """Push every held slot's lease end forward by LEASE (the renewer's one step)."""
        if not self._held:
            return
        until = time.time() + LEASE
        async with self._redis.pipeline(transaction=False) as pipe:
            for key, ids in self._held.items():
                # xx: a slot given back while this pipeline waited for a connection stays gone
                pipe.zadd(key, dict.fromkeys(ids, until), xx=True)
                pipe.pexpire(key, math.ceil(LEASE * 1000))
            await pipe.execute()

    async def _renew_forever(self) -> None:
        while not self._closed:  # close() also cancels us; a renewal's send may lose that cancel
            await asyncio.sleep(RENEW_EVERY)
            try:
                await self.renew()
            except (RedisError, OSError) as exc:  # the streams themselves notice an outage
                log.warning("could not renew the stream slots: %s", type(exc).__name__)
