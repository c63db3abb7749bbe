"""Sign-in throttling: failed sign-ins per user name and per client address, counted in moving
windows on Redis by the `limits` library; growing delays, then a refusal with a retry time.

Only sign-ins whose password was checked and found wrong count. One refused by the throttle
before any hashing does not, so an attacker who has used up one user's failures cannot use them
up for everyone behind the same address. A missing user counts exactly like a wrong password,
under a keyed hash of the normalised name (the name itself never enters a key).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import ipaddress
import math
import time
import unicodedata
from dataclasses import dataclass

from limits import RateLimitItem, RateLimitItemPerSecond
from limits.aio.storage import RedisStorage
from limits.aio.strategies import MovingWindowRateLimiter
from redis.asyncio import Redis

from records import keys
from settings import Settings


@dataclass(frozen=True)
class Verdict:
    """What to do with a sign-in before its password is checked: refuse it for `retry_after`
    seconds (when above 0), or else wait `delay` seconds first."""

    retry_after: int
    delay: float


def failure_delay(failures: int, limit: int, delay_max: float) -> float:
    """Each failure doubles the wait, up to `delay_max` at the last one before the refusals:
    a typo or two costs nothing noticeable, a guessing run slows down fast."""
    if failures < 1 or limit < 1:
        return 0.0
    return float(delay_max * 2.0 ** min(0, failures + 1 - limit))


def normal_name(name: str) -> str:
    """The form a user name is counted under: `Alice`, `alice` and `ａｌｉｃｅ` are one."""
    return unicodedata.normalize("NFKC", name).casefold().strip()


def client_address(host: str | None) -> str:
    """The address failures are counted under: an IPv6 client by its /64, which one host
    usually holds whole; an IPv4-mapped one as IPv4."""
    try:
        address = ipaddress.ip_address(host or "")
    except ValueError:
        return host or "unknown"
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)


class LoginThrottle:
    """Failed sign-ins of this process's Redis; build one per process (it shares the pool)."""

    def __init__(self, redis: Redis, *, user_failures: int, address_failures: int, window: int,
                 delay_max: float, secret: str) -> None:
        storage = RedisStorage(
            "async+redis://", implementation="redispy", key_prefix=keys.LOGIN_FAILURES,
            # the process's own pool (and so its timeouts, socket and TLS settings)
            connection_pool=redis.connection_pool,  # type: ignore[arg-type]
        )
        self._limiter = MovingWindowRateLimiter(storage)
        self._per_user = _limit(user_failures, window, "user")
        self._per_address = _limit(address_failures, window, "address")
        self._delay_max = delay_max
        self._key = hmac.new(secret.encode(), b"kiln sign-in throttle", hashlib.sha256).digest()

    @classmethod
    def from_settings(cls, redis: Redis, settings: Settings) -> LoginThrottle:
        return cls(redis, user_failures=settings.login_user_failures,
                   address_failures=settings.login_address_failures,
                   window=settings.login_window, delay_max=settings.login_delay_max,
                   secret=str(settings.jwt_secret))

    async def check(self, name: str, address: str | None) -> Verdict:
        """Whether this sign-in may have its password checked, and after what delay."""
        limits = self._limits(name, address)
        stats = await asyncio.gather(
            *(self._limiter.get_window_stats(item, who) for item, who in limits))
        now = time.time()
        retry_after, delay = 0, 0.0
        for (item, _), window in zip(limits, stats, strict=True):
            if window.remaining <= 0:
                retry_after = max(retry_after, math.ceil(window.reset_time - now), 1)
            else:
                failures = item.amount - window.remaining
                delay = max(delay, failure_delay(failures, item.amount, self._delay_max))
        return Verdict(retry_after, 0.0 if retry_after else delay)

    async def failed(self, name: str, address: str | None) -> None:
        """Count a sign-in whose password was checked and was wrong (or whose user is missing)."""
        await asyncio.gather(*(self._limiter.hit(item, who)
                               for item, who in self._limits(name, address)))

    async def succeeded(self, name: str) -> None:
        """The right password ends the name's run of failures (the address's stays)."""
        if self._per_user is not None:
            await self._limiter.clear(self._per_user, self._digest("user", normal_name(name)))

    def _limits(self, name: str, address: str | None) -> list[tuple[RateLimitItem, str]]:
        limits = []
        if self._per_user is not None:
            limits.append((self._per_user, self._digest("user", normal_name(name))))
        if self._per_address is not None:
            limits.append((self._per_address,
                           self._digest("address", client_address(address))))
        return limits

    def _digest(self, kind: str, value: str) -> str:
        message = f"{kind}\0{value}".encode("utf-8", "surrogatepass")
        return hmac.new(self._key, message, hashlib.sha256).hexdigest()[:32]


def _limit(failures: int, window: int, kind: str) -> RateLimitItem | None:
    """`failures` per `window` seconds; 0 turns the limit off."""
    return RateLimitItemPerSecond(failures, window, namespace=kind) if failures > 0 else None
