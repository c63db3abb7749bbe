"""The refresh cookie over HTTP: a session outlives its expired access token, and only once."""

from __future__ import annotations

import time
from collections.abc import Callable
from http.cookies import Morsel, SimpleCookie
from pathlib import Path

import httpx
import pytest
from redis.asyncio import Redis

from auth.tokens import TokenService
from records import keys
from settings import Settings, SettingsError
from tests.conftest import TEST_SECRET, make_settings
from tests.live import LiveServer
from tests.users import add_user

PASSWORD = "correct horse battery"


def _set_cookies(response: httpx.Response) -> dict[str, Morsel[str]]:
    found: dict[str, Morsel[str]] = {}
    for header in response.headers.get_list("set-cookie"):
        jar: SimpleCookie = SimpleCookie()
        jar.load(header)
        found.update(jar)
    return found


async def _login(base_url: str) -> httpx.Response:
    async with httpx.AsyncClient(base_url=base_url) as http:
        response = await http.post("/api/auth/login",
                                   json={"username": "alice", "password": PASSWORD})
    assert response.status_code == 200, response.text
    return response


def _refresh_cookie(response: httpx.Response) -> str:
    return _set_cookies(response)["kiln_refresh"].value


async def _post(base_url: str, path: str, *, refresh: str | None = None,
                token: str | None = None) -> httpx.Response:
    """One request with exactly these credentials: no cookie jar carried between calls."""
    headers = {}
    if refresh is not None:
        headers["Cookie"] = f"kiln_refresh={refresh}"
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    async with httpx.AsyncClient(base_url=base_url) as http:
        return await http.post(path, headers=headers)


async def _me(base_url: str, token: str) -> httpx.Response:
    async with httpx.AsyncClient(base_url=base_url) as http:
        return await http.get("/api/auth/me", headers={"Authorization": f"Bearer {token}"})


def _assert_session_expired(response: httpx.Response) -> None:
    assert response.status_code == 401, response.text
    assert response.json()["error"] == "session_expired"
    assert "sign in again" in response.json()["message"]


def _expired_token(user_id: str, session_id: str) -> str:
    now = int(time.time())
    return TokenService(TEST_SECRET, 60, clock=lambda: now - 3600).issue(user_id, session_id).token


@pytest.fixture
def no_grace(redis_url: str, tmp_path: Path,
             live_server_factory: Callable[..., LiveServer]) -> LiveServer:
    """A server where a rotated secret is refused at once (no two-tab grace)."""
    return live_server_factory(make_settings(redis_url, tmp_path / "data", refresh_grace=0.0))


async def test_login_sets_a_strict_httponly_refresh_cookie_for_auth_routes_only(
        live_server: LiveServer, redis_url: str) -> None:
    await add_user(redis_url, "alice")
    response = await _login(live_server.url)
    cookies = _set_cookies(response)
    refresh, access = cookies["kiln_refresh"], cookies["kiln_token"]
    assert refresh["path"] == "/api/auth" and access["path"] == "/"
    assert refresh["httponly"] and refresh["samesite"].lower() == "strict"
    assert not refresh["secure"]
    assert int(refresh["max-age"]) == 604800 and int(access["max-age"]) == 900
    assert access.value == response.json()["access_token"] != refresh.value
    assert set(response.json()) == {"access_token", "token_type", "expires_in"}
    # Redis holds the session's record, with the session's lifetime and without the secret
    session_id, _, secret = refresh.value.partition(".")
    redis = Redis.from_url(redis_url)
    try:
        record = await redis.hgetall(keys.refresh_session(session_id))
        ttl = await redis.ttl(keys.refresh_session(session_id))
        dump = b" ".join([*record.keys(), *record.values()])
    finally:
        await redis.aclose()
    assert record and 604700 < ttl <= 604800
    assert secret.encode() not in dump


async def test_secure_refresh_cookie_when_cookies_are_secure(
        redis_url: str, tmp_path: Path, live_server_factory: Callable[..., LiveServer]) -> None:
    server = live_server_factory(make_settings(redis_url, tmp_path / "data", cookie_secure=True))
    await add_user(redis_url, "alice")
    assert _set_cookies(await _login(server.url))["kiln_refresh"]["secure"]


