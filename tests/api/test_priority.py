"""Upload priorities: asked for by a form field or a query parameter (high for admins only), or
decided by size; carried by the task and its events; and workers take high before default before
low."""

from __future__ import annotations

import json
from pathlib import Path

from records import keys
from services import open_services
from settings import Settings
from tests.client import KilnClient, signed_in
from tests.conftest import make_settings
from tests.helpers.submit import drain
from tests.live import ServerFactory

TRIANGLE = b"v 0 0 0\nv 1 0 0\nv 0 1 0\nf 1 2 3\n"
STEPS = {"mesh": "tests.helpers.pipelines:steps"}


USERS: dict[str, str] = {}
"""User name -> id of the users `_client` created."""


async def _client(url: str, redis_url: str, name: str, *, admin: bool = False) -> KilnClient:
    client = await signed_in(url, redis_url, name, admin=admin)
    USERS[name] = (await client.get("/api/auth/me")).json()["user_id"]
    return client


def _queue_only(redis_url: str, tmp_path: Path, **changes: object) -> Settings:
    return make_settings(redis_url, tmp_path / "data", embedded_worker=False,
                         upload_requests_per_minute=0, **changes)


async def test_only_admins_may_ask_for_high(redis_url: str, tmp_path: Path,
                                            live_server_factory: ServerFactory) -> None:
    url = live_server_factory(_queue_only(redis_url, tmp_path)).url
    async with await _client(url, redis_url, "pat") as pat, \
            await _client(url, redis_url, "root", admin=True) as root:
        for asked in ({"form": {"priority": "high"}}, {"params": {"priority": "high"}}):
            refused = await pat.upload(("a.obj", TRIANGLE), **asked)
            assert refused.status_code == 403, refused.text
            assert refused.json()["error"] == "forbidden_priority"
        assert (await pat.get("/api/tasks")).json()["total"] == 0
        bad = await pat.upload(("a.obj", TRIANGLE), form={"priority": "urgent"})
        assert bad.status_code == 400 and bad.json()["error"] == "bad_parameter"

        low = await pat.upload(("a.obj", TRIANGLE), params={"priority": "low"})
        assert low.status_code == 202 and low.json()["tasks"][0]["priority"] == "low"
        high = await root.upload(("b.obj", TRIANGLE), form={"priority": "high"})
        assert high.status_code == 202, high.text
        task_id = high.json()["tasks"][0]["task_id"]
        view = (await root.get(f"/api/tasks/{task_id}")).json()
        assert view["priority"] == "high" and view["queue_position"] == 1  # ahead of pat's low


async def test_big_uploads_go_low_unless_they_ask(redis_url: str, tmp_path: Path,
                                                  live_server_factory: ServerFactory) -> None:
    settings = _queue_only(redis_url, tmp_path, low_priority_bytes=100)
    url = live_server_factory(settings).url
    big = ("big.obj", TRIANGLE + b"# padding\n" * 20)
    async with await _client(url, redis_url, "pat") as pat:
        small = await pat.upload(("small.obj", TRIANGLE))
        assert small.json()["tasks"][0]["priority"] == "default"
        assert (await pat.upload(big)).json()["tasks"][0]["priority"] == "low"
        assert (await pat.upload(big, form={"priority": "default"})
                ).json()["tasks"][0]["priority"] == "default"


async def test_workers_take_high_before_default_before_low(
        redis_url: str, tmp_path: Path, live_server_factory: ServerFactory) -> None:
    settings = _queue_only(redis_url, tmp_path, worker_concurrency=1)
    url = live_server_factory(settings).url
    async with await _client(url, redis_url, "pat") as pat, \
            await _client(url, redis_url, "root", admin=True) as root:
        order = []
        for client, name, priority in ((pat, "1.obj", "low"), (pat, "2.obj", "default"),
                                       (root, "3.obj", "high"), (pat, "4.obj", "default")):
            response = await client.upload((name, TRIANGLE), form={"priority": priority})
            order.append((name, response.json()["tasks"][0]["task_id"]))
        await drain(settings, STEPS)
        async with open_services(settings, redis_url) as services:
            started = []
            for user in ("pat", "root"):
                for _, fields in await services.redis.xrange(keys.user_stream(USERS[user]).log):
                    event = json.loads(fields[b"e"])
                    if event["type"] != "task":
                        continue  # the batch events
                    assert event["priority"] in ("low", "default", "high")
                    if event["state"] == "STARTED":
                        started.append((event["ts"], event["filename"]))
        assert [name for _, name in sorted(started)] == ["3.obj", "2.obj", "4.obj", "1.obj"]
