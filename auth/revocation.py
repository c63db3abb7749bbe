"""Signed-out tokens and ended sessions: the one place that writes and reads them."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline

from auth.tokens import Claims
from records import keys

# How long a mark outlives the token it is about: more than the backend's leeway on expiry, and
# room for a refresh that was renewing the session while it was being ended.
MARGIN_SECONDS = 60


async def revoke(redis: Redis, token_ttl: int, *, token: Claims | None = None,
                 session_id: str | None = None) -> None:
    """Refuse one access token from now on (`token`), or every access token of a session
    (`session_id`: sign-out, a reused refresh secret), for as long as any of them could be valid."""
    async with redis.pipeline(transaction=False) as pipe:
        if token is not None:
            left = max(0, token.expires_at - int(time.time()))
            pipe.set(keys.revoked_token(token.token_id), "1", ex=left + MARGIN_SECONDS)
        if session_id is not None:
            pipe.set(keys.ended_session(session_id), "1", ex=token_ttl + MARGIN_SECONDS)
        await pipe.execute()


async def is_revoked(redis: Redis, claims: Claims) -> bool:
    """True if this token was signed out or its session has ended; one round trip."""
    async with redis.pipeline(transaction=False) as pipe:
        check_revocation(pipe, claims)
        return revoked(await pipe.execute())


def check_revocation(pipe: Pipeline, claims: Claims) -> None:
    """Queue `is_revoked`'s two checks on a pipeline (for a caller with more to ask); its first
    two replies go to `revoked`."""
    pipe.exists(keys.revoked_token(claims.token_id))
    pipe.exists(keys.ended_session(claims.session_id))


def revoked(replies: Sequence[Any]) -> bool:
    token_revoked, session_ended = replies[:2]
    return bool(token_revoked or session_ended)
