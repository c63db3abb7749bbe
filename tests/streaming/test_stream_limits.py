"""Event streams: at most KILN_SSE_PER_SESSION per session, in all processes; bad cursors safe."""

from __future__ import annotations

import asyncio
import contextlib
import time
import weakref
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import jwt
import pytest
import redis.asyncio as redis_async

from streaming.slots import StreamSlots, slots_key
from tests.client import KilnClient, parse_sse
from tests.conftest import make_settings
from tests.live import LiveServer, ServerFactory
from tests.users import add_user

pytestmark = pytest.mark.chaos  # an attack or fault scenario (pytest -m chaos)

CAP = 3


@pytest.fixture
def capped_server(redis_url: str, tmp_path: Path, live_server_factory: ServerFactory) -> LiveServer:
    settings = make_settings(redis_url, tmp_path / "data", embedded_worker=False,
                             sse_per_session=CAP, header_timeout=0.5, sse_ping=0.2)
    return live_server_factory(settings)


async def _signed_in(server: LiveServer, redis_url: str) -> KilnClient:
    with contextlib.suppress(Exception):  # the second sign-in of a test reuses the user
        await add_user(redis_url, "alice")
    client = KilnClient(server.url)
    await client.login("alice", "correct horse battery")
    return client


def _session_of(client: KilnClient) -> str:
    assert client.token is not None
    return str(jwt.decode(client.token, options={"verify_signature": False})["sid"])


@contextlib.asynccontextmanager
async def _open_stream(client: KilnClient, headers: dict[str, str] | None = None
                       ) -> AsyncIterator[httpx.Response]:
    headers = {**client.headers, **(headers or {})}
    async with client.http.stream("GET", "/api/events", headers=headers,
                                  timeout=httpx.Timeout(10)) as response:
        yield response


# Each stream's line iterator lives as long as its response: an abandoned `aiter_lines()` is
# finalised soon after, and closing it closes the connection, so the stream would end and free
# its slot while the test still counts it as open.
_lines: weakref.WeakKeyDictionary[httpx.Response, AsyncIterator[str]] = (
    weakref.WeakKeyDictionary())


async def _first_event(response: httpx.Response) -> str:
    lines = _lines.setdefault(response, response.aiter_lines())
    async with asyncio.timeout(10):
        async for event in parse_sse(lines):
            return event.event
    raise AssertionError("the stream ended before its first event")


async def _slots_in_use(redis_url: str, session_id: str) -> int:
    client = redis_async.Redis.from_url(redis_url)
    try:
        return int(await client.zcard(slots_key(session_id)))
    finally:
        await client.aclose()


@pytest.mark.chaos
async def test_one_stream_over_the_cap_gets_429_and_a_closed_one_frees_its_slot(
        capped_server: LiveServer, redis_url: str) -> None:
    client = await _signed_in(capped_server, redis_url)
    async with client, contextlib.AsyncExitStack() as streams:
        opened = [await streams.enter_async_context(_open_stream(client)) for _ in range(CAP)]
        for response in opened:
            assert response.status_code == 200
            assert await _first_event(response) == "snapshot"
        refused = await client.get("/api/events")
        assert refused.status_code == 429
        assert refused.json()["error"] == "too_many_streams"
        assert 1 <= int(refused.headers["retry-after"]) <= 30
        other = await _signed_in(capped_server, redis_url)  # another session has its own count
        async with other, _open_stream(other) as response:
            assert response.status_code == 200
        await opened[0].aclose()
        session = _session_of(client)
        for _ in range(250):  # up to 5 s for the server to see the disconnect and free the slot
            if await _slots_in_use(redis_url, session) < CAP:
                break
            await asyncio.sleep(0.02)
        else:
            raise AssertionError("the closed stream's slot was not freed")
        async with _open_stream(client) as response:
            assert response.status_code == 200


@pytest.mark.chaos
async def test_streams_of_other_processes_count_and_those_of_dead_ones_expire(
        capped_server: LiveServer, redis_url: str) -> None:
    client = await _signed_in(capped_server, redis_url)
    key = slots_key(_session_of(client))
    now = time.time()
    store = redis_async.Redis.from_url(redis_url)
    try:
        await store.zadd(key, {f"live-{i}": now + 30 for i in range(CAP - 1)})  # another process
        await store.zadd(key, {f"dead-{i}": now - 1 for i in range(10)})  # one killed long ago
    finally:
        await store.aclose()
    async with client, _open_stream(client) as response:
        assert response.status_code == 200
        refused = await client.get("/api/events")
        assert refused.status_code == 429
        assert 29 <= int(refused.headers["retry-after"]) <= 30


@pytest.mark.parametrize("cursor", ["abc", "99999999999999-0", "x" * 10_000, "-1", "1e9",
                                    "18446744073709551616", "7 7"])
