"""Refresh credentials against a real Redis with a hand-moved clock: rotation, grace, reuse."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from auth.refresh import RefreshSessions, parse_cookie
from records import ids, keys

GRACE = 10.0


class FakeClock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_url)
    yield client
    await client.aclose()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def sessions(redis: Redis, clock: FakeClock) -> RefreshSessions:
    return RefreshSessions(redis, 3600, GRACE, token_ttl=900, clock=clock)


async def test_each_secret_renews_once_and_keeps_the_session(sessions: RefreshSessions) -> None:
    user, session = ids.new_id(), ids.new_id()
    first = await sessions.start(user, session)
    renewal = await sessions.renew(first)
    assert renewal is not None and (renewal.user_id, renewal.session_id) == (user, session)
    assert renewal.cookie is not None and renewal.cookie != first
    assert (await sessions.renew(renewal.cookie)) is not None


async def test_the_previous_secret_within_the_grace_gets_no_new_cookie(
        sessions: RefreshSessions, clock: FakeClock, redis: Redis) -> None:
    session = ids.new_id()
    first = await sessions.start(ids.new_id(), session)
    assert (await sessions.renew(first)) is not None
    clock.now += GRACE
    late = await sessions.renew(first)
    assert late is not None and late.cookie is None and late.session_id == session
    clock.now += 0.5
    assert (await sessions.renew(first)) is None  # reused after the grace
    assert not await redis.exists(keys.refresh_session(session))


async def test_a_wrong_secret_changes_nothing(sessions: RefreshSessions) -> None:
    session = ids.new_id()
    good = await sessions.start(ids.new_id(), session)
    assert await sessions.renew(f"{session}.{'A' * 43}") is None
    assert not await sessions.end_by_cookie(f"{session}.{'A' * 43}")
    assert (await sessions.renew(good)) is not None


async def test_start_again_replaces_the_secret_and_end_deletes_it(
        sessions: RefreshSessions, redis: Redis) -> None:
    user, session = ids.new_id(), ids.new_id()
    first = await sessions.start(user, session)
    second = await sessions.start(user, session)
    assert 3590 < await redis.ttl(keys.refresh_session(session)) <= 3600
    assert await sessions.end_by_cookie(second)
    assert await sessions.renew(first) is None and await sessions.renew(second) is None


@pytest.mark.parametrize("cookie", [
    "", "no-dot", ".", "sid.", ".secretsecretsecretsecret", "bad:sid.secretsecretsecretsecret",
    "sid.short", "sid.secret with spaces in it", "sid.sécretsecretsecretsecret", "s." + "x" * 300,
])
def test_malformed_cookies_are_not_parsed(cookie: str) -> None:
    assert parse_cookie(cookie) is None


def test_a_cookie_names_its_session() -> None:
    session = ids.new_id()
    assert parse_cookie(f"{session}.{'b' * 43}") == (session, "b" * 43)
