"""An upload slower than KILN_UPLOAD_MIN_RATE for KILN_UPLOAD_RATE_GRACE: cut, parts removed."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from api.multipart import UploadTooSlow, paced
from tests.client import KilnClient
from tests.conftest import make_settings
from tests.live import LiveServer, ServerFactory
from tests.raw_http import connect, read_response
from tests.users import add_user

pytestmark = pytest.mark.chaos  # an attack or fault scenario (pytest -m chaos)

GRACE = 1.0
BOUNDARY = "kilnslow"


@pytest.fixture
def slow_server(redis_url: str, tmp_path: Path, live_server_factory: ServerFactory) -> LiveServer:
    # the head deadline is shorter than the grace: a slow *body* must not be cut by it
    settings = make_settings(redis_url, tmp_path / "data", embedded_worker=False,
                             upload_min_rate=1024, upload_rate_grace=GRACE, header_timeout=0.5)
    return live_server_factory(settings)


def _incoming(server: LiveServer) -> list[Path]:
    directory = server.settings.data_dir / "incoming"
    return [p for p in directory.rglob("*") if p.is_file()] if directory.exists() else []


async def _start_upload(server: LiveServer, redis_url: str
                        ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    await add_user(redis_url, "alice")
    async with KilnClient(server.url) as client:
        await client.login("alice", "correct horse battery")
        token = client.token
    reader, writer = await connect(server.url)
    part = (f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; "
            "filename=\"slow.obj\"\r\nContent-Type: application/octet-stream\r\n\r\n"
            "v 0 0 0\n").encode()
    writer.write(
        f"POST /api/uploads HTTP/1.1\r\nHost: kiln.test\r\nAuthorization: Bearer {token}\r\n"
        f"Content-Type: multipart/form-data; boundary={BOUNDARY}\r\n"
        f"Content-Length: {10 * 1024 * 1024}\r\n\r\n".encode() + part)
    for _ in range(250):  # up to 5 s for the part's file to appear: it exists before the cut
        if _incoming(server):
            break
        await asyncio.sleep(0.02)
    else:
        raise AssertionError("the upload's part never reached var/incoming")
    return reader, writer


@pytest.mark.chaos
@pytest.mark.parametrize("bytes_per_tick", [0, 40])  # stalled; 400 bytes/s, under the 1024
async def test_a_slow_upload_body_is_cut_with_408_and_its_part_removed(
        slow_server: LiveServer, redis_url: str, bytes_per_tick: int) -> None:
    started = time.monotonic()
    reader, writer = await _start_upload(slow_server, redis_url)

    async def trickle() -> None:
        while bytes_per_tick:
            writer.write(b"v 1 1 1\n"[:1] * bytes_per_tick)
            await asyncio.sleep(0.1)  # the client's pace, not a wait for the server

    trickler = asyncio.create_task(trickle())
    try:
        async with asyncio.timeout(GRACE * 4):
            response = await read_response(reader)
            assert await reader.read() == b""  # and the connection is closed
    finally:
        trickler.cancel()
        writer.close()
    assert response.status == 408
    assert response.json()["error"] == "upload_too_slow"
    assert time.monotonic() - started >= GRACE
    assert _incoming(slow_server) == []


async def _chunks(size: int, every: float, count: int) -> AsyncIterator[bytes]:
    for _ in range(count):
        await asyncio.sleep(every)  # a client sending `size` bytes every `every` seconds
        yield b"x" * size


async def test_a_body_above_the_minimum_rate_is_never_cut() -> None:
    # 2000 bytes/s against a minimum of 1024 with a 0.3 s grace, for 1.5 s
    received = [len(c) async for c in paced(_chunks(200, 0.1, 15), 1024, 0.3)]
    assert sum(received) == 3000


async def test_a_fast_start_does_not_pay_for_a_later_stall() -> None:
    async def burst_then_stall() -> AsyncIterator[bytes]:
        yield b"x" * 1024 * 1024  # a thousand seconds' worth at the minimum rate
        await asyncio.Event().wait()
        yield b""

    started = asyncio.get_running_loop().time()
    with pytest.raises(UploadTooSlow):
        async for _ in paced(burst_then_stall(), 1024, 0.3):
            pass
    assert asyncio.get_running_loop().time() - started < 1.0