async def test_a_garbage_last_event_id_starts_from_a_snapshot(
        capped_server: LiveServer, redis_url: str, cursor: str) -> None:
    client = await _signed_in(capped_server, redis_url)
    async with client, _open_stream(client, {"Last-Event-ID": cursor}) as response:
        assert response.status_code == 200
        assert await _first_event(response) == "snapshot"


async def test_a_stream_outlives_the_head_deadline(capped_server: LiveServer,
                                                   redis_url: str) -> None:
    client = await _signed_in(capped_server, redis_url)
    async with client, _open_stream(client) as response:
        assert response.status_code == 200
        ends = time.monotonic() + capped_server.settings.header_timeout * 3
        async with asyncio.timeout(10):
            async for _line in response.aiter_lines():  # pings every 0.2 s
                if time.monotonic() > ends:
                    break
        assert not response.is_closed


async def test_one_renewer_keeps_every_slot_of_the_process_alive(redis_url: str) -> None:
    client = redis_async.Redis.from_url(redis_url)
    slots = StreamSlots(client)
    try:
        taken = [await slots.take(session, CAP) for session in ("s1", "s1", "s2")]
        async with contextlib.AsyncExitStack() as holding:
            for slot in taken:
                await holding.enter_async_context(slot.held())
            renewers = [t for t in asyncio.all_tasks() if t.get_name() == "kiln-stream-slots"]
            assert len(renewers) == 1  # one for the process, not one a stream
            before = {slot.id: await client.zscore(slot.key, slot.id) for slot in taken}
            await client.zadd(slots_key("s1"), {taken[0].id: 1.0})  # as if its lease were due
            await slots.renew()
            for slot in taken:
                score = await client.zscore(slot.key, slot.id)
                assert score is not None and score >= (before[slot.id] or 0) > 1.0
            assert await client.pttl(slots_key("s2")) > 0
            # a slot given back (ZREM) while a renewal waited is not brought back by it
            await client.zrem(slots_key("s2"), taken[2].id)
            await slots.renew()
            assert await client.zscore(slots_key("s2"), taken[2].id) is None
        assert await client.zcard(slots_key("s1")) == await client.zcard(slots_key("s2")) == 0
        await slots.renew()  # nothing held: nothing written
        assert not await client.exists(slots_key("s1"), slots_key("s2"))
    finally:
        await slots.close()
        await client.aclose()


async def test_head_gets_the_stream_headers_and_no_body(capped_server: LiveServer,
                                                        redis_url: str) -> None:
    client = await _signed_in(capped_server, redis_url)
    async with client:
        response = await client.http.head("/api/events", headers=client.headers)
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["cache-control"] == "no-store"
        assert response.content == b""
        for _ in range(250):  # up to 5 s for the server to give the slot back
            if await _slots_in_use(redis_url, _session_of(client)) == 0:
                break
            await asyncio.sleep(0.02)
        else:
            raise AssertionError("HEAD kept its stream slot")


async def test_a_server_shutdown_ends_open_streams_cleanly(capped_server: LiveServer,
                                                           redis_url: str) -> None:
    client = await _signed_in(capped_server, redis_url)
    async with client, _open_stream(client) as response:
        assert await _first_event(response) == "snapshot"
        stopping = asyncio.create_task(asyncio.to_thread(capped_server.stop))
        lines = _lines[response]
        async with asyncio.timeout(30):
            # a stream cut off at the end of the grace period would raise here (a chunked body
            # without its end): the shutdown must end it with a clean end of body
            async for _line in lines:
                pass
        await stopping


async def test_a_slot_given_back_after_the_process_closed_its_slots_is_left_to_lapse(
        redis_url: str) -> None:
    client = redis_async.Redis.from_url(redis_url)
    slots = StreamSlots(client)
    try:
        slot = await slots.take("s1", CAP)
        await slots.close()  # the process is stopping: its Redis pool is about to close
        await slots.give_back(slot)
        assert await client.zscore(slot.key, slot.id) is not None, \
            "nothing is written once the slots are closed: the lease lapses by itself"
    finally:
        await client.aclose()


async def test_closing_the_slots_ends_a_renewer_that_lost_its_cancel(
        redis_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("streaming.slots.RENEW_EVERY", 0.01)
    client = redis_async.Redis.from_url(redis_url)
    slots = StreamSlots(client)
    renewing = asyncio.Event()

    async def renew_that_loses_a_cancel() -> None:
        renewing.set()
        with contextlib.suppress(asyncio.CancelledError):  # as redis-py's wait_for may
            await asyncio.Event().wait()

    monkeypatch.setattr(slots, "renew", renew_that_loses_a_cancel)
    try:
        async with (await slots.take("s1", CAP)).held():
            await asyncio.wait_for(renewing.wait(), 5)
            await asyncio.wait_for(slots.close(), 5)
    finally:
        await client.aclose()
