"""Two users never see each other's tasks or events; odd ids cannot widen a subscription."""

from __future__ import annotations

import asyncio

import pytest
from redis.asyncio import Redis

from records import keys
from records.events import EventWriter, Guard, TaskIdentity, TaskState
from settings import Settings
from streaming.hub import Hub
from tests.client import KilnClient, collect, terminal_for
from tests.conftest import corpus
from tests.live import LiveServer
from tests.users import add_user

pytestmark = pytest.mark.chaos  # an attack or fault scenario (pytest -m chaos)


async def test_another_users_task_is_404_everywhere(live_server: LiveServer,
                                                    redis_url: str) -> None:
    await add_user(redis_url, "alice")
    await add_user(redis_url, "bob")
    async with KilnClient(live_server.url) as alice, KilnClient(live_server.url) as bob:
        await alice.login("alice", "correct horse battery")
        await bob.login("bob", "correct horse battery")
        bob_stream = bob.events()
        await collect(bob_stream, lambda ev: len(ev) >= 1)  # snapshot: subscribed from here on

        uploaded = (await alice.upload(corpus("Collada/duckCM.tga"))).json()
        tid = uploaded["tasks"][0]["task_id"]
        await collect(alice.events(scope="user"), terminal_for([tid]))

        unknown = "A" * 22
        for path in (f"/api/tasks/{tid}", f"/api/tasks/{tid}/artifacts/thumbnail.png"):
            mine, theirs, nobody = (await alice.get(path), await bob.get(path),
                                    await bob.get(path.replace(tid, unknown)))
            assert mine.status_code == 200
            if "artifacts" in path:
                assert mine.headers["content-disposition"].startswith("attachment")
                assert mine.headers["x-content-type-options"] == "nosniff"
                assert mine.content.startswith(b"\x89PNG")
            assert theirs.status_code == nobody.status_code == 404
            assert theirs.json() == nobody.json()
        for action in ("cancel", "retry"):
            theirs = await bob.post(f"/api/tasks/{tid}/{action}")
            nobody = await bob.post(f"/api/tasks/{unknown}/{action}")
            assert theirs.status_code == nobody.status_code == 404
            assert theirs.json() == nobody.json()
        listing = (await bob.get("/api/tasks")).json()
        assert listing["tasks"] == [] and listing["total"] == 0
        by_batch = (await bob.get("/api/tasks", params={"batch": uploaded["batch_id"]})).json()
        assert by_batch["tasks"] == []

        # bob's own task ends his wait; anything of alice's would have come before it
        own = (await bob.upload(corpus("OBJ/box.obj"))).json()["tasks"][0]["task_id"]
        seen = await collect(bob_stream, terminal_for([own]))
        await bob_stream.aclose()
        assert {e.data["task_id"] for e in seen} == {own}

        user_scope = await collect(bob.events(scope="user"), lambda ev: len(ev) >= 1)
        assert [t["task_id"] for t in user_scope[0].data["tasks"]] == [own]


async def test_glob_characters_in_forced_session_ids_do_not_leak(redis_url: str,
                                                                 settings: Settings) -> None:
    sessions = ["a*", "a?", "a[bc]", "a:b", "ab", "a", "ac", "*"]
    redis = Redis.from_url(redis_url)
    hub = Hub(redis, mailbox_size=100)
    writer = EventWriter(redis, settings)
    await hub.start()
    try:
        async with asyncio.TaskGroup() as group:
            listeners = {}
            stack = []
            for sid in sessions:
                cm = hub.listen(keys.session_stream(sid).channel)
                stack.append(cm)
                listeners[sid] = await cm.__aenter__()
            for index, sid in enumerate(sessions):
                who = TaskIdentity(task_id=f"t-{index}", owner=f"user{sid}", session=sid,
                                   batch="b", kind="mesh", filename="x.obj")
                group.create_task(writer.emit(who, Guard.CREATE, TaskState.PENDING, attempt=1,
                                              fields={"id": who.task_id, "owner": who.owner,
                                                      "created_ms": "1"}))
        for index, sid in enumerate(sessions):
            seq, data = await asyncio.wait_for(listeners[sid].get(), 5)
            assert seq == 1
            assert f'"task_id":"t-{index}"' in data
        # one more event, last on the single pub/sub connection: once it is here, any stray
        # copy of an earlier event would have been delivered too
        marker = TaskIdentity(task_id="marker", owner="userab", session="ab", batch="b",
                              kind="mesh", filename="x.obj")
        await writer.emit(marker, Guard.CREATE, TaskState.PENDING, attempt=1,
                          fields={"id": "marker", "owner": "userab", "created_ms": "2"})
        seq, data = await asyncio.wait_for(listeners["ab"].get(), 5)
        assert seq == 2 and '"task_id":"marker"' in data
        for sid in sessions:
            assert listeners[sid].pending == 0, sid
        for cm in stack:
            await cm.__aexit__(None, None, None)
    finally:
        await hub.close()
        await redis.aclose()


async def test_a_session_scoped_listing_holds_only_that_sessions_tasks(
    live_server: LiveServer, redis_url: str,
) -> None:
    await add_user(redis_url, "carol")
    async with KilnClient(live_server.url) as laptop, KilnClient(live_server.url) as desktop:
        await laptop.login("carol", "correct horse battery")
        await desktop.login("carol", "correct horse battery")
        here = (await laptop.upload(corpus("OBJ/box.obj"))).json()["tasks"][0]["task_id"]
        there = (await desktop.upload(corpus("OBJ/box.obj"))).json()["tasks"][0]["task_id"]
        everywhere = (await laptop.get("/api/tasks")).json()
        assert {t["task_id"] for t in everywhere["tasks"]} == {here, there}
        session = (await laptop.get("/api/tasks", params={"scope": "session"})).json()
        assert [t["task_id"] for t in session["tasks"]] == [here] and session["total"] == 1
