"""Per-user upload limits: requests a minute and bytes an hour, counted on Redis by the `limits`
library (as sign-in failures are, `auth.throttle`): past either, an upload is refused with 429
`rate_limited` and the seconds until it would be taken. And a storage quota: the bytes a user's
uploads keep on disk, reserved atomically before their tasks are queued (413 `quota_exceeded`
past it). A limit of 0 is off."""

from __future__ import annotations

import math
import time

from limits import RateLimitItem, RateLimitItemPerHour, RateLimitItemPerMinute
from limits.aio.storage import RedisStorage
from limits.aio.strategies import MovingWindowRateLimiter, SlidingWindowCounterRateLimiter
from redis.asyncio import Redis

from records import keys
from settings import Settings


class UploadLimits:
    """This process's view of every user's upload allowance; one per process (shares the pool)."""

    def __init__(self, redis: Redis, *, requests_per_minute: int, bytes_per_hour: int,
                 quota_bytes: int = 0) -> None:
        self._redis = redis
        self.quota_bytes = quota_bytes
        storage = RedisStorage(
            "async+redis://", implementation="redispy", key_prefix=keys.UPLOAD_LIMITS,
            connection_pool=redis.connection_pool,  # type: ignore[arg-type]
        )
        self._requests = MovingWindowRateLimiter(storage)
        # bytes count by the thousand in a sliding window of two counters (a moving window keeps
        # an entry per unit)
        self._bytes = SlidingWindowCounterRateLimiter(storage)
        self._per_minute: RateLimitItem | None = (
            RateLimitItemPerMinute(requests_per_minute, namespace="requests")
            if requests_per_minute > 0 else None)
        self._per_hour: RateLimitItem | None = (
            RateLimitItemPerHour(max(1, bytes_per_hour // 1024), namespace="kib")
            if bytes_per_hour > 0 else None)

    @classmethod
    def from_settings(cls, redis: Redis, settings: Settings) -> UploadLimits:
        return cls(redis, requests_per_minute=settings.upload_requests_per_minute,
                   bytes_per_hour=settings.upload_bytes_per_hour,
                   quota_bytes=settings.user_quota_bytes)

    async def stored(self, user: str) -> int:
        """The bytes `user`'s uploads keep."""
        return int(await self._redis.hget(keys.USAGE, user) or 0)  # type: ignore[misc]

    async def reserve(self, user: str, size: int) -> int | None:
        """Take `size` bytes of `user`'s quota, atomically; None (nothing taken) when they would
        pass it, else what the user then keeps."""
        kept = int(await self._redis.hincrby(keys.USAGE, user, size))  # type: ignore[misc]
        if self.quota_bytes > 0 and kept > self.quota_bytes:
            await self._redis.hincrby(keys.USAGE, user, -size)  # type: ignore[misc]
            return None
        return kept

    async def release(self, user: str, size: int) -> None:
        """Give back bytes reserved for an upload that was not kept."""
        await self._redis.hincrby(keys.USAGE, user, -size)  # type: ignore[misc]

    async def admit(self, user: str, declared_bytes: int) -> int:
        """Count one upload request of `user`, who says it carries `declared_bytes`; 0 when it
        may go on, else the seconds to wait (nothing is counted then)."""
        if self._per_hour is not None and declared_bytes > 0:
            cost = _kib(declared_bytes)
            if not await self._bytes.test(self._per_hour, user, cost=cost):
                return await self._wait(self._bytes, self._per_hour, user, cost)
        if self._per_minute is not None and not await self._requests.hit(self._per_minute, user):
            return await self._wait(self._requests, self._per_minute, user, 1)
        return 0

    async def received(self, user: str, size: int) -> None:
        """Count the bytes an admitted upload carried."""
        if self._per_hour is not None and size > 0:
            await self._bytes.hit(self._per_hour, user, cost=min(_kib(size),
                                                                 self._per_hour.amount))

    async def _wait(self, limiter: MovingWindowRateLimiter | SlidingWindowCounterRateLimiter,
                    item: RateLimitItem, user: str, cost: int) -> int:
        if cost > item.amount:  # more than the whole allowance: a full window from now
            return int(item.get_expiry())
        window = await limiter.get_window_stats(item, user)
        return max(1, math.ceil(window.reset_time - time.time()))


def _kib(size: int) -> int:
    return max(1, -(-size // 1024))
