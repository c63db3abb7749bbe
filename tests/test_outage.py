"""After a Redis outage of a few seconds the embedded worker and the streams go on by themselves."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tests.client import KilnClient, collect, terminal_for
from tests.conftest import RedisProcess, corpus, make_settings
from tests.live import LiveServer, ServerFactory
from tests.users import add_user

pytestmark = pytest.mark.chaos  # an attack or fault scenario (pytest -m chaos)

OUTAGE_SECONDS = 3.0


async def test_service_resumes_after_redis_restarts(tmp_path: Path,
                                                     live_server_factory: ServerFactory) -> None:
    (tmp_path / "redis").mkdir()
    redis = RedisProcess(tmp_path / "redis")
    redis.start()
    try:
        server: LiveServer = live_server_factory(make_settings(redis.url, tmp_path / "data"))
        await add_user(redis.url, "alice")
        async with KilnClient(server.url) as client:
            await client.login("alice", "correct horse battery")
            stream = client.events()
            await collect(stream, lambda ev: len(ev) >= 1)

            redis.stop()  # killed: the outage the service must ride out
            await asyncio.sleep(OUTAGE_SECONDS)  # the outage itself, not a wait for work
            redis.start()  # same port, same AOF: the data is back

            tid = (await client.upload(corpus("OBJ/box.obj"))).json()["tasks"][0]["task_id"]
            # the open stream rides it out: the hub resubscribes and the stream re-reads the log
            events = await collect(stream, terminal_for([tid]), timeout=20)
            await stream.aclose()
            states = [e.data["state"] for e in events if e.data.get("task_id") == tid]
            assert states[0] == "PENDING" and states[-1] == "SUCCESS"
    finally:
        redis.stop()
