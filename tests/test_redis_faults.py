"""Redis faults fail fast and heal by themselves: half-open links, a stalled, a dead, a late and
a full Redis (RELIABILITY.md B1, B3, B4, B6)."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis as redis_sync
from redis.asyncio import Redis
from redis.exceptions import TimeoutError as RedisTimeoutError

from api.unavailable import is_redis_failure
from services import RedisMisconfigured, RedisUnreachable, connect_redis, open_services
from streaming.hub import RESYNC, Hub
from tests.client import KilnClient, collect, terminal_for
from tests.conftest import RedisProcess, corpus, free_port, make_settings
from tests.helpers.tcp_proxy import TcpProxy
from tests.live import ServerFactory
from tests.users import add_user

pytestmark = pytest.mark.chaos

PASSWORD = "correct horse battery"
FAST = {"redis_timeout": 0.5, "redis_health_interval": 0.5}


def _port(url: str) -> int:
    return int(url.rsplit(":", 1)[1].split("/")[0])


@pytest.fixture
def proxy(redis_url: str) -> Iterator[TcpProxy]:
    with TcpProxy("127.0.0.1", _port(redis_url)) as running:
        yield running


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[RedisProcess]:
    """A redis-server of this test's own, safe to stop, pause and reconfigure."""
    (tmp_path / "redis").mkdir()
    server = RedisProcess(tmp_path / "redis")
    server.start()
    try:
        yield server
    finally:
        if server.process is not None:
            os.kill(server.process.pid, signal.SIGCONT)
        server.stop()


async def _timed(call: Awaitable[httpx.Response]) -> tuple[httpx.Response, float]:
    start = time.monotonic()
    response = await call
    return response, time.monotonic() - start


def _assert_unavailable(response: httpx.Response) -> None:
    assert response.status_code == 503, response.text
    assert response.json()["error"] == "unavailable"
    assert int(response.headers["Retry-After"]) > 0


async def test_proxy_stalls_existing_links_and_relays_new_ones(proxy: TcpProxy) -> None:
    old = Redis(port=proxy.port, socket_timeout=0.3)
    assert await old.ping()
    proxy.stall_existing()
    with pytest.raises(RedisTimeoutError):
        await old.ping()
    fresh = Redis(port=proxy.port, socket_timeout=0.3)
    assert await fresh.ping()
    proxy.refuse()
    with pytest.raises(redis_sync.ConnectionError):
        await Redis(port=proxy.port).ping()
    await asyncio.gather(old.aclose(), fresh.aclose())


async def test_a_command_on_a_half_open_link_fails_within_the_timeout(proxy: TcpProxy) -> None:
    redis = connect_redis(f"redis://127.0.0.1:{proxy.port}/0", timeout=0.5, health_interval=0.5)
    try:
        await redis.set("k", "v")
        proxy.stall_existing()
        start = time.monotonic()
        async with asyncio.timeout(3):
            with pytest.raises(RedisTimeoutError):
                await redis.get("k")
        assert time.monotonic() - start < 1.0
        assert await redis.get("k") == b"v"  # the dead connection was dropped: a new one works
    finally:
        await redis.aclose(close_connection_pool=True)


async def test_the_hub_notices_a_half_open_pubsub_link_and_resubscribes(
        proxy: TcpProxy, redis_url: str) -> None:
    redis = connect_redis(f"redis://127.0.0.1:{proxy.port}/0", **_fast_pool())
    hub = Hub(redis, mailbox_size=16, ping_interval=0.5, reply_timeout=0.5)
    direct = Redis.from_url(redis_url)
    try:
        await hub.start()
        async with hub.listen("kiln:test") as box:
            proxy.stall_existing()
            start = time.monotonic()
            assert await asyncio.wait_for(box.get(), 3) is RESYNC
            detected = time.monotonic() - start
            await direct.publish("kiln:test", "7 {}")  # reaches it on the new link
            assert await asyncio.wait_for(box.get(), 2) == (7, "{}")
        assert detected < 0.5 + 0.5 + 0.5, f"noticed after {detected:.2f} s"
    finally:
        await hub.close()
        await asyncio.gather(redis.aclose(close_connection_pool=True), direct.aclose())


def _fast_pool() -> dict[str, Any]:
    return {"timeout": FAST["redis_timeout"], "health_interval": FAST["redis_health_interval"]}


