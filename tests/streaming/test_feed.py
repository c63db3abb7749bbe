"""A stream's feed: keepalives while idle, and an end at its deadline with no timer of its own."""

from __future__ import annotations

import asyncio

from records import keys
from services import Services


async def test_an_idle_feed_gives_keepalives_and_ends_at_its_deadline(services: Services
                                                                       ) -> None:
    loop = asyncio.get_running_loop()
    until = loop.time() + 0.35
    seen: list[str] = []
    async with asyncio.timeout(10):
        async for item in services.feed.follow(keys.session_stream("s1"), None, idle=0.1,
                                               until=until):
            seen.append("keepalive" if item is None else type(item).__name__)
    assert loop.time() >= until, "the feed ended before its deadline"
    assert seen[0] == "Snapshot" and set(seen[1:]) == {"keepalive"}, seen
    assert len(seen) - 1 <= 3, f"at most one keepalive a 0.1 s while idle: {seen}"


async def test_a_feed_past_its_deadline_ends_even_while_events_flow(services: Services) -> None:
    stream = keys.session_stream("s1")
    feed = services.feed.follow(stream, None, until=asyncio.get_running_loop().time() + 0.2)
    assert type(await anext(feed)).__name__ == "Snapshot"
    await asyncio.sleep(0.25)
    await services.redis.publish(stream.channel, b'1 {"state":"PENDING"}')
    async with asyncio.timeout(10):
        rest = [item async for item in feed]
    assert rest == [], "an event after the deadline was still sent"