@pytest.mark.parametrize("stale", ["no_token", "expired_bearer"])
async def test_an_expired_access_token_is_renewed_for_the_same_session(
        live_server: LiveServer, redis_url: str, stale: str) -> None:
    user = await add_user(redis_url, "alice")
    login = await _login(live_server.url)
    before = (await _me(live_server.url, login.json()["access_token"])).json()
    old_refresh = _refresh_cookie(login)
    token = _expired_token(user.id, before["session_id"]) if stale == "expired_bearer" else None
    if token is not None:
        assert (await _me(live_server.url, token)).status_code == 401

    renewed = await _post(live_server.url, "/api/auth/refresh", refresh=old_refresh, token=token)
    assert renewed.status_code == 200, renewed.text
    assert renewed.headers["cache-control"] == "no-store"
    body = renewed.json()
    assert body["token_type"] == "bearer" and body["expires_in"] == 900
    cookies = _set_cookies(renewed)
    assert cookies["kiln_token"].value == body["access_token"]
    assert cookies["kiln_refresh"]["path"] == "/api/auth"
    assert cookies["kiln_refresh"].value != old_refresh
    after = (await _me(live_server.url, body["access_token"])).json()
    assert after["session_id"] == before["session_id"]
    assert after["user_id"] == before["user_id"] == user.id
    # and the rotated secret renews again, on and on
    again = await _post(live_server.url, "/api/auth/refresh", refresh=_refresh_cookie(renewed))
    assert again.status_code == 200
    assert (await _me(live_server.url, again.json()["access_token"])).json()["session_id"] == \
        before["session_id"]


@pytest.mark.chaos  # issue 9: a session ended by reuse stays dead
async def test_a_rotated_secret_is_refused_and_its_reuse_ends_the_session(
        no_grace: LiveServer, redis_url: str) -> None:
    await add_user(redis_url, "alice")
    first = _refresh_cookie(await _login(no_grace.url))
    renewed = await _post(no_grace.url, "/api/auth/refresh", refresh=first)
    assert renewed.status_code == 200
    second = _refresh_cookie(renewed)
    _assert_session_expired(await _post(no_grace.url, "/api/auth/refresh", refresh=first))
    # a rotated secret in use means a copy exists: the whole credential is gone
    _assert_session_expired(await _post(no_grace.url, "/api/auth/refresh", refresh=second))


async def test_two_tabs_refreshing_at_once_both_get_a_token(live_server: LiveServer,
                                                           redis_url: str) -> None:
    await add_user(redis_url, "alice")
    login = await _login(live_server.url)
    session_id = (await _me(live_server.url, login.json()["access_token"])).json()["session_id"]
    first = _refresh_cookie(login)
    tab_a = await _post(live_server.url, "/api/auth/refresh", refresh=first)
    tab_b = await _post(live_server.url, "/api/auth/refresh", refresh=first)  # within the grace
    assert tab_a.status_code == tab_b.status_code == 200
    assert "kiln_refresh" not in _set_cookies(tab_b)  # the browser keeps tab A's new secret
    for response in (tab_a, tab_b):
        me = await _me(live_server.url, response.json()["access_token"])
        assert me.json()["session_id"] == session_id
    assert (await _post(live_server.url, "/api/auth/refresh",
                        refresh=_refresh_cookie(tab_a))).status_code == 200


async def test_refresh_with_a_valid_token_rotates_the_refresh_secret(
        no_grace: LiveServer, redis_url: str) -> None:
    await add_user(redis_url, "alice")
    login = await _login(no_grace.url)
    old_token, old_refresh = login.json()["access_token"], _refresh_cookie(login)
    renewed = await _post(no_grace.url, "/api/auth/refresh", refresh=old_refresh,
                          token=old_token)
    assert renewed.status_code == 200
    assert (await _me(no_grace.url, old_token)).status_code == 401
    new_refresh = _refresh_cookie(renewed)
    assert new_refresh != old_refresh
    _assert_session_expired(await _post(no_grace.url, "/api/auth/refresh", refresh=old_refresh))


@pytest.mark.parametrize("cookie", [
    "garbage", "", "AAAAAAAAAAAAAAAAAAAAAA.BBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBB",
    "a*b.BBBBBBBBBBBBBBBBBBBBBBBBBBBBBB", "x" * 5000, "right_session.wrong_secret_of_the_session",
])
async def test_unknown_refresh_cookies_are_refused(live_server: LiveServer, redis_url: str,
                                                   cookie: str) -> None:
    await add_user(redis_url, "alice")
    good = _refresh_cookie(await _login(live_server.url))
    if cookie.startswith("right_session."):
        cookie = good.partition(".")[0] + ".wrong_secret_of_the_session"
    refused = await _post(live_server.url, "/api/auth/refresh", refresh=cookie)
    _assert_session_expired(refused)
    assert "kiln_refresh" not in _set_cookies(refused)
    _assert_session_expired(await _post(live_server.url, "/api/auth/refresh"))
    # a wrong guess does not end the real session
    assert (await _post(live_server.url, "/api/auth/refresh", refresh=good)).status_code == 200


