"""No credential in the access log (RELIABILITY E4): `kiln serve` runs uvicorn with its access log
on (it logs each request's path and query string); a session driven entirely by its cookies —
sign in, upload, follow the stream, refresh, sign out — leaves neither its access tokens nor its
refresh secrets anywhere in the server's output."""

from __future__ import annotations

import re

import httpx

from auth.backend import COOKIE_NAME
from auth.refresh import COOKIE_NAME as REFRESH_COOKIE
from tests.chaos.processes import Processes
from tests.chaos.session import CUBE, PASSWORD
from tests.client import parse_sse
from tests.users import add_user

FAST = {"mesh": "tests.helpers.pipelines:steps", "texture": "tests.helpers.pipelines:steps"}
ACCESS_LINE = re.compile(r'"(GET|POST) (/\S*) HTTP/1\.1" (\d{3})')
"""uvicorn's access log line: `127.0.0.1:port - "GET /path?query HTTP/1.1" 200`."""


def _secrets(response: httpx.Response) -> list[str]:
    """The access token (body and cookie) and the refresh cookie, and its secret part."""
    found = [str(response.json()["access_token"])]
    for header in response.headers.get_list("set-cookie"):
        name, _, rest = header.partition("=")
        value = rest.split(";", 1)[0]
        if name in (COOKIE_NAME, REFRESH_COOKIE) and value:
            found.append(value)
            if name == REFRESH_COOKIE:
                found.append(value.partition(".")[2])
    return found


async def test_no_token_in_the_access_log(processes: Processes, redis_url: str) -> None:
    web = processes.serve(pipelines=FAST)
    await web.ready()
    await add_user(redis_url, "alice", PASSWORD)
    async with httpx.AsyncClient(base_url=web.url, timeout=20) as http:
        login = await http.post("/api/auth/login",
                                json={"username": "alice", "password": PASSWORD})
        assert login.status_code == 200, login.text
        secrets = _secrets(login)
        refresh_cookie = login.cookies[REFRESH_COOKIE]
        cookie = {"Cookie": f"{COOKIE_NAME}={login.json()['access_token']}"}

        upload = await http.post("/api/uploads", files=[("file", ("cube.obj", CUBE))],
                                 headers=cookie)
        assert upload.status_code == 202, upload.text
        (task,) = [t["task_id"] for t in upload.json()["tasks"]]
        async with http.stream("GET", "/api/events", headers={**cookie, "Last-Event-ID": "0"},
                               params={"scope": "session"}) as stream:
            assert stream.status_code == 200
            async for event in parse_sse(stream.aiter_lines()):
                if event.event == "task" and event.data.get("task_id") == task and (
                        event.data["state"] == "SUCCESS"):
                    break

        renewed = await http.post(
            "/api/auth/refresh", headers={"Cookie": f"{REFRESH_COOKIE}={refresh_cookie}"})
        assert renewed.status_code == 200, renewed.text
        secrets += _secrets(renewed)
        tasks = await http.get("/api/tasks", params={"scope": "session"}, headers={
            "Cookie": f"{COOKIE_NAME}={renewed.json()['access_token']}"})
        assert tasks.status_code == 200, tasks.text
        ended = await http.post("/api/auth/logout", headers={
            "Cookie": f"{REFRESH_COOKIE}={renewed.cookies[REFRESH_COOKIE]}"})
        assert ended.status_code in (200, 204), ended.text

    log = web.log_text()
    logged = {(m[0], m[1].split("?", 1)[0]) for m in ACCESS_LINE.findall(log)}
    # the access log is on: if it were not, this test would prove nothing about it
    assert {("POST", "/api/auth/login"), ("POST", "/api/uploads"), ("GET", "/api/events"),
            ("POST", "/api/auth/refresh")} <= logged, f"no access log lines found:\n{log[-2000:]}"
    assert len(set(secrets)) >= 5, secrets
    leaked = [s[:12] + "…" for s in secrets if s in log]
    assert not leaked, f"credentials in the server's log: {leaked}"
