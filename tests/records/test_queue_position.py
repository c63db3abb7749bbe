"""Queue positions through the API: only waiting jobs are ahead, under the scheduling policy; only
the session's own tasks are shown. (The policy's rules: tests/records/test_scheduler.py.)"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from arq.constants import in_progress_key_prefix

from records import keys
from records.queue import job_id
from records.scheduler import Priority
from services import Services
from tests.client import KilnClient, collect
from tests.conftest import make_settings
from tests.live import LiveServer, ServerFactory
from tests.users import add_user

TRIANGLE = b"v 0 0 0\nv 1 0 0\nv 0 1 0\nf 1 2 3\n"
SPIN = {"mesh": "tests.helpers.pipelines:spin_forever", "texture": "tasks.texture:describe"}


@pytest.fixture
def queue_only_server(redis_url: str, tmp_path: Path,
                      live_server_factory: ServerFactory) -> LiveServer:
    """No worker: every task stays queued."""
    return live_server_factory(make_settings(redis_url, tmp_path / "data",
                                             embedded_worker=False))


async def _client(server: LiveServer, redis_url: str, name: str) -> KilnClient:
    await add_user(redis_url, name)
    client = KilnClient(server.url)
    await client.login(name, "correct horse battery")
    return client


async def _submit(client: KilnClient, count: int) -> list[str]:
    """`count` tasks, one upload each, in this order in the queue."""
    ids = []
    for n in range(count):
        response = await client.upload((f"part{n}.obj", TRIANGLE))
        assert response.status_code == 202, response.text
        ids.append(response.json()["tasks"][0]["task_id"])
        await asyncio.sleep(0.002)  # distinct enqueue milliseconds, so the order is the upload's
    return ids


async def _queue(client: KilnClient) -> dict[str, object]:
    response = await client.get("/api/queue")
    assert response.status_code == 200, response.text
    body: dict[str, object] = response.json()
    assert body.pop("eta_s") == {}  # no run has finished yet: nothing to estimate from
    return body


async def test_positions_count_only_waiting_jobs_ahead(queue_only_server: LiveServer,
                                                       redis_url: str, services: Services) -> None:
    async with await _client(queue_only_server, redis_url, "alice") as alice:
        first, second, third = await _submit(alice, 3)
        assert await _queue(alice) == {"positions": {first: 1, second: 2, third: 3}, "queued": 3}
        assert (await alice.get(f"/api/tasks/{second}")).json()["queue_position"] == 2

        # a worker admits the first job and starts it as arq does: queued, marked in progress
        assert (await services.queue.scheduler.admit(1)).jobs == [job_id(first, 1)]
        await services.redis.psetex(in_progress_key_prefix + job_id(first, 1), 60_000, b"1")
        assert await _queue(alice) == {"positions": {second: 1, third: 2}, "queued": 2}
        assert (await alice.get(f"/api/tasks/{first}")).json()["queue_position"] is None
        assert (await alice.get(f"/api/tasks/{third}")).json()["queue_position"] == 2


async def test_only_the_sessions_own_tasks_are_listed(queue_only_server: LiveServer,
                                                      redis_url: str) -> None:
    async with await _client(queue_only_server, redis_url, "bob") as bob, \
            await _client(queue_only_server, redis_url, "alice") as alice:
        (theirs,) = await _submit(bob, 1)
        mine = await _submit(alice, 2)
        assert await _queue(alice) == {"positions": {mine[0]: 2, mine[1]: 3}, "queued": 3}
        assert await _queue(bob) == {"positions": {theirs: 1}, "queued": 3}
        async with KilnClient(queue_only_server.url) as elsewhere:
            await elsewhere.login("alice", "correct horse battery")  # another session of hers
            assert await _queue(elsewhere) == {"positions": {}, "queued": 3}
        assert (await alice.get(f"/api/tasks/{theirs}")).status_code == 404
        anonymous = await alice.http.get("/api/queue")
        assert anonymous.status_code == 401


async def test_a_finished_task_has_no_position_and_its_retry_waits_at_the_back(
        queue_only_server: LiveServer, redis_url: str) -> None:
    async with await _client(queue_only_server, redis_url, "alice") as alice:
        first, second, third = await _submit(alice, 3)
        assert (await alice.post(f"/api/tasks/{first}/cancel")).status_code == 202
        assert await _queue(alice) == {"positions": {second: 1, third: 2}, "queued": 2}
        assert "queue_position" not in (await alice.get(f"/api/tasks/{first}")).json()

        retried = await alice.post(f"/api/tasks/{first}/retry")
        assert retried.json()["state"] == "RETRY"
        assert await _queue(alice) == {"positions": {second: 1, third: 2, first: 3}, "queued": 3}


async def test_a_running_job_stays_in_the_queue_and_is_not_ahead(
        redis_url: str, tmp_path: Path, live_server_factory: ServerFactory,
        services: Services) -> None:
    server = live_server_factory(make_settings(redis_url, tmp_path / "data",
                                               worker_concurrency=1), pipelines=SPIN)
    async with await _client(server, redis_url, "alice") as alice:
        first, second, third = await _submit(alice, 3)
        stream = alice.events(last_event_id=0)
        await collect(stream, lambda events: any(
            e.data.get("task_id") == first and e.data.get("state") == "PROGRESS" for e in events))
        await stream.aclose()
        assert await services.redis.zcard(keys.QUEUE) == 1  # arq keeps the running job queued
        assert await _queue(alice) == {"positions": {second: 1, third: 2}, "queued": 2}
        for tid in (third, second, first):
            assert (await alice.post(f"/api/tasks/{tid}/cancel")).status_code == 202


async def test_a_deep_queue(services: Services) -> None:
    """Positions in a queue of 20,000 jobs of one user and 100 of another's are exact, and the
    fair share puts the other's ahead of most of the deep queue."""
    now = int(time.time() * 1000) - 100_000
    scheduler = services.queue.scheduler
    async with services.redis.pipeline(transaction=False) as pipe:
        await scheduler.schedule_in(pipe, [(f"a{n:05}", "a", Priority.DEFAULT, now + n)
                                           for n in range(20_000)])
        await scheduler.schedule_in(pipe, [(f"b{n:05}", "b", Priority.DEFAULT, now + 30_000 + n)
                                           for n in range(100)])
        await pipe.execute()
    standing = await scheduler.standing("a", [("a00005", "mesh"), ("a19999", "mesh")])
    assert standing.positions == {"a00005": 11, "a19999": 20_100}  # b's alternate with a's
    assert standing.queued == 20_100
    assert (await scheduler.standing("b", [("b00099", "mesh")])).positions == {"b00099": 200}