async def test_logout_ends_the_refresh_credential_and_clears_both_cookies(
        live_server: LiveServer, redis_url: str) -> None:
    await add_user(redis_url, "alice")
    login = await _login(live_server.url)
    refresh = _refresh_cookie(login)
    out = await _post(live_server.url, "/api/auth/logout", refresh=refresh,
                      token=login.json()["access_token"])
    assert out.status_code == 204
    cleared = _set_cookies(out)
    assert cleared["kiln_token"]["path"] == "/" and cleared["kiln_refresh"]["path"] == "/api/auth"
    assert all(int(cleared[name]["max-age"]) == 0 for name in ("kiln_token", "kiln_refresh"))
    _assert_session_expired(await _post(live_server.url, "/api/auth/refresh", refresh=refresh))
    redis = Redis.from_url(redis_url)
    try:
        assert not await redis.exists(keys.refresh_session(refresh.partition(".")[0]))
    finally:
        await redis.aclose()


async def test_logout_with_only_the_refresh_cookie(live_server: LiveServer,
                                                   redis_url: str) -> None:
    user = await add_user(redis_url, "alice")
    refresh = _refresh_cookie(await _login(live_server.url))
    expired = _expired_token(user.id, refresh.partition(".")[0])
    out = await _post(live_server.url, "/api/auth/logout", refresh=refresh, token=expired)
    assert out.status_code == 204
    assert set(_set_cookies(out)) == {"kiln_token", "kiln_refresh"}
    _assert_session_expired(await _post(live_server.url, "/api/auth/refresh", refresh=refresh))
    _assert_session_expired(await _post(live_server.url, "/api/auth/logout", refresh=refresh))
    _assert_session_expired(await _post(live_server.url, "/api/auth/logout", refresh="garbage"))


async def test_a_deleted_user_cannot_refresh(live_server: LiveServer, redis_url: str) -> None:
    user = await add_user(redis_url, "alice")
    refresh = _refresh_cookie(await _login(live_server.url))
    redis = Redis.from_url(redis_url)
    try:
        await redis.delete(keys.user(user.id))
        _assert_session_expired(await _post(live_server.url, "/api/auth/refresh",
                                            refresh=refresh))
        assert not await redis.exists(keys.refresh_session(refresh.partition(".")[0]))
    finally:
        await redis.aclose()


def test_session_ttl_setting(tmp_path: Path) -> None:
    base = {"KILN_DATA_DIR": str(tmp_path), "KILN_JWT_SECRET": TEST_SECRET}
    default = Settings.from_env(base)
    assert default.session_ttl == 604800 and default.refresh_grace == 10.0
    custom = Settings.from_env({**base, "KILN_SESSION_TTL": "3600", "KILN_REFRESH_GRACE": "0"})
    assert custom.session_ttl == 3600 and custom.refresh_grace == 0.0
    with pytest.raises(SettingsError, match="KILN_SESSION_TTL"):
        Settings.from_env({**base, "KILN_SESSION_TTL": "30"})
    with pytest.raises(SettingsError, match="KILN_TOKEN_TTL"):
        Settings.from_env({**base, "KILN_SESSION_TTL": "600", "KILN_TOKEN_TTL": "900"})
    with pytest.raises(SettingsError, match="KILN_REFRESH_GRACE"):
        Settings.from_env({**base, "KILN_REFRESH_GRACE": "-1"})


@pytest.mark.chaos  # issue 9: a session ended by reuse stays dead
async def test_a_session_ended_by_reuse_stays_dead_for_its_access_tokens(
        no_grace: LiveServer, redis_url: str) -> None:
    await add_user(redis_url, "alice")
    login = await _login(no_grace.url)
    token, first = login.json()["access_token"], _refresh_cookie(login)
    session_id = (await _me(no_grace.url, token)).json()["session_id"]
    assert (await _post(no_grace.url, "/api/auth/refresh", refresh=first)).status_code == 200
    _assert_session_expired(await _post(no_grace.url, "/api/auth/refresh", refresh=first))

    # the access token issued before the reuse, still within its lifetime, cannot revive it
    bearer_only = await _post(no_grace.url, "/api/auth/refresh", token=token)
    _assert_session_expired(bearer_only)
    assert "kiln_refresh" not in _set_cookies(bearer_only)
    assert (await _me(no_grace.url, token)).status_code == 401
    client = Redis.from_url(redis_url)
    try:
        assert not await client.exists(keys.refresh_session(session_id))
    finally:
        await client.aclose()


@pytest.mark.chaos  # issue 9: a session ended by reuse stays dead
async def test_an_access_token_alone_never_starts_a_refresh_record(
        live_server: LiveServer, redis_url: str) -> None:
    await add_user(redis_url, "alice")
    token = (await _login(live_server.url)).json()["access_token"]
    session_id = (await _me(live_server.url, token)).json()["session_id"]
    client = Redis.from_url(redis_url)
    try:
        await client.delete(keys.refresh_session(session_id))  # the record is gone (expired)
        refused = await _post(live_server.url, "/api/auth/refresh", token=token)
        _assert_session_expired(refused)
        assert "kiln_refresh" not in _set_cookies(refused)
        assert not await client.exists(keys.refresh_session(session_id))
    finally:
        await client.aclose()
