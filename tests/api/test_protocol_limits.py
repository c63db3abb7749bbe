"""The request head is bounded where uvicorn parses it: size, header lines, and time to arrive."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest
from starlette.types import Message, Receive, Scope, Send

from api.http_limits import HeadLimitsMiddleware
from tests.conftest import make_settings
from tests.live import LiveServer, ServerFactory
from tests.raw_http import closed_by_server, connect, exchange, read_response

pytestmark = pytest.mark.chaos  # an attack or fault scenario (pytest -m chaos)

GET = b"GET /healthz HTTP/1.1\r\nHost: kiln.test\r\n"


@pytest.fixture
def quick_server(redis_url: str, tmp_path: Path, live_server_factory: ServerFactory) -> LiveServer:
    settings = make_settings(redis_url, tmp_path / "data", embedded_worker=False,
                             header_timeout=1.0)
    return live_server_factory(settings)


def _assert_431(response: Any) -> None:
    assert response.status == 431
    assert response.headers["content-type"] == "application/json"
    assert response.json()["error"] == "headers_too_large"
    assert response.json()["message"]


@pytest.mark.chaos
async def test_a_1_mib_header_line_gets_431(live_server: LiveServer) -> None:
    line = b"X-Big: " + b"a" * (1024 * 1024) + b"\r\n"
    _assert_431(await exchange(live_server.url, GET + line + b"Connection: close\r\n\r\n"))


@pytest.mark.chaos
async def test_a_long_header_line_is_refused_before_it_ends(live_server: LiveServer) -> None:
    # 64 KiB of a line that never ends: the answer proves the server stopped at the limit instead
    # of buffering the line until its end
    _assert_431(await exchange(live_server.url, GET + b"X-Big: " + b"a" * 65536))


@pytest.mark.chaos
async def test_20000_header_lines_get_431(live_server: LiveServer) -> None:
    lines = b"".join(b"X-%d: 1\r\n" % i for i in range(20_000))
    _assert_431(await exchange(live_server.url, GET + lines + b"Connection: close\r\n\r\n"))


@pytest.mark.chaos
async def test_101_short_header_lines_get_431(live_server: LiveServer) -> None:
    lines = b"".join(b"X-%d: 1\r\n" % i for i in range(100))  # and Host: 101
    response = await exchange(live_server.url, GET + lines + b"\r\n")
    _assert_431(response)
    assert "100 header lines" in response.json()["message"]


async def test_a_head_just_within_the_limits_is_served(live_server: LiveServer) -> None:
    lines = b"".join(b"X-%02d: %s\r\n" % (i, b"v" * 150) for i in range(98))
    raw = GET + lines + b"Connection: close\r\n\r\n"
    assert 15_000 < len(raw) <= live_server.settings.max_header_bytes
    response = await exchange(live_server.url, raw)
    assert response.status == 200, response.body
    assert response.json()["status"] == "ok"


async def test_the_asgi_layer_refuses_what_a_plain_uvicorn_let_through() -> None:
    passed: list[bool] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        passed.append(True)

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)

    guard = HeadLimitsMiddleware(app)
    many: Scope = {"type": "http", "method": "GET", "path": "/", "state": {},
            "headers": [(b"x-%d" % i, b"1") for i in range(101)]}
    await guard(many, receive, send)
    big = {**many, "headers": [(b"x-big", b"a" * 16384)]}
    await guard(big, receive, send)
    assert [m["status"] for m in sent if m["type"] == "http.response.start"] == [431, 431]
    assert b'"headers_too_large"' in sent[1]["body"]
    assert passed == []
    await guard({**many, "headers": [(b"x-%d" % i, b"1") for i in range(100)]}, receive, send)
    assert passed == [True]


@pytest.mark.chaos
async def test_slowloris_connections_are_closed_at_the_head_deadline(
        quick_server: LiveServer) -> None:
    deadline = quick_server.settings.header_timeout
    opened = time.monotonic()
    trickling = [await connect(quick_server.url) for _ in range(50)]
    idle = [await connect(quick_server.url) for _ in range(10)]

    async def trickle(writer: asyncio.StreamWriter) -> None:
        writer.write(GET)
        for _ in range(40):  # one header byte every 0.1 s: four times the deadline
            writer.write(b"X")
            await asyncio.sleep(0.1)  # the attack's pace, not a wait for the server

    tricklers = [asyncio.create_task(trickle(writer)) for _, writer in trickling]
    try:
        async def closed_at(reader: asyncio.StreamReader) -> float:
            assert await closed_by_server(reader)
            return time.monotonic() - opened

        closing = [asyncio.create_task(closed_at(r)) for r, _ in trickling + idle]
        reader, writer = await connect(quick_server.url)
        started = time.monotonic()
        writer.write(GET + b"\r\n")
        response = await asyncio.wait_for(read_response(reader), 1.0)
        assert response.status == 200 and time.monotonic() - started < 1.0
        writer.close()
        async with asyncio.timeout(deadline + 2.0):
            closed = await asyncio.gather(*closing)
        assert min(closed) >= deadline * 0.9
    finally:
        for task in tricklers:
            task.cancel()
        for _, writer in trickling + idle:
            writer.close()


@pytest.mark.chaos
async def test_the_deadline_covers_the_next_request_on_a_kept_alive_connection(
        quick_server: LiveServer) -> None:
    reader, writer = await connect(quick_server.url)
    try:
        writer.write(GET + b"\r\n")
        assert (await asyncio.wait_for(read_response(reader), 5)).status == 200
        writer.write(b"GET /healthz HTTP/1.1\r\nHo")  # then nothing: uvicorn would wait forever
        started = time.monotonic()
        async with asyncio.timeout(quick_server.settings.header_timeout + 2.0):
            assert await closed_by_server(reader)
        assert time.monotonic() - started >= quick_server.settings.header_timeout * 0.9
    finally:
        writer.close()
