"""Dedup by content: the same user's re-upload of the same files, with the same pipeline and
settings, finishes at once with the first result and artifacts (hard links, not copies); a
different user, different bytes or different output settings run again."""

from __future__ import annotations

import os
from pathlib import Path

from tests.client import KilnClient, collect, signed_in, terminal_for
from tests.conftest import corpus, make_settings
from tests.helpers.submit import drain
from tests.live import ServerFactory

BOX = corpus("OBJ/box.obj")


async def test_a_reupload_reuses_the_first_result(
        redis_url: str, tmp_path: Path, live_server_factory: ServerFactory) -> None:
    settings = make_settings(redis_url, tmp_path / "data", embedded_worker=False)
    url = live_server_factory(settings).url
    async with await signed_in(url, redis_url, "ada") as ada, \
            await signed_in(url, redis_url, "bea") as bea:
        first = (await ada.upload(BOX)).json()["tasks"][0]
        assert first["deduplicated_from"] is None
        await drain(settings, {})  # the real pipelines
        done = (await ada.get(f"/api/tasks/{first['task_id']}")).json()
        assert done["state"] == "SUCCESS" and done["artifacts"]

        again = (await ada.upload(("renamed-upload.obj", BOX.read_bytes()))).json()["tasks"][0]
        assert again["deduplicated_from"] is None  # another stored name: another key
        same = (await ada.upload(BOX)).json()["tasks"][0]
        assert same["deduplicated_from"] == first["task_id"]
        view = (await ada.get(f"/api/tasks/{same['task_id']}")).json()
        assert view["state"] == "SUCCESS" and view["deduplicated_from"] == first["task_id"]
        assert view["result"] == done["result"]
        assert [a["name"] for a in view["artifacts"]] == [a["name"] for a in done["artifacts"]]
        events = await collect(ada.events(last_event_id=0), terminal_for([same["task_id"]]))
        assert [e.data["state"] for e in events if e.event == "task" and
                e.data["task_id"] == same["task_id"]] == ["PENDING", "SUCCESS"]
        tasks = tmp_path / "data" / "tasks"
        for artifact in done["artifacts"]:  # stored once: the same inode
            original = tasks / first["task_id"] / "artifacts" / artifact["name"]
            reused = tasks / same["task_id"] / "artifacts" / artifact["name"]
            assert os.stat(original).st_ino == os.stat(reused).st_ino
        name = done["artifacts"][0]["name"]
        fetched = await ada.get(f"/api/tasks/{same['task_id']}/artifacts/{name}")
        assert fetched.status_code == 200 and fetched.content == \
            (tasks / first["task_id"] / "artifacts" / name).read_bytes()

        # the first task deleted: the reused artifacts stay
        assert (await ada.http.delete(f"/api/tasks/{first['task_id']}",
                                      headers=ada.headers)).status_code == 204
        assert (await ada.get(f"/api/tasks/{same['task_id']}/artifacts/{name}")
                ).status_code == 200

        theirs = (await bea.upload(BOX)).json()["tasks"][0]
        assert theirs["deduplicated_from"] is None  # never across users
        assert (await bea.get(f"/api/tasks/{theirs['task_id']}")).json()["state"] == "PENDING"


async def test_other_output_settings_run_again(
        redis_url: str, tmp_path: Path, live_server_factory: ServerFactory) -> None:
    settings = make_settings(redis_url, tmp_path / "data", embedded_worker=False)
    url = live_server_factory(settings).url
    async with await signed_in(url, redis_url, "ada") as ada:
        (await ada.upload(BOX)).json()
        await drain(settings, {})
        assert (await ada.upload(BOX)).json()["tasks"][0]["deduplicated_from"] is not None
    other = live_server_factory(settings.with_(thumbnail_size=128)).url
    async with KilnClient(other) as again:
        await again.login("ada", "correct horse battery")
        assert (await again.upload(BOX)).json()["tasks"][0]["deduplicated_from"] is None


async def test_a_reused_task_in_a_batch_sends_one_batch_event_at_the_batchs_end(
        redis_url: str, tmp_path: Path, live_server_factory: ServerFactory) -> None:
    settings = make_settings(redis_url, tmp_path / "data", embedded_worker=False)
    url = live_server_factory(settings).url
    async with await signed_in(url, redis_url, "ada") as ada:
        await ada.upload(BOX)
        await drain(settings, {})
        upload = (await ada.upload(BOX, ("other.obj", b"v 0 0 0\nv 1 0 0\nv 0 1 0\nf 1 2 3\n"))
                  ).json()
        assert [t["deduplicated_from"] is not None for t in upload["tasks"]] == [True, False]
        assert not (await ada.get(f"/api/batches/{upload['batch_id']}")).json()["done"]
        await drain(settings, {})
        events = await collect(ada.events(last_event_id=0), lambda seen: any(
            e.event == "batch" and e.data["batch_id"] == upload["batch_id"] for e in seen),
            skip=())
        ends = [e for e in events if e.event == "batch"]
        assert [e.data["batch_id"] for e in ends][-1] == upload["batch_id"]
        assert [e.data["total"] for e in ends] == [1, 2]  # the first upload's, then this one's


async def test_a_worker_with_other_settings_does_not_offer_its_result(
        redis_url: str, tmp_path: Path, live_server_factory: ServerFactory) -> None:
    settings = make_settings(redis_url, tmp_path / "data", embedded_worker=False)
    url = live_server_factory(settings).url
    async with await signed_in(url, redis_url, "ada") as ada:
        await ada.upload(BOX)
        await drain(settings.with_(thumbnail_size=128), {})  # not what the web process keys
        assert (await ada.upload(BOX)).json()["tasks"][0]["deduplicated_from"] is None
