"""The hub: one pub/sub connection per process however many streams; slow listeners are cut off."""

from __future__ import annotations

import asyncio

import pytest
import redis as redis_sync

from streaming.hub import RESYNC, Mailbox, Overflow
from tests.client import KilnClient, collect
from tests.live import LiveServer
from tests.users import add_user

pytestmark = pytest.mark.chaos  # an attack or fault scenario (pytest -m chaos)


async def test_many_streams_share_one_pubsub_connection(live_server: LiveServer,
                                                        redis_url: str) -> None:
    await add_user(redis_url, "alice")
    await add_user(redis_url, "bob")
    streams = []
    async with KilnClient(live_server.url) as alice, KilnClient(live_server.url) as bob:
        await alice.login("alice", "correct horse battery")
        await bob.login("bob", "correct horse battery")
        for client in (alice, alice, bob, bob, alice):
            for scope in ("session", "user"):
                stream = client.events(scope=scope)
                await collect(stream, lambda ev: len(ev) >= 1)
                streams.append(stream)
        pubsub: list[dict[str, str]] = redis_sync.Redis.from_url(redis_url).client_list(
            _type="pubsub")  # type: ignore[assignment]
        assert len(pubsub) == 1
        for stream in streams:
            await stream.aclose()


async def test_a_listener_that_falls_behind_is_cut_off() -> None:
    box = Mailbox(limit=3)
    for seq in range(1, 4):
        box.put((seq, "{}"))
    assert await box.get() == (1, "{}")
    box.put((4, "{}"))
    box.put((5, "{}"))  # one more than fits: the listener is too slow
    with pytest.raises(Overflow):
        await box.get()
    box.put(RESYNC)
    with pytest.raises(Overflow):
        await box.get()


async def test_an_idle_wait_gives_none_and_an_item_as_soon_as_it_comes() -> None:
    box = Mailbox(limit=3)
    assert await box.wait(0.01) is None  # idle: time for a keepalive
    waiting = asyncio.create_task(box.wait(30))
    await asyncio.sleep(0)
    box.put((1, "{}"))
    assert await asyncio.wait_for(waiting, 5) == (1, "{}")
    box.put((2, "{}"))
    box.put((3, "{}"))
    assert [await box.wait(0), await box.wait(0), await box.wait(0)] == [(2, "{}"), (3, "{}"),
                                                                         None]


async def test_closing_a_mailbox_wakes_its_waiting_listener() -> None:
    box = Mailbox(limit=3)
    waiting = asyncio.create_task(box.get())
    await asyncio.sleep(0)
    box.close()
    with pytest.raises(Overflow):
        await asyncio.wait_for(waiting, 5)
