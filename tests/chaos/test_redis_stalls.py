"""Redis paused (SIGSTOP) and made half-open while real kiln processes run tasks (RELIABILITY B3,
B4): requests fail fast with 503 meanwhile, and once Redis answers again every acknowledged task
ends exactly once and the streams, resumed with Last-Event-ID, lose nothing."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.chaos.history import assert_resumed
from tests.chaos.outcomes import progressed
from tests.chaos.processes import Processes
from tests.chaos.session import CUBE, Session, leftover_jobs
from tests.conftest import RedisProcess
from tests.helpers.tcp_proxy import TcpProxy

SHORT = {"mesh": "tests.helpers.pipelines:short_steps",
         "texture": "tests.helpers.pipelines:short_steps"}
PAUSE_SECONDS = 4.0
"""Longer than KILN_REDIS_TIMEOUT (2 s), so every link times out at least once."""
FAST_FAIL = 3.5
"""What a request may take while Redis is paused: one Redis timeout, and the machine's load."""


async def test_redis_paused_mid_task_fails_fast_then_heals(
        processes_on_private_redis: Processes, private_redis: RedisProcess) -> None:
    web = processes_on_private_redis.serve(pipelines=SHORT, env={"KILN_WORKERS": "2"})
    await web.ready()
    session = await Session.open(web.url, private_redis.url)
    try:
        recorder = session.recorder().start()
        tasks = [(await session.upload((f"cube-{n}.obj", CUBE)))[0] for n in range(3)]
        recorder.expect(tasks)
        await recorder.until(progressed(tasks[0], 0.25), 20, "progress of the first task")

        assert private_redis.process is not None
        os.kill(private_redis.process.pid, signal.SIGSTOP)
        try:
            async with httpx.AsyncClient(base_url=web.url, timeout=15) as http:
                started = asyncio.get_running_loop().time()
                listing, upload, health, page = await asyncio.gather(
                    session.client.get("/api/tasks"),
                    session.client.upload(("during.obj", CUBE)),
                    http.get("/healthz"), http.get("/"))
                took = asyncio.get_running_loop().time() - started
            await asyncio.sleep(PAUSE_SECONDS - took)  # the rest of the stall itself
        finally:
            os.kill(private_redis.process.pid, signal.SIGCONT)
        for refused in (listing, upload):
            assert refused.status_code == 503, refused.text
            assert refused.json()["error"] == "unavailable"
        assert health.status_code == 503 and health.json()["status"] == "degraded"
        assert page.status_code == 200
        assert took < FAST_FAIL, f"requests took {took:.1f} s to fail during the stall"

        (late,) = await session.upload(("late.obj", CUBE))
        recorder.expect([late])
        history = await recorder.until_done(45)

        await session.check(recorder)
        assert_resumed(history)  # a stream cut by the fault came back from where it was
        ended = {t: (history.terminal(t) or {}).get("state") for t in [*tasks, late]}
        assert set(ended.values()) == {"SUCCESS"}, ended
        assert await leftover_jobs(private_redis.url) == []
    finally:
        await session.close()


@pytest.fixture
def proxy(private_redis: RedisProcess) -> Iterator[TcpProxy]:
    with TcpProxy("127.0.0.1", private_redis.port) as running:
        yield running


@pytest.fixture
def processes_behind_proxy(tmp_path: Path, proxy: TcpProxy) -> Iterator[Processes]:
    group = Processes(tmp_path / "kiln", f"redis://127.0.0.1:{proxy.port}/0")
    yield group
    group.cleanup()
    group.assert_clean_logs()


async def test_half_open_redis_links_mid_task_are_replaced(
        processes_behind_proxy: Processes, proxy: TcpProxy, private_redis: RedisProcess) -> None:
    """Every connection open when the proxy goes silent (pool, pub/sub, the worker's) stays
    open and answers nothing, as after a NAT or a peer host vanished; new ones flow."""
    env = {"KILN_WORKERS": "2", "KILN_REDIS_HEALTH_INTERVAL": "1"}
    web = processes_behind_proxy.serve(pipelines=SHORT, env=env)
    await web.ready()
    session = await Session.open(web.url, private_redis.url)
    try:
        recorder = session.recorder().start()
        tasks = [(await session.upload((f"cube-{n}.obj", CUBE)))[0] for n in range(2)]
        recorder.expect(tasks)
        await recorder.until(progressed(tasks[0], 0.25), 20, "progress of the first task")

        proxy.stall_existing()
        (late,) = await _upload_when_healed(session, within=20)
        recorder.expect([late])
        history = await recorder.until_done(45)

        await session.check(recorder)
        assert_resumed(history)  # a stream cut by the fault came back from where it was
        ended = {t: (history.terminal(t) or {}).get("state") for t in [*tasks, late]}
        assert set(ended.values()) == {"SUCCESS"}, ended
        assert await leftover_jobs(private_redis.url) == []
    finally:
        await session.close()


async def _upload_when_healed(session: Session, within: float) -> list[str]:
    """Upload once the service answers again: 503 until its links are replaced."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        response = await session.client.upload(("late.obj", CUBE))
        if response.status_code == 202:
            ids = [str(t["task_id"]) for t in response.json()["tasks"]]
            session.acknowledged += ids
            return ids
        assert response.status_code == 503, response.text
        assert loop.time() < deadline, "the service never healed from the half-open links"
        await asyncio.sleep(0.2)  # the next attempt, as a client honouring Retry-After would
