"""Batches as workflows and deletion: one `batch` event when every task of an upload has finished,
GET /api/batches/{id} with the same counts, and DELETE of a task or a whole batch (204, then 404,
a `deleted` event, the files and the quota given back)."""

from __future__ import annotations

from pathlib import Path

from tests.client import Event, collect, signed_in
from tests.conftest import make_settings
from tests.helpers.submit import drain
from tests.live import ServerFactory

TRIANGLE = b"v 0 0 0\nv 1 0 0\nv 0 1 0\nf 1 2 3\n"
STEPS = {"mesh": "tests.helpers.pipelines:steps", "texture": "tests.helpers.pipelines:steps"}


def _batch_events(events: list[Event]) -> list[Event]:
    return [e for e in events if e.event == "batch"]


async def test_a_batch_event_follows_the_last_task_of_an_upload(
        redis_url: str, tmp_path: Path, live_server_factory: ServerFactory) -> None:
    settings = make_settings(redis_url, tmp_path / "data", embedded_worker=False)
    url = live_server_factory(settings).url
    async with await signed_in(url, redis_url, "ada") as ada, \
            await signed_in(url, redis_url, "bea") as bea:
        upload = await ada.upload(("a.obj", TRIANGLE), ("b.obj", TRIANGLE))
        batch = upload.json()["batch_id"]
        before = (await ada.get(f"/api/batches/{batch}")).json()
        assert before["counts"] == {"PENDING": 2, "SUCCESS": 0, "FAILURE": 0, "REVOKED": 0}
        assert before["done"] is False and before["total"] == 2
        assert (await bea.get(f"/api/batches/{batch}")).status_code == 404  # not hers
        assert (await ada.get("/api/batches/nosuchbatch")).status_code == 404

        first = upload.json()["tasks"][0]["task_id"]
        await ada.post(f"/api/tasks/{first}/cancel")
        await drain(settings, STEPS)
        events = await collect(ada.events(last_event_id=0),
                               lambda seen: bool(_batch_events(seen)), skip=())
        (done,) = _batch_events(events)
        assert done.data == {"type": "batch", "batch_id": batch, "total": 2, "ts": done.data["ts"],
                             "counts": {"SUCCESS": 1, "FAILURE": 0, "REVOKED": 1}}
        assert events[-2].event == "task" and events[-2].data["state"] in ("SUCCESS", "REVOKED")
        summary = (await ada.get(f"/api/batches/{batch}")).json()
        assert summary["counts"] == done.data["counts"] and summary["done"] is True

        # a retry opens the batch again; its end brings a second batch event
        assert (await ada.post(f"/api/tasks/{first}/retry")).status_code == 202
        await drain(settings, STEPS)
        events = await collect(ada.events(last_event_id=0),
                               lambda seen: len(_batch_events(seen)) == 2, skip=())
        assert _batch_events(events)[1].data["counts"] == \
            {"SUCCESS": 2, "FAILURE": 0, "REVOKED": 0}


async def test_deleting_a_task_cancels_it_and_removes_everything(
        redis_url: str, tmp_path: Path, live_server_factory: ServerFactory) -> None:
    settings = make_settings(redis_url, tmp_path / "data", embedded_worker=False,
                             user_quota_bytes=10_000)
    url = live_server_factory(settings).url
    async with await signed_in(url, redis_url, "ada") as ada, \
            await signed_in(url, redis_url, "bea") as bea:
        padded = TRIANGLE + b"#" * (4000 - len(TRIANGLE))  # two of these: 8,000 of 10,000 bytes
        upload = (await ada.upload(("a.obj", padded), ("b.obj", padded))).json()
        queued, finished = (task["task_id"] for task in upload["tasks"])
        files = tmp_path / "data" / "tasks"
        assert (files / queued).is_dir()
        assert (await bea.http.delete(f"/api/tasks/{queued}", headers=bea.headers)
                ).status_code == 404  # not hers to delete
        deleted = await ada.http.delete(f"/api/tasks/{queued}", headers=ada.headers)
        assert deleted.status_code == 204
        assert (await ada.get(f"/api/tasks/{queued}")).status_code == 404
        assert (await ada.http.delete(f"/api/tasks/{queued}", headers=ada.headers)
                ).status_code == 404
        assert not (files / queued).exists()
        listed = (await ada.get("/api/tasks")).json()
        assert [task["task_id"] for task in listed["tasks"]] == [finished]
        events = await collect(ada.events(last_event_id=0),
                               lambda seen: any(e.event == "deleted" for e in seen), skip=())
        gone = next(e for e in events if e.event == "deleted")
        assert gone.data["task_id"] == queued and gone.data["batch_id"] == upload["batch_id"]
        assert [e.data["state"] for e in events if e.event == "task" and
                e.data["task_id"] == queued] == ["PENDING", "REVOKED"]

        # the quota counts the deleted task's bytes no more: room for 5,000 more
        big = ("big.obj", TRIANGLE + b"#" * (5000 - len(TRIANGLE)))
        assert (await ada.upload(big)).status_code == 202

        await drain(settings, STEPS)
        batch = upload["batch_id"]
        assert (await ada.http.delete(f"/api/batches/{batch}", headers=ada.headers)
                ).status_code == 204
        assert (await ada.get(f"/api/tasks/{finished}")).status_code == 404
        assert (await ada.get(f"/api/batches/{batch}")).status_code == 404
        assert (await ada.http.delete(f"/api/batches/{batch}", headers=ada.headers)
                ).status_code == 404
        assert not (files / finished).exists()
