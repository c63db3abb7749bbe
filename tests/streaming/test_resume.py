"""Reconnecting with Last-Event-ID while tasks run loses nothing and repeats nothing."""

from __future__ import annotations

import json
from pathlib import Path

import jwt
import pytest
from redis.asyncio import Redis

from records import keys
from tests.client import Event, KilnClient, collect, terminal_for
from tests.conftest import corpus, make_settings
from tests.live import LiveServer, ServerFactory
from tests.users import add_user

BUSY = {"mesh": "tests.helpers.pipelines:steps", "texture": "tests.helpers.pipelines:steps"}


@pytest.fixture
def busy_server(redis_url: str, tmp_path: Path, live_server_factory: ServerFactory) -> LiveServer:
    settings = make_settings(redis_url, tmp_path / "data", progress_hz=50.0)
    return live_server_factory(settings, pipelines=BUSY)


async def test_reconnecting_mid_run_is_lossless(busy_server: LiveServer, redis_url: str) -> None:
    await add_user(redis_url, "alice")
    async with KilnClient(busy_server.url) as client:
        login = await client.login("alice", "correct horse battery")
        stream = client.events()
        received: list[Event] = await collect(stream, lambda ev: len(ev) >= 1)
        body = (await client.upload(corpus("OBJ/box.obj"), corpus("PLY/cube.ply"),
                                    corpus("Collada/duckCM.tga"))).json()
        ids = [t["task_id"] for t in body["tasks"]]
        done = terminal_for(ids)
        # drop the connection three times while the tasks run, resuming from the last id seen
        for cut in (5, 15, 25):
            received += await collect(stream, lambda ev, n=cut: len(ev) >= n)  # type: ignore[misc]
            await stream.aclose()
            if done(received):
                break
            stream = client.events(last_event_id=received[-1].id)
        if not done(received):
            received += await collect(stream, lambda ev: done(received + ev))
        await stream.aclose()

    task_events = [e for e in received if e.event == "task"]
    seqs = [e.id for e in task_events]
    assert received[0].event == "snapshot" and received[0].id == 0
    assert seqs == list(range(1, len(seqs) + 1)), "a gap or a duplicate in the sequence"
    assert len(seqs) > 40  # the busy pipelines really did report a lot

    sid = jwt.decode(login["access_token"], options={"verify_signature": False})["sid"]
    redis = Redis.from_url(redis_url)
    logged = await redis.xrange(keys.session_stream(sid).log)
    await redis.aclose()
    assert [json.loads(fields[b"e"]) for _, fields in logged][:len(task_events)] == \
        [e.data for e in task_events]
    for tid in ids:
        terminal = [e for e in task_events if e.data["task_id"] == tid
                    and e.data["state"] in ("SUCCESS", "FAILURE", "REVOKED")]
        assert len(terminal) == 1


async def test_unknown_or_trimmed_cursor_starts_with_a_snapshot(busy_server: LiveServer,
                                                                redis_url: str) -> None:
    await add_user(redis_url, "alice")
    async with KilnClient(busy_server.url) as client:
        login = await client.login("alice", "correct horse battery")
        tid = (await client.upload(corpus("OBJ/box.obj"))).json()["tasks"][0]["task_id"]
        # the last event: its batch's, after its SUCCESS
        events = await collect(client.events(), lambda ev: ev[-1].event == "batch", skip=())
        last = events[-1].id
        assert last is not None

        async def first_event(**kw: object) -> Event:
            stream = client.events(**kw)  # type: ignore[arg-type]
            try:
                return (await collect(stream, lambda ev: len(ev) >= 1))[0]
            finally:
                await stream.aclose()

        for kw in ({"last_event_id": 10**9}, {"last_event_id": "junk"},
                   {"params": {"last_event_id": "-4"}}):
            snapshot = await first_event(**kw)
            assert snapshot.event == "snapshot", kw
            assert snapshot.id == last
            assert [(t["task_id"], t["state"]) for t in snapshot.data["tasks"]] == \
                [(tid, "SUCCESS")]

        # a first connect may carry its cursor in the query: nothing missed, nothing repeated
        replay = client.events(params={"last_event_id": str(last - 2)})
        replayed = await collect(replay, lambda ev: len(ev) >= 2, skip=())
        await replay.aclose()
        assert [e.id for e in replayed] == [last - 1, last]

        # the log lost its oldest entries: a cursor from before them cannot be replayed
        sid = jwt.decode(login["access_token"], options={"verify_signature": False})["sid"]
        redis = Redis.from_url(redis_url)
        # exactly: an approximate trim keeps whole stream nodes, so where it cuts depends on sizes
        await redis.xtrim(keys.session_stream(sid).log, minid=f"{last - 1}-0",
                          approximate=False)
        await redis.aclose()
        assert (await first_event(last_event_id=1)).event == "snapshot"
        assert (await first_event(last_event_id=last - 2)).event == "task"