async def test_the_service_heals_from_half_open_links(
        proxy: TcpProxy, redis_url: str, tmp_path: Path,
        live_server_factory: ServerFactory) -> None:
    settings = make_settings(f"redis://127.0.0.1:{proxy.port}/0", tmp_path / "data", **FAST)
    server = live_server_factory(settings)
    await add_user(redis_url, "alice")
    async with KilnClient(server.url) as client:
        await client.login("alice", PASSWORD)
        stream = client.events()
        await collect(stream, lambda ev: len(ev) >= 1)
        proxy.stall_existing()  # every link of the app, the hub and the worker goes silent
        deadline = time.monotonic() + 10
        while True:  # each answer is fast: 202, or 503 while dead pooled links are dropped
            response, took = await _timed(client.upload(corpus("OBJ/box.obj")))
            assert took < 2.0, f"an upload answered after {took:.2f} s"
            if response.status_code == 202:
                break
            _assert_unavailable(response)
            assert time.monotonic() < deadline, "uploads never recovered"
        tid = response.json()["tasks"][0]["task_id"]
        events = await collect(stream, terminal_for([tid]), timeout=15)
        await stream.aclose()
    states = [e.data["state"] for e in events if e.data.get("task_id") == tid]
    assert states[0] == "PENDING" and states[-1] == "SUCCESS"


