"""Token rules over HTTP against a live server: every refused token is a JSON 401."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time

import httpx
import jwt
import pytest
from starlette.routing import Route

from auth.tokens import TokenService
from server import build_app
from tests.client import KilnClient
from tests.conftest import TEST_SECRET
from tests.live import LiveServer
from tests.users import add_user


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _forge(header: dict[str, object], claims: dict[str, object], secret: str = TEST_SECRET,
           digest: str = "sha256") -> str:
    signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}"
    signature = hmac.new(secret.encode(), signing_input.encode(), getattr(hashlib, digest)).digest()
    return f"{signing_input}.{_b64(signature)}"


async def _claims_of(client: KilnClient) -> dict[str, object]:
    assert client.token is not None
    return dict(jwt.decode(client.token, options={"verify_signature": False}))


async def _assert_401(base_url: str, token: str) -> None:
    async with httpx.AsyncClient(base_url=base_url) as http:
        response = await http.get("/api/tasks", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 401
    assert response.json()["error"] == "unauthorized"
    assert token not in response.text


async def test_login_returns_token_and_strict_httponly_cookie(live_server: LiveServer,
                                                             redis_url: str) -> None:
    await add_user(redis_url, "alice")
    async with httpx.AsyncClient(base_url=live_server.url) as http:
        response = await http.post("/api/auth/login",
                                   json={"username": "alice", "password": "correct horse battery"})
        assert response.status_code == 200
        body = response.json()
        assert body["token_type"] == "bearer" and body["expires_in"] == 900
        cookie = response.headers["set-cookie"]
        assert "HttpOnly" in cookie and "SameSite=strict" in cookie.replace("Strict", "strict")
        assert "kiln_token=" + body["access_token"] in cookie
        # the cookie alone authenticates (what EventSource relies on)
        assert (await http.get("/api/tasks")).status_code == 200
        claims = jwt.decode(body["access_token"], options={"verify_signature": False})
        assert set(claims) == {"sub", "sid", "jti", "iat", "exp", "aud", "iss"}


async def test_wrong_password_and_unknown_user_are_the_same_401(live_server: LiveServer,
                                                                redis_url: str) -> None:
    await add_user(redis_url, "alice")
    async with httpx.AsyncClient(base_url=live_server.url) as http:
        wrong = await http.post("/api/auth/login", json={"username": "alice", "password": "nope"})
        unknown = await http.post("/api/auth/login", json={"username": "bob", "password": "nope"})
        malformed = await http.post("/api/auth/login", content=b"{not json",
                                    headers={"Content-Type": "application/json"})
    assert wrong.status_code == unknown.status_code == 401
    assert wrong.json() == unknown.json()
    assert malformed.status_code == 400 and malformed.json()["error"] == "malformed_json"


@pytest.mark.parametrize("case", ["expired", "hs512", "none", "missing_exp", "tampered",
                                  "wrong_secret", "garbage"])
async def test_refused_tokens(live_server: LiveServer, redis_url: str, case: str) -> None:
    await add_user(redis_url, "alice")
    async with KilnClient(live_server.url) as client:
        await client.login("alice", "correct horse battery")
        claims = await _claims_of(client)
    now = int(time.time())
    if case == "expired":
        past = TokenService(TEST_SECRET, 60, clock=lambda: now - 3600)
        token = past.issue(str(claims["sub"]), str(claims["sid"])).token
    elif case == "hs512":
        token = _forge({"alg": "HS512", "typ": "JWT"}, claims, digest="sha512")
    elif case == "none":
        header = _b64(json.dumps({"alg": "none", "typ": "JWT"}).encode())
        token = f"{header}.{_b64(json.dumps(claims).encode())}."
    elif case == "missing_exp":
        token = _forge({"alg": "HS256", "typ": "JWT"}, {k: v for k, v in claims.items()
                                                        if k != "exp"})
    elif case == "tampered":
        good = _forge({"alg": "HS256", "typ": "JWT"}, claims)
        head, _, signature = good.split(".")
        other = _b64(json.dumps({**claims, "sub": "someone-else"}).encode())
        token = f"{head}.{other}.{signature}"
    elif case == "wrong_secret":
        token = _forge({"alg": "HS256", "typ": "JWT"}, claims, secret="another-" + "y" * 60)
    else:
        token = "not.a.token"
    await _assert_401(live_server.url, token)


async def test_logout_and_refresh_retire_the_old_token(live_server: LiveServer,
                                                      redis_url: str) -> None:
    await add_user(redis_url, "alice")
    async with KilnClient(live_server.url) as client:
        signed_in = await client.http.post(
            "/api/auth/login", json={"username": "alice", "password": "correct horse battery"})
        refresh_cookie = signed_in.cookies["kiln_refresh"]
        first = client.token = signed_in.json()["access_token"]
        client.http.cookies.clear()
        # the refresh cookie renews; the token sent along (Bearer) is retired
        refreshed = await client.http.post(
            "/api/auth/refresh",
            headers={**client.headers, "Cookie": f"kiln_refresh={refresh_cookie}"})
        assert refreshed.status_code == 200
        second = refreshed.json()["access_token"]
        await _assert_401(live_server.url, first)
        old = jwt.decode(first, options={"verify_signature": False})
        new = jwt.decode(second, options={"verify_signature": False})
        assert old["sid"] == new["sid"] and old["jti"] != new["jti"]
        client.token = second
        assert (await client.get("/api/tasks")).status_code == 200
        assert (await client.post("/api/auth/logout")).status_code == 204
        await _assert_401(live_server.url, second)


async def test_every_api_route_requires_a_token(live_server: LiveServer) -> None:
    app = build_app(live_server.settings)
    open_paths = {"/api/auth/login", "/healthz"}
    session_paths = {"/api/auth/refresh", "/api/auth/logout"}
    checked = 0
    async with httpx.AsyncClient(base_url=live_server.url) as http:
        for route in app.routes:
            if not isinstance(route, Route) or route.path in open_paths:
                continue
            path = route.path.replace("{task_id}", "AAAAAAAAAAAAAAAAAAAAAA").replace(
                "{name}", "thumbnail.png")
            for method in sorted((route.methods or set()) - {"HEAD"}):
                response = await http.request(method, path)
                assert response.status_code == 401, (method, path, response.text)
                # refresh and logout also take the refresh cookie: without it the session is over
                expected = "session_expired" if path in session_paths else "unauthorized"
                assert response.json()["error"] == expected
                checked += 1
    assert checked >= 9
