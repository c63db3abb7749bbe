"""Faults in a child: a cancel kills it within a second; a native crash fails only its task."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.client import KilnClient, collect, live_events, terminal_for
from tests.conftest import corpus, make_settings
from tests.live import LiveServer, ServerFactory
from tests.users import add_user

pytestmark = pytest.mark.chaos  # an attack or fault scenario (pytest -m chaos)

SLOW = {"mesh": "tests.helpers.pipelines:spin_forever", "texture": "tasks.texture:describe"}
CRASHING = {"mesh": "tests.helpers.pipelines:crash", "texture": "tasks.texture:describe"}


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/status") as status:
            return "State:\tZ" not in status.read()
    except FileNotFoundError:
        return False


@pytest.fixture
def server_with(redis_url: str, tmp_path: Path,
                live_server_factory: ServerFactory) -> Callable[[dict[str, str]], LiveServer]:
    def start(pipelines: dict[str, str]) -> LiveServer:
        return live_server_factory(make_settings(redis_url, tmp_path / "data"),
                                   pipelines=pipelines)
    return start


async def test_cancelling_a_running_task_kills_its_child_within_a_second(
        server_with: Callable[[dict[str, str]], LiveServer], redis_url: str) -> None:
    server = server_with(SLOW)
    await add_user(redis_url, "alice")
    async with KilnClient(server.url) as client:
        await client.login("alice", "correct horse battery")
        stream = await live_events(client)
        tid = (await client.upload(corpus("OBJ/box.obj"))).json()["tasks"][0]["task_id"]
        await collect(stream, lambda ev: any(e.data.get("state") == "PROGRESS" for e in ev))
        pid = int((server.settings.data_dir / "tasks" / tid / "child.pid").read_text())
        assert _alive(pid)

        started = time.monotonic()
        response = await client.post(f"/api/tasks/{tid}/cancel")
        assert response.status_code == 202
        assert response.json()["state"] == "REVOKED"
        while _alive(pid):
            assert time.monotonic() - started < 1.0, "child still alive 1 s after the cancel"
            await asyncio.sleep(0.01)  # polling the kernel's view of another process

        events = await collect(stream, terminal_for([tid]))
        terminal = [e for e in events if e.data["state"] in ("SUCCESS", "FAILURE", "REVOKED")]
        assert [e.data["state"] for e in terminal] == ["REVOKED"]
        assert terminal[0].data["error"]["code"] == "cancelled"
        again = await client.post(f"/api/tasks/{tid}/cancel")
        assert again.status_code == 409
        await stream.aclose()


async def test_a_queued_task_that_is_cancelled_never_starts(
        server_with: Callable[[dict[str, str]], LiveServer], redis_url: str) -> None:
    server = server_with(SLOW)  # two slots, both taken by spinning tasks
    await add_user(redis_url, "alice")
    async with KilnClient(server.url) as client:
        await client.login("alice", "correct horse battery")
        stream = await live_events(client)
        body = (await client.upload(corpus("OBJ/box.obj"), corpus("PLY/cube.ply"),
                                    corpus("STL/Spider_ascii.stl"))).json()
        ids = [t["task_id"] for t in body["tasks"]]
        seen = await collect(stream, lambda ev: len({e.data["task_id"] for e in ev
                                                     if e.data.get("state") == "STARTED"}) == 2)
        started = {e.data["task_id"] for e in seen if e.data.get("state") == "STARTED"}
        (queued,) = set(ids) - started
        assert (await client.post(f"/api/tasks/{queued}/cancel")).status_code == 202
        for tid in started:
            assert (await client.post(f"/api/tasks/{tid}/cancel")).status_code == 202
        events = await collect(stream, terminal_for(ids))
        await stream.aclose()
        assert not any(e.data["task_id"] == queued and e.data["state"] == "STARTED"
                       for e in events)
        assert (await client.get(f"/api/tasks/{queued}")).json()["state"] == "REVOKED"


async def test_a_child_that_aborts_fails_its_task_and_nothing_else(
        server_with: Callable[[dict[str, str]], LiveServer], redis_url: str) -> None:
    server = server_with(CRASHING)
    await add_user(redis_url, "alice")
    async with KilnClient(server.url) as client:
        await client.login("alice", "correct horse battery")
        stream = await live_events(client)
        body = (await client.upload(corpus("OBJ/box.obj"), corpus("Collada/duckCM.tga"),
                                    corpus("glTF2/BoxTextured-glTF/CesiumLogoFlat.png"))).json()
        ids = {t["filename"]: t["task_id"] for t in body["tasks"]}
        events = await collect(stream, terminal_for(list(ids.values())))
        final = {e.data["task_id"]: e.data for e in events
                 if e.data["state"] in ("SUCCESS", "FAILURE")}
        assert final[ids["box.obj"]]["state"] == "FAILURE"
        assert final[ids["box.obj"]]["error"]["code"] == "parser_crashed"
        assert "SIGABRT" in final[ids["box.obj"]]["error"]["message"]
        assert final[ids["duckCM.tga"]]["state"] == "SUCCESS"
        assert final[ids["CesiumLogoFlat.png"]]["state"] == "SUCCESS"

        # the service goes on: a retry of the crashed task runs again (and crashes again)
        assert (await client.post(f"/api/tasks/{ids['box.obj']}/retry")).status_code == 202
        events = await collect(stream, terminal_for([ids["box.obj"]]))
        retried = [e.data for e in events if e.data["task_id"] == ids["box.obj"]]
        assert [d["state"] for d in retried][0] == "RETRY"
        assert retried[-1]["state"] == "FAILURE" and retried[-1]["attempt"] == 2
        await stream.aclose()
    assert os.getpid()  # the test process (which hosts the server) is still here