async def test_a_stalled_redis_answers_503_fast_and_the_page_still_loads(
        private_redis: RedisProcess, tmp_path: Path,
        live_server_factory: ServerFactory) -> None:
    settings = make_settings(private_redis.url, tmp_path / "data")  # the default 2 s timeout
    server = live_server_factory(settings)
    await add_user(private_redis.url, "alice")
    limits = httpx.Limits(max_connections=400, max_keepalive_connections=400)
    async with KilnClient(server.url) as client, httpx.AsyncClient(
            base_url=server.url, timeout=15, limits=limits) as http, httpx.AsyncClient(
            base_url=server.url, timeout=15) as browser:
        token = (await client.login("alice", PASSWORD))["access_token"]
        bearer = {"Authorization": f"Bearer {token}"}
        browser.cookies.set("kiln_token", token)  # the page's session cookie
        assert private_redis.process is not None
        os.kill(private_redis.process.pid, signal.SIGSTOP)
        try:
            api = [http.get("/api/tasks", headers=bearer) for _ in range(150)]
            api += [http.get("/api/queue", headers=bearer) for _ in range(50)]
            api += [http.post("/api/auth/login", json={"username": "alice",
                                                       "password": PASSWORD})]
            answered = await asyncio.gather(
                *(_timed(call) for call in api),
                _timed(http.get("/healthz")),
                _timed(browser.get("/")))
        finally:
            os.kill(private_redis.process.pid, signal.SIGCONT)
        *api_answers, (health, health_took), (page, page_took) = answered
        for response, _ in api_answers:
            _assert_unavailable(response)
        # A request waits at most twice the 2 s Redis timeout: once for one of the pool's 64
        # connections (201 requests at once), once for its command; the rest is this process's
        # CPU (the server and 201 clients share one GIL on two cores, after everything the
        # session ran before: 5.2 and 5.6 s at the end of full runs, 4.6–4.8 s alone).
        # Queued behind one another, as redis 5's plain ConnectionPool connected, they would
        # take minutes.
        took = sorted(took for _, took in api_answers)
        assert took[len(took) // 2] < 4.0, f"median 503 after {took[len(took) // 2]:.2f} s"
        assert took[-1] < 7.0, f"slowest 503 after {took[-1]:.2f} s"
        assert health.status_code == 503 and health.json()["status"] == "degraded"
        assert health_took < 4.0  # 2.9 s alone: its one 2 s timeout, and the same CPU
        assert page.status_code == 200 and page_took < 1.0
        logging.getLogger("kiln.test").info("stall: slowest 503 after %.2f s, healthz %.2f s",
                                            took[-1], health_took)
        await _eventually(lambda: http.get("/healthz"), 200, within=10)
        assert (await http.get("/api/tasks", headers=bearer)).status_code == 200


async def test_redis_down_answers_503_without_tracebacks(
        private_redis: RedisProcess, tmp_path: Path, live_server_factory: ServerFactory,
        caplog: pytest.LogCaptureFixture) -> None:
    server = live_server_factory(make_settings(private_redis.url, tmp_path / "data", **FAST))
    await add_user(private_redis.url, "alice")
    async with KilnClient(server.url) as client:
        await client.login("alice", PASSWORD)
        private_redis.stop()
        caplog.clear()
        answers = [
            await client.get("/api/tasks"),
            await client.get("/api/events"),
            await client.upload(corpus("OBJ/box.obj")),
            await client.http.post("/api/auth/login",
                                   json={"username": "alice", "password": PASSWORD}),
        ]
        for response in answers:
            _assert_unavailable(response)
        health = await client.http.get("/healthz")
        assert health.status_code == 503 and health.json()["redis"] == "unreachable"
        assert (await client.http.get("/")).status_code == 200
        noisy = [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
        assert not noisy, [r.getMessage() for r in noisy]
        private_redis.start()  # same port: the service picks it up by itself
        await _eventually(lambda: client.http.get("/healthz"), 200, within=10)
        assert (await client.get("/api/tasks")).status_code == 200


async def test_a_full_redis_refuses_uploads_with_503_and_writes_nothing(
        private_redis: RedisProcess, tmp_path: Path,
        live_server_factory: ServerFactory) -> None:
    server = live_server_factory(make_settings(private_redis.url, tmp_path / "data"))
    await add_user(private_redis.url, "alice")
    admin = redis_sync.Redis.from_url(private_redis.url)
    async with KilnClient(server.url) as client:
        await client.login("alice", PASSWORD)
        before = sorted(admin.scan_iter("*"))
        admin.config_set("maxmemory", 1)  # noeviction (the default): every write is refused
        try:
            _assert_unavailable(await client.upload(corpus("OBJ/box.obj")))
            assert sorted(admin.scan_iter("*")) == before
        finally:
            admin.config_set("maxmemory", 0)
        assert (await client.upload(corpus("OBJ/box.obj"))).status_code == 202
    admin.close()


async def test_a_redis_that_evicts_keys_is_refused(private_redis: RedisProcess,
                                                   tmp_path: Path) -> None:
    admin = redis_sync.Redis.from_url(private_redis.url)
    admin.config_set("maxmemory", 64 * 1024**2)
    admin.config_set("maxmemory-policy", "allkeys-lru")
    settings = make_settings(private_redis.url, tmp_path / "data")
    with pytest.raises(RedisMisconfigured, match="allkeys-lru"):
        async with open_services(settings, private_redis.url):
            pass
    admin.config_set("maxmemory-policy", "noeviction")
    async with open_services(settings, private_redis.url) as services:
        assert await services.redis.ping()
    admin.close()


async def test_startup_gives_up_after_the_wait_and_never_logs_the_password(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    url = f"redis://:hunter2-secret@127.0.0.1:{free_port()}/0"  # nothing listens there
    settings = make_settings(url, tmp_path / "data", redis_start_wait=1.2)
    start = time.monotonic()
    with pytest.raises(RedisUnreachable) as refused:
        async with open_services(settings, url):
            pass
    assert time.monotonic() - start < 3.0
    waits = [r.getMessage() for r in caplog.records if "waiting for Redis" in r.getMessage()]
    assert len(waits) == 2, waits  # at 0 s, 0.5 s; the third attempt, at 1.2 s, gives up
    assert waits[0].startswith(f"waiting for Redis at {url.replace('hunter2-secret', '***')} "
                               "(attempt 1, next in 0.5 s)")
    assert "hunter2" not in caplog.text and "hunter2" not in str(refused.value)


async def test_the_server_starts_before_redis_and_waits_for_it(
        tmp_path: Path, live_server_factory: ServerFactory) -> None:
    port = free_port()
    url = f"redis://:hunter2-secret@127.0.0.1:{port}/0"
    settings = make_settings(url, tmp_path / "data", redis_start_wait=30)
    waiting = _LogWatch("waiting for Redis")
    logging.getLogger().addHandler(waiting)
    (tmp_path / "redis").mkdir()
    redis = RedisProcess(tmp_path / "redis", port=port)
    try:
        starting = asyncio.create_task(asyncio.to_thread(live_server_factory, settings))
        assert await asyncio.to_thread(waiting.seen.wait, 10), "no 'waiting for Redis' line"
        assert not starting.done()  # still waiting, not exited
        await asyncio.to_thread(redis.start)
        redis_sync.Redis(port=port).config_set("requirepass", "hunter2-secret")
        server = await asyncio.wait_for(starting, 30)
        async with httpx.AsyncClient(base_url=server.url) as http:
            assert (await http.get("/healthz")).json()["status"] == "ok"
    finally:
        logging.getLogger().removeHandler(waiting)
        redis.stop()
    assert all("hunter2" not in line for line in waiting.lines)
    assert waiting.lines[0].startswith(f"waiting for Redis at redis://:***@127.0.0.1:{port}/0 "
                                       "(attempt 1, next in 0.5 s)")


def test_wrapped_redis_errors_are_recognised() -> None:
    timeout = RedisTimeoutError("Timeout reading from 127.0.0.1:1")
    started = RuntimeError("Caught handled exception, but response already started.")
    started.__cause__ = timeout
    assert is_redis_failure(timeout) and is_redis_failure(started)
    assert is_redis_failure(BaseExceptionGroup("task group", [timeout, ConnectionError()]))
    assert not is_redis_failure(BaseExceptionGroup("task group", [timeout, ValueError()]))
    assert not is_redis_failure(RuntimeError("boom")) and not is_redis_failure(TimeoutError())


class _LogWatch(logging.Handler):
    """Collects the messages containing `text` and flags the first one (from any thread)."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.text = text
        self.lines: list[str] = []
        self.seen = threading.Event()

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if self.text in message:
            self.lines.append(message)
            self.seen.set()


async def _eventually(request: Callable[[], Awaitable[httpx.Response]], status: int, *,
                      within: float) -> None:
    """Wait for the service to heal: repeat `request` until it answers `status`."""
    deadline = time.monotonic() + within
    while (await request()).status_code != status:
        assert time.monotonic() < deadline, f"still not {status} after {within} s"
        await asyncio.sleep(0.1)  # the pace of the probe, not a wait for work


