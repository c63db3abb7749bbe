"""Password hashing on its own bounded pool: a flood of wrong sign-ins is refused past the pool
(503 busy, at once) and never starves the uploads of signed-in users."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx
import pytest

from auth.hasher import HasherBusy, PasswordHasher
from auth.passwords import hash_password
from tests.client import KilnClient
from tests.conftest import make_settings
from tests.live import LiveServer, ServerFactory
from tests.users import add_user

pytestmark = pytest.mark.chaos  # an attack or fault scenario (pytest -m chaos)

PASSWORD = "correct horse battery"
THREADS, WAITING = 2, 2
FLOOD = 5 * (THREADS + WAITING)
"""Wrong sign-ins kept in flight: five times what the pool holds, hashing or waiting."""
SMALL_OBJ = b"v 0 0 0\nv 1 0 0\nv 0 1 0\nf 1 2 3\n" * 25  # about 800 bytes


@pytest.fixture
def server(redis_url: str, tmp_path: Path, live_server_factory: ServerFactory) -> LiveServer:
    # the throttle off: every one of the flood reaches the hasher
    return live_server_factory(make_settings(
        redis_url, tmp_path / "data", embedded_worker=False, hash_threads=THREADS,
        hash_waiting=WAITING, login_user_failures=0, login_address_failures=0))


async def test_a_flood_of_wrong_sign_ins_never_slows_an_upload(server: LiveServer,
                                                               redis_url: str) -> None:
    await add_user(redis_url, "alice", PASSWORD)
    statuses: list[int] = []
    stop, flooding = asyncio.Event(), asyncio.Event()
    limits = httpx.Limits(max_connections=FLOOD + 5)

    async def keep_guessing(http: httpx.AsyncClient, n: int) -> None:
        while not stop.is_set():
            response = await http.post("/api/auth/login",
                                       json={"username": f"guess{n}", "password": "wrong"})
            statuses.append(response.status_code)
            if len(statuses) >= FLOOD:
                flooding.set()
            if response.status_code == 503:
                assert response.json()["error"] == "busy"
                assert int(response.headers["Retry-After"]) >= 1

    async with KilnClient(server.url) as client, httpx.AsyncClient(
            base_url=server.url, timeout=30, limits=limits) as flood:
        await client.login("alice", PASSWORD)
        guessers = [asyncio.create_task(keep_guessing(flood, n)) for n in range(FLOOD)]
        try:
            await asyncio.wait_for(flooding.wait(), 30)  # the flood is in full swing
            took = []
            for _ in range(3):
                started = time.monotonic()
                response = await client.upload(("small.obj", SMALL_OBJ))
                took.append(time.monotonic() - started)
                assert response.status_code == 202, response.text
        finally:
            stop.set()
            await asyncio.gather(*guessers)
    assert max(took) < 2.0, f"uploads took {took} beside the flood"
    assert 401 in statuses and 503 in statuses, sorted(set(statuses))
    assert set(statuses) <= {401, 503}


async def test_the_pool_refuses_past_its_threads_and_waiting_room() -> None:
    hasher = PasswordHasher(threads=1, waiting=1)
    encoded = hash_password(PASSWORD)
    try:
        checks = [asyncio.ensure_future(hasher.verify("wrong", encoded)) for _ in range(2)]
        await asyncio.sleep(0)  # both admitted: one hashing, one waiting
        assert hasher.admitted == 2
        with pytest.raises(HasherBusy):
            await hasher.verify(PASSWORD, encoded)
        assert await asyncio.gather(*checks) == [False, False]
        assert hasher.admitted == 0
        assert await hasher.verify(PASSWORD, encoded)
        assert await hasher.hash("any") != await hasher.hash("any")  # salted, never refused
    finally:
        hasher.close()
