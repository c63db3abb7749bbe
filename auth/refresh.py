"""Refresh credentials: one opaque secret per session, rotated on every use, stored as its hash.

The cookie value is `<session id>.<secret>`; Redis keeps only sha256(secret) of the current and
the previous secret. Presenting the previous one within `grace` seconds of the rotation (two tabs
refreshing at once) is accepted without another rotation; presenting it later means a copy of the
credential is in use elsewhere, so the session's credential is deleted and the session ended:
its access tokens are refused too (auth.revocation).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass

from redis.asyncio import Redis

from auth.revocation import revoke
from records import ids, keys

COOKIE_NAME = "kiln_refresh"
COOKIE_PATH = "/api/auth"
SECRET_BYTES = 32
_SECRET = re.compile(r"[A-Za-z0-9_-]{16,128}\Z")
_MAX_COOKIE_CHARS = 256

# KEYS[1] the session's record. ARGV: user id, new hash, now, ttl.
START_SCRIPT = """
local previous = redis.call('HGET', KEYS[1], 'current')
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'user', ARGV[1], 'current', ARGV[2], 'rotated_at', ARGV[3])
if previous then redis.call('HSET', KEYS[1], 'previous', previous) end
redis.call('EXPIRE', KEYS[1], ARGV[4])
return 1
"""

# KEYS[1] the session's record. ARGV: presented hash, new hash, now, ttl, grace.
# Returns {outcome, user id}: rotated, grace, reused (the record is deleted) or unknown.
RENEW_SCRIPT = """
local record = redis.call('HMGET', KEYS[1], 'user', 'current', 'previous', 'rotated_at')
local user, current, previous, rotated = record[1], record[2], record[3], record[4]
if not user then return {'unknown', ''} end
if current == ARGV[1] then
  redis.call('HSET', KEYS[1], 'current', ARGV[2], 'previous', ARGV[1], 'rotated_at', ARGV[3])
  redis.call('EXPIRE', KEYS[1], ARGV[4])
  return {'rotated', user}
end
if previous == ARGV[1] then
  if tonumber(ARGV[3]) - tonumber(rotated or '0') <= tonumber(ARGV[5]) then
    return {'grace', user}
  end
  redis.call('DEL', KEYS[1])
  return {'reused', user}
end
return {'unknown', ''}
"""


@dataclass(frozen=True)
class Renewal:
    """A refresh credential that was accepted: whose session it is, and the cookie to set next
    (None when a just-rotated secret was accepted within the grace: the client has the new one)."""

    user_id: str
    session_id: str
    cookie: str | None


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode("ascii")).hexdigest()


def _text(value: bytes | str | None) -> str:
    if value is None:
        return ""
    return value.decode() if isinstance(value, bytes) else value


def parse_cookie(cookie: str) -> tuple[str, str] | None:
    """(session id, secret) of a well-formed cookie value; None for anything else."""
    if len(cookie) > _MAX_COOKIE_CHARS or not cookie.isascii():
        return None
    session_id, dot, secret = cookie.partition(".")
    if not dot or not ids.is_valid_id(session_id) or _SECRET.fullmatch(secret) is None:
        return None
    return session_id, secret


class RefreshSessions:
    """Starts, renews and ends sessions' refresh credentials; cheap to build per request."""

    def __init__(self, redis: Redis, ttl: int, grace: float, *, token_ttl: int,
                 clock: Callable[[], float] = time.time) -> None:
        if ttl < 1:
            raise ValueError("the session ttl must be at least one second")
        self._redis = redis
        self._ttl = ttl
        self._token_ttl = token_ttl
        self._grace = grace
        self._clock = clock
        self._start = redis.register_script(START_SCRIPT)
        self._renew = redis.register_script(RENEW_SCRIPT)

    async def start(self, user_id: str, session_id: str) -> str:
        """A new secret for the session (replacing any other); returns the cookie value."""
        if not ids.is_valid_id(user_id) or not ids.is_valid_id(session_id):
            raise ValueError("user_id and session_id must be valid Kiln ids")
        secret = secrets.token_urlsafe(SECRET_BYTES)
        await self._start(keys=[keys.refresh_session(session_id)],
                          args=[user_id, _digest(secret), repr(self._clock()), self._ttl])
        return f"{session_id}.{secret}"

    async def renew(self, cookie: str) -> Renewal | None:
        """Accept a cookie value once, rotating its secret; None if it is not valid (any more).
        A rotated secret presented after the grace ends the session, access tokens and all."""
        parsed = parse_cookie(cookie)
        if parsed is None:
            return None
        session_id, secret = parsed
        fresh = secrets.token_urlsafe(SECRET_BYTES)
        result = await self._renew(
            keys=[keys.refresh_session(session_id)],
            args=[_digest(secret), _digest(fresh), repr(self._clock()), self._ttl,
                  repr(self._grace)],
        )
        outcome, user = (_text(value) for value in result)
        if outcome == "rotated" and ids.is_valid_id(user):
            return Renewal(user, session_id, f"{session_id}.{fresh}")
        if outcome == "grace" and ids.is_valid_id(user):
            return Renewal(user, session_id, None)
        if outcome == "reused":
            await revoke(self._redis, self._token_ttl, session_id=session_id)
        return None

    async def end(self, session_id: str) -> None:
        """Delete the session's credential (sign-out, or its user is gone)."""
        await self._redis.delete(keys.refresh_session(session_id))

    async def end_by_cookie(self, cookie: str) -> str | None:
        """Delete the credential a cookie value belongs to (its current or previous secret) and
        return its session id; None, deleting nothing, when it matches neither."""
        parsed = parse_cookie(cookie)
        if parsed is None:
            return None
        session_id, secret = parsed
        raw = await self._redis.hmget(  # type: ignore[misc]
            keys.refresh_session(session_id), ["current", "previous"])
        presented = _digest(secret)
        if not any(hmac.compare_digest(presented, _text(stored)) for stored in raw if stored):
            return None
        await self.end(session_id)
        return session_id
