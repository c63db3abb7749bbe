"""The asset pipelines through a live server: one upload with companion files, texture sets and
hostile files; every task ends with the right result or the right error code over SSE."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

from PIL import Image

from tests.client import Event, KilnClient, collect, terminal_for
from tests.conftest import corpus, make_settings
from tests.live import LiveServer, ServerFactory
from tests.users import add_user

SPIDER = ["spider.obj", "spider.mtl", "SpiderTex.jpg", "drkwood2.jpg", "engineflare1.jpg",
          "wal67ar_small.jpg", "wal69ar_small.jpg"]


def _final(events: list[Event], task_id: str) -> dict[str, Any]:
    data: dict[str, Any] = next(
        e.data for e in events if e.event == "task" and e.data["task_id"] == task_id
        and e.data["state"] in ("SUCCESS", "FAILURE", "REVOKED"))
    return data


def _stages(events: list[Event], task_id: str) -> list[str]:
    stages = [e.data["stage"] for e in events
              if e.event == "task" and e.data["task_id"] == task_id and e.data["stage"]]
    return list(dict.fromkeys(stages))


def _png(colour: tuple[int, ...], mode: str = "RGB") -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, (64, 64), colour).save(buffer, format="PNG")
    return buffer.getvalue()


async def test_one_upload_grouped_into_model_set_and_texture_tasks(
        live_server: LiveServer, redis_url: str) -> None:
    await add_user(redis_url, "alice")
    hostile_gltf = json.dumps({"asset": {"version": "2.0"},
                               "buffers": [{"uri": "../../jwt_secret", "byteLength": 8}]})
    async with KilnClient(live_server.url) as client:
        await client.login("alice", "correct horse battery")
        stream = client.events()
        await collect(stream, lambda ev: len(ev) >= 1)
        response = await client.upload(
            *[corpus(f"OBJ/{n}") for n in SPIDER],
            corpus("Collada/duck.dae"), corpus("Collada/duckCM.tga"),
            ("Rock_BaseColor.png", _png((150, 90, 60))),
            ("Rock_Normal.png", _png((128, 128, 255))),
            ("Rock_Roughness.png", _png((200,), "L")),
            corpus("glTF2/BoxTextured-glTF/CesiumLogoFlat.png"),
            ("evil.gltf", hostile_gltf.encode()),
        )
        assert response.status_code == 202, response.text
        tasks = {t["filename"]: t for t in response.json()["tasks"]}
        assert set(tasks) == {"spider.obj", "duck.dae", "Rock_BaseColor.png",
                              "CesiumLogoFlat.png", "evil.gltf"}
        assert tasks["spider.obj"]["files"] == SPIDER
        assert tasks["duck.dae"]["files"] == ["duck.dae", "duckCM.tga"]
        assert (tasks["Rock_BaseColor.png"]["kind"], tasks["Rock_BaseColor.png"]["format"]) == \
            ("material", "pbr")
        assert tasks["CesiumLogoFlat.png"]["kind"] == "texture"

        ids = [t["task_id"] for t in tasks.values()]
        events = await collect(stream, terminal_for(ids), timeout=120)
        await stream.aclose()

        spider = _final(events, tasks["spider.obj"]["task_id"])
        assert spider["state"] == "SUCCESS", spider
        assert spider["result"]["textures"] == 5 and spider["result"]["missing_textures"] == []
        # progress shares one rate limit per task (a stage may be passed over), but what is sent
        # goes forward through the pipeline's stages
        stages = _stages(events, tasks["spider.obj"]["task_id"])
        order = ["queued", "starting", "load", "analyse", "thumbnail", "web_model", "lods",
                 "turntable", "done"]
        assert stages[:2] == ["queued", "starting"] and stages[-1] == "done"
        assert [order.index(stage) for stage in stages] == sorted(order.index(s) for s in stages)
        artifacts = {a["name"]: a for a in spider["artifacts"]}
        assert {"thumbnail.png", "turntable.png", "model.glb"} <= set(artifacts)
        # the stats and the thumbnail reached the stream before the LODs and the turntable
        own = [e.data for e in events
               if e.event == "task" and e.data["task_id"] == tasks["spider.obj"]["task_id"]]
        early = next(e for e in own if e["state"] == "PROGRESS" and e.get("artifacts"))
        assert own.index(early) < own.index(spider)
        assert early["result"]["faces"] == spider["result"]["faces"]
        assert "lods" not in early["result"] and "turntable" not in early["result"]
        assert "thumbnail.png" in {a["name"] for a in early["artifacts"]}
        assert "turntable.png" not in {a["name"] for a in early["artifacts"]}
        assert artifacts["model.glb"]["media_type"] == "model/gltf-binary"
        record = (await client.get(f"/api/tasks/{tasks['spider.obj']['task_id']}")).json()
        assert {a["name"] for a in record["artifacts"]} == set(artifacts)
        thumbnail = await client.get(
            f"/api/tasks/{tasks['spider.obj']['task_id']}/artifacts/thumbnail.png")
        assert thumbnail.status_code == 200
        assert len(thumbnail.content) == artifacts["thumbnail.png"]["size"]
        assert Image.open(io.BytesIO(thumbnail.content)).size == (512, 512)

        duck = _final(events, tasks["duck.dae"]["task_id"])
        assert duck["state"] == "SUCCESS" and duck["result"]["texture_names"] == ["duckCM.tga"]

        rock = _final(events, tasks["Rock_BaseColor.png"]["task_id"])
        assert rock["state"] == "SUCCESS", rock
        assert "preview.png" in {a["name"] for a in rock["artifacts"]}

        logo = _final(events, tasks["CesiumLogoFlat.png"]["task_id"])
        assert logo["state"] == "SUCCESS"

        evil = _final(events, tasks["evil.gltf"]["task_id"])
        assert evil["state"] == "FAILURE"
        assert evil["error"]["code"] == "unsafe_reference"
        assert "jwt_secret" not in json.dumps(evil)


async def test_zip_bomb_upload_fails_with_a_code(live_server: LiveServer,
                                                 redis_url: str) -> None:
    import zipfile

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("model.obj", corpus("OBJ/box.obj").read_bytes())
        archive.writestr("padding.bin", bytes(20 * 1024**2))
    await add_user(redis_url, "bob")
    async with KilnClient(live_server.url) as client:
        await client.login("bob", "correct horse battery")
        stream = client.events()
        await collect(stream, lambda ev: len(ev) >= 1)
        response = await client.upload(("model.zip", buffer.getvalue()))
        assert response.status_code == 202, response.text
        task = response.json()["tasks"][0]
        assert (task["kind"], task["format"]) == ("mesh", "zip")
        events = await collect(stream, terminal_for([task["task_id"]]), timeout=60)
        await stream.aclose()
    final = _final(events, task["task_id"])
    assert final["state"] == "FAILURE" and final["error"]["code"] == "archive_rejected"


async def test_a_zipped_model_succeeds_and_leaves_no_scratch_files(
        live_server: LiveServer, redis_url: str) -> None:
    import zipfile

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name in ("spider.obj", "spider.mtl", "SpiderTex.jpg"):
            archive.writestr(f"spider/{name}", corpus(f"OBJ/{name}").read_bytes())
    await add_user(redis_url, "dave")
    async with KilnClient(live_server.url) as client:
        await client.login("dave", "correct horse battery")
        stream = client.events()
        await collect(stream, lambda ev: len(ev) >= 1)
        task = (await client.upload(("spider.zip", buffer.getvalue()))).json()["tasks"][0]
        events = await collect(stream, terminal_for([task["task_id"]]), timeout=60)
        await stream.aclose()
    final = _final(events, task["task_id"])
    assert final["state"] == "SUCCESS", final.get("error")
    assert final["result"]["faces"] == 1368
    assert "spider/SpiderTex.jpg" in final["result"]["texture_names"]  # its path in the zip
    assert "SpiderTex.jpg" not in final["result"]["missing_textures"]
    task_dir = live_server.settings.data_dir / "tasks" / task["task_id"]
    assert (task_dir / "files" / "spider.zip").is_file()
    assert not (task_dir / "work").exists()  # the unpacked copy is gone


async def test_every_model_format_succeeds_in_the_real_child_pool(live_server: LiveServer,
                                                                  redis_url: str) -> None:
    files = ["FBX/spider.fbx", "FBX/embedded_ascii/box.FBX", "3MF/box.3mf",
             "glTF2/BoxTextured-glTF-Binary/BoxTextured.glb", "STL/sphereWithHole.stl",
             "PLY/cube_binary.ply", "OBJ/WusonOBJ.obj"]
    await add_user(redis_url, "carol")
    async with KilnClient(live_server.url) as client:
        await client.login("carol", "correct horse battery")
        stream = client.events()
        await collect(stream, lambda ev: len(ev) >= 1)
        response = await client.upload(*[corpus(f) for f in files],
                                        corpus("invalid/OutOfMemory.off"))
        assert response.status_code == 202, response.text
        tasks = {t["filename"]: t["task_id"] for t in response.json()["tasks"]}
        events = await collect(stream, terminal_for(list(tasks.values())), timeout=180)
        await stream.aclose()
    for name in (f.rsplit("/", 1)[-1] for f in files):
        final = _final(events, tasks[name])
        assert final["state"] == "SUCCESS", (name, final.get("error"))
        assert "thumbnail.png" in {a["name"] for a in final["artifacts"]}
    broken = _final(events, tasks["OutOfMemory.off"])
    assert (broken["state"], broken["error"]["code"]) == ("FAILURE", "corrupt_file")


async def _box_through(mesh: str, live_server_factory: ServerFactory, redis_url: str,
                       tmp_path: Path) -> tuple[LiveServer, KilnClient, Any, str]:
    """A server whose mesh pipeline is `mesh`, alice signed in with her stream open, and the
    task of the box she uploaded; the caller closes the client."""
    server = live_server_factory(make_settings(redis_url, tmp_path / "data"), pipelines={
        "mesh": mesh, "texture": "tasks.texture:describe"})
    await add_user(redis_url, "alice")
    client = KilnClient(server.url)
    await client.login("alice", "correct horse battery")
    stream = client.events()
    await collect(stream, lambda ev: len(ev) >= 1)
    tid = (await client.upload(corpus("OBJ/box.obj"))).json()["tasks"][0]["task_id"]
    return server, client, stream, tid


async def test_a_running_task_shows_its_result_so_far(
        live_server_factory: ServerFactory, redis_url: str, tmp_path: Path) -> None:
    server, client, stream, tid = await _box_through(
        "tests.helpers.pipelines:share_then_wait", live_server_factory, redis_url, tmp_path)
    async with client:
        events = await collect(stream, lambda ev: any(
            e.event == "task" and e.data.get("artifacts") for e in ev))
        early = next(e.data for e in events if e.event == "task" and e.data.get("artifacts"))
        assert early["state"] == "PROGRESS" and early["result"] == {"faces": 12}
        # the run is waiting: what the API says now is the result so far, thumbnail and all
        record = (await client.get(f"/api/tasks/{tid}")).json()
        assert record["state"] == "PROGRESS" and record["result"] == {"faces": 12}
        (thumbnail,) = record["artifacts"]
        picture = await client.get(thumbnail["url"])
        assert picture.status_code == 200 and len(picture.content) == thumbnail["size"]
        (server.settings.data_dir / "tasks" / tid / "release").touch()
        events = await collect(stream, terminal_for([tid]))
        await stream.aclose()
        assert _final(events, tid)["result"] == {"faces": 12, "finished": True}


async def test_a_failed_task_keeps_no_result_so_far(
        live_server_factory: ServerFactory, redis_url: str, tmp_path: Path) -> None:
    _, client, stream, tid = await _box_through(
        "tests.helpers.pipelines:share_then_fail", live_server_factory, redis_url, tmp_path)
    async with client:
        events = await collect(stream, terminal_for([tid]))
        await stream.aclose()
        shared = [e.data for e in events if e.event == "task" and e.data.get("result")]
        assert shared and shared[0]["state"] == "PROGRESS"  # it was shown while it ran
        assert _final(events, tid)["error"]["code"] == "corrupt_file"
        record = (await client.get(f"/api/tasks/{tid}")).json()
        assert record["state"] == "FAILURE"
        assert record["result"] is None and record["artifacts"] == []  # only success has one
