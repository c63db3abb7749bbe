"""Sign-in throttling over HTTP: growing delays, then 429 with Retry-After, per name and address."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest
from redis.asyncio import Redis

from tests.conftest import make_settings
from tests.live import LiveServer, ServerFactory
from tests.users import add_user

pytestmark = pytest.mark.chaos  # an attack or fault scenario (pytest -m chaos)

PASSWORD = "correct horse battery"
DELAY_MAX = 0.4


async def _login(http: httpx.AsyncClient, name: str, password: str) -> tuple[httpx.Response, float]:
    started = time.monotonic()
    response = await http.post("/api/auth/login", json={"username": name, "password": password})
    return response, time.monotonic() - started


def _assert_rate_limited(response: httpx.Response, window: int) -> int:
    assert response.status_code == 429, response.text
    retry_after = int(response.headers["retry-after"])
    assert 1 <= retry_after <= window
    assert response.json() == {"error": "rate_limited", "retry_after": retry_after,
                               "message": response.json()["message"]}
    return retry_after


async def _throttle_keys(redis_url: str) -> dict[str, int]:
    """Every key of the throttle, with the number of failures it holds."""
    redis = Redis.from_url(redis_url, decode_responses=True)
    try:
        return {key: await redis.llen(key) async for key in redis.scan_iter("kiln:login:*")}
    finally:
        await redis.aclose()


@pytest.fixture
def throttled(redis_url: str, tmp_path: Path, live_server_factory: ServerFactory) -> LiveServer:
    return live_server_factory(make_settings(redis_url, tmp_path / "data", embedded_worker=False,
                                             login_delay_max=DELAY_MAX))


async def test_300_wrong_passwords_slow_down_then_429_and_others_still_sign_in(
        throttled: LiveServer, redis_url: str) -> None:
    await add_user(redis_url, "alice")
    await add_user(redis_url, "bob")
    async with httpx.AsyncClient(base_url=throttled.url, timeout=30) as http:
        attempts = [await _login(http, "alice", "wrong password") for _ in range(300)]
        statuses = [response.status_code for response, _ in attempts]
        assert statuses == [401] * 10 + [429] * 290
        took = [seconds for _, seconds in attempts]
        # each failure doubles the wait before the next check, up to DELAY_MAX at the tenth
        assert took[9] >= DELAY_MAX and took[8] >= DELAY_MAX / 2 and took[7] >= DELAY_MAX / 4
        assert took[0] < took[9]
        for response, _ in attempts[10:]:
            _assert_rate_limited(response, 900)
        # the name is locked, even with the right password, for the rest of the window
        _assert_rate_limited((await _login(http, "alice", PASSWORD))[0], 900)
        # bob, from the same address, is neither refused nor slowed down
        bob, seconds = await _login(http, "bob", PASSWORD)
        assert bob.status_code == 200, bob.text
        assert seconds < DELAY_MAX
    # the 290 refusals never reached the password check, so the address counts only ten
    counts = await _throttle_keys(redis_url)
    assert sorted(counts.values()) == [10, 10]
    assert len([key for key in counts if "address" in key]) == 1
    assert not any("alice" in key for key in counts)


async def test_a_missing_user_is_throttled_exactly_like_a_wrong_password(
        throttled: LiveServer, redis_url: str) -> None:
    await add_user(redis_url, "alice")
    async with httpx.AsyncClient(base_url=throttled.url, timeout=30) as http:
        wrong = [(await _login(http, "alice", "wrong password"))[0] for _ in range(11)]
        missing = [(await _login(http, "nobody-here", "wrong password"))[0] for _ in range(11)]
    for responses in (wrong, missing):
        assert [r.status_code for r in responses] == [401] * 10 + [429]
        _assert_rate_limited(responses[-1], 900)
    assert {r.text for r in wrong[:10]} == {r.text for r in missing[:10]}
    counts = await _throttle_keys(redis_url)
    assert sorted(counts.values()) == [10, 10, 20]  # two names, one address
    assert not any("nobody" in key or "alice" in key for key in counts)


async def test_names_are_counted_by_their_normal_form(throttled: LiveServer,
                                                     redis_url: str) -> None:
    await add_user(redis_url, "alice")
    async with httpx.AsyncClient(base_url=throttled.url, timeout=30) as http:
        for name in ["alice", "Alice", "ALICE", "\uff41lice", " alice "] * 2:
            assert (await _login(http, name, "wrong password"))[0].status_code == 401
        _assert_rate_limited((await _login(http, "aLiCe", "wrong password"))[0], 900)


async def test_too_many_failures_from_one_address_refuse_every_name(
        redis_url: str, tmp_path: Path, live_server_factory: ServerFactory) -> None:
    server = live_server_factory(make_settings(
        redis_url, tmp_path / "data", embedded_worker=False, login_user_failures=0,
        login_address_failures=5, login_window=60, login_delay_max=0.0))
    await add_user(redis_url, "bob")
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
        for number in range(5):
            assert (await _login(http, f"guess{number}", "wrong"))[0].status_code == 401
        _assert_rate_limited((await _login(http, "bob", PASSWORD))[0], 60)
        _assert_rate_limited((await _login(http, "someone", "wrong"))[0], 60)


async def test_the_right_password_ends_a_run_of_failures(throttled: LiveServer,
                                                         redis_url: str) -> None:
    await add_user(redis_url, "alice")
    async with httpx.AsyncClient(base_url=throttled.url, timeout=30) as http:
        for _ in range(2):
            for _ in range(9):
                assert (await _login(http, "alice", "typo"))[0].status_code == 401
            assert (await _login(http, "alice", PASSWORD))[0].status_code == 200


async def test_zero_turns_the_limits_off(redis_url: str, tmp_path: Path,
                                         live_server_factory: ServerFactory) -> None:
    server = live_server_factory(make_settings(
        redis_url, tmp_path / "data", embedded_worker=False, login_user_failures=0,
        login_address_failures=0))
    await add_user(redis_url, "alice")
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
        for _ in range(15):
            response, seconds = await _login(http, "alice", "wrong password")
            assert response.status_code == 401 and seconds < 2.0
        assert (await _login(http, "alice", PASSWORD))[0].status_code == 200
    assert await _throttle_keys(redis_url) == {}


@pytest.mark.parametrize("content_type", [
    "application/x-www-form-urlencoded", "multipart/form-data; boundary=x", "text/plain", None,
])
async def test_login_takes_only_json(throttled: LiveServer, redis_url: str,
                                     content_type: str | None) -> None:
    await add_user(redis_url, "alice")
    headers = {"Content-Type": content_type} if content_type else {}
    async with httpx.AsyncClient(base_url=throttled.url) as http:
        response = await http.post("/api/auth/login", headers=headers,
                                   content=b'{"username":"alice","password":"%s"}'
                                   % PASSWORD.encode())
        assert response.status_code == 415, response.text
        assert response.json()["error"] == "unsupported_type"
        assert "kiln_token" not in response.cookies
        ok = await http.post("/api/auth/login", json={"username": "alice", "password": PASSWORD},
                             headers={"Content-Type": "Application/JSON; charset=utf-8"})
        assert ok.status_code == 200
