"""End to end through a live server: upload a mesh and a texture, watch them succeed over SSE."""

from __future__ import annotations

from tests.client import Event, KilnClient, collect, terminal_for
from tests.conftest import corpus
from tests.live import LiveServer
from tests.users import add_user

STATE_ORDER = ["PENDING", "STARTED", "PROGRESS", "SUCCESS"]


def _states(events: list[Event], task_id: str) -> list[str]:
    return [e.data["state"] for e in events if e.event == "task" and e.data["task_id"] == task_id]


def _collapse(states: list[str]) -> list[str]:
    out: list[str] = []
    for s in states:
        if not out or out[-1] != s:
            out.append(s)
    return out


async def test_mesh_and_texture_stream_their_states_in_order(live_server: LiveServer,
                                                              redis_url: str) -> None:
    await add_user(redis_url, "alice")
    async with KilnClient(live_server.url) as client:
        await client.login("alice", "correct horse battery")
        stream = client.events()
        first = await collect(stream, lambda ev: len(ev) >= 1)
        assert first[0].event == "snapshot" and first[0].data["tasks"] == []

        response = await client.upload(corpus("OBJ/box.obj"), corpus("Collada/duckCM.tga"))
        assert response.status_code == 202, response.text
        body = response.json()
        by_name = {t["filename"]: t for t in body["tasks"]}
        assert by_name["box.obj"]["kind"] == "mesh"
        assert by_name["duckCM.tga"]["kind"] == "texture"

        events = await collect(stream, terminal_for([t["task_id"] for t in body["tasks"]]))
        await stream.aclose()

    ids = [e.id or 0 for e in first + events]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    for task in body["tasks"]:
        assert _collapse(_states(events, task["task_id"])) == STATE_ORDER
        for event in events:
            if event.event == "task":
                assert {"task_id", "state", "stage", "progress", "attempt", "ts"} <= set(event.data)
    mesh_done = next(e for e in events if e.data.get("task_id") == by_name["box.obj"]["task_id"]
                     and e.data["state"] == "SUCCESS")
    assert mesh_done.data["result"]["vertices"] == 8
    assert mesh_done.data["result"]["faces"] == 12
    texture_done = next(e for e in events
                        if e.data.get("task_id") == by_name["duckCM.tga"]["task_id"]
                        and e.data["state"] == "SUCCESS")
    assert texture_done.data["result"]["width"] > 0
    names = [a["name"] for a in texture_done.data["artifacts"]]
    assert "thumbnail.png" in names
