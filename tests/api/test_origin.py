"""Cross-site request forgery: a state-changing request with the cookie, sent by another site's
page, is refused with 403 `cross_origin`; the page itself, KILN_ALLOWED_ORIGINS, the CLI and
curl (no Origin) and Bearer clients are not."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from auth.origin import normal_origin
from tests.conftest import make_settings
from tests.live import LiveServer, ServerFactory
from tests.users import add_user

pytestmark = pytest.mark.chaos  # an attack or fault scenario (pytest -m chaos)

PASSWORD = "correct horse battery"
TRIANGLE = b"v 0 0 0\nv 1 0 0\nv 0 1 0\nf 1 2 3\n"
ALLOWED = "https://app.example.com"
EVIL = "https://evil.example"


@pytest.fixture
def server(redis_url: str, tmp_path: Path, live_server_factory: ServerFactory) -> LiveServer:
    return live_server_factory(make_settings(redis_url, tmp_path / "data",
                                             allowed_origins=(ALLOWED,)))


@pytest.fixture
async def cookie_client(server: LiveServer, redis_url: str) -> AsyncIterator[httpx.AsyncClient]:
    """A browser-like client: signed in, carrying only the session cookie."""
    await add_user(redis_url, "alice", PASSWORD)
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
        signed_in = await http.post("/api/auth/login",
                                    json={"username": "alice", "password": PASSWORD})
        assert signed_in.status_code == 200, signed_in.text
        yield http


def _assert_cross_origin(response: httpx.Response) -> None:
    assert response.status_code == 403, response.text
    assert response.json()["error"] == "cross_origin"


async def _upload(http: httpx.AsyncClient, headers: dict[str, str]) -> httpx.Response:
    return await http.post("/api/uploads", files=[("file", ("tri.obj", TRIANGLE))],
                           headers=headers)


async def test_another_sites_page_cannot_upload_with_the_cookie(
        server: LiveServer, cookie_client: httpx.AsyncClient) -> None:
    for headers in ({"Origin": EVIL}, {"Origin": "null"}, {"Sec-Fetch-Site": "cross-site"},
                    {"Sec-Fetch-Site": "same-site"}, {"Origin": server.url + ".evil.example"}):
        _assert_cross_origin(await _upload(cookie_client, headers))
    tasks = (await cookie_client.get("/api/tasks")).json()
    assert tasks["tasks"] == [], "a refused upload created a task"


async def test_the_page_the_allowed_origins_and_curl_may(
        server: LiveServer, cookie_client: httpx.AsyncClient) -> None:
    own = server.url
    for headers in ({"Origin": own, "Sec-Fetch-Site": "same-origin"}, {"Origin": own + "/"},
                    {"Origin": ALLOWED}, {"Origin": ALLOWED.upper() + ":443"},
                    {"Sec-Fetch-Site": "same-origin"}, {"Sec-Fetch-Site": "none"}, {}):
        response = await _upload(cookie_client, headers)
        assert response.status_code == 202, (headers, response.text)


async def test_cancel_retry_and_sign_out_are_checked_too(
        server: LiveServer, cookie_client: httpx.AsyncClient) -> None:
    uploaded = await _upload(cookie_client, {"Origin": server.url})
    task_id = uploaded.json()["tasks"][0]["task_id"]
    for path in (f"/api/tasks/{task_id}/cancel", f"/api/tasks/{task_id}/retry",
                 "/api/auth/logout", "/api/auth/refresh"):
        _assert_cross_origin(await cookie_client.post(path, headers={"Origin": EVIL}))
    # the session survived every forged request
    assert (await cookie_client.get("/api/auth/me")).status_code == 200


async def test_a_cross_site_sign_in_is_refused(server: LiveServer, redis_url: str) -> None:
    """Login CSRF: another site signing the browser in to the attacker's account."""
    await add_user(redis_url, "mallory", PASSWORD)
    async with httpx.AsyncClient(base_url=server.url) as http:
        forged = await http.post("/api/auth/login", headers={"Origin": EVIL},
                                 json={"username": "mallory", "password": PASSWORD})
        _assert_cross_origin(forged)
        assert "kiln_token" not in forged.cookies


async def test_a_bearer_client_is_not_a_forgery(server: LiveServer, redis_url: str) -> None:
    """A page of another origin cannot set Authorization without a CORS preflight, which Kiln
    never grants; so a request carrying it was not forged by a browser."""
    await add_user(redis_url, "alice", PASSWORD)
    async with httpx.AsyncClient(base_url=server.url) as http:
        token = (await http.post("/api/auth/login",
                                 json={"username": "alice", "password": PASSWORD})
                 ).json()["access_token"]
        http.cookies.clear()
        response = await _upload(http, {"Origin": EVIL, "Authorization": f"Bearer {token}"})
        assert response.status_code == 202, response.text


@pytest.mark.parametrize("raw,normal", [
    ("HTTPS://App.Example.com/", "https://app.example.com"),
    ("https://app.example.com:443", "https://app.example.com"),
    ("http://app.example.com:80", "http://app.example.com"),
    ("http://app.example.com:8080", "http://app.example.com:8080"),
    ("https://[::1]:443", "https://[::1]"),
    ("null", "null"),
])
def test_origins_compare_in_their_normal_form(raw: str, normal: str) -> None:
    assert normal_origin(raw) == normal


@pytest.mark.parametrize("origin", [EVIL, ALLOWED, "null"])
async def test_no_reply_grants_another_origin_cors(cookie_client: httpx.AsyncClient,
                                                   origin: str) -> None:
    """RELIABILITY E5: with the cookie and a foreign Origin, no answer (a read, a refused write, a
    preflight) carries Access-Control-Allow-Origin, so another site's page can never read one;
    KILN_ALLOWED_ORIGINS only lets that origin's writes through, it grants no reading."""
    assert cookie_client.cookies, "the client should carry the session cookie"
    preflight = {"Origin": origin, "Access-Control-Request-Method": "POST",
                 "Access-Control-Request-Headers": "authorization, content-type"}
    replies = [
        await cookie_client.get("/api/tasks", headers={"Origin": origin}),
        await cookie_client.get("/api/auth/me", headers={"Origin": origin}),
        await _upload(cookie_client, {"Origin": origin, "Sec-Fetch-Site": "cross-site"}),
        await cookie_client.options("/api/uploads", headers=preflight),
        await cookie_client.options("/api/tasks", headers=preflight),
    ]
    for reply in replies:
        granted = {k: v for k, v in reply.headers.items() if k.startswith("access-control-")}
        assert granted == {}, f"{reply.request.method} {reply.request.url.path}: {granted}"
    assert replies[0].status_code == 200  # the read itself works: only its sharing is refused
