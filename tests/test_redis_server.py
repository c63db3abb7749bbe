"""The private redis-server: unix socket, AOF across restarts, supervision, TCP fallback, errors."""

from __future__ import annotations

import asyncio
import os
import signal
import stat
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from redis.exceptions import AuthenticationError
from redis.exceptions import ConnectionError as RedisConnectionError

from redis_server import PrivateRedis, RedisStartError, connect_or_start

StartRedis = Callable[[Path], Awaitable[PrivateRedis]]


@pytest.fixture
async def start_redis() -> AsyncIterator[StartRedis]:
    """Start private redis-servers that are stopped at the end of the test, whatever happens."""
    servers: list[PrivateRedis] = []

    async def start(directory: Path) -> PrivateRedis:
        server = PrivateRedis(directory)
        servers.append(server)
        await server.start()
        return server

    yield start
    for server in servers:
        await server.stop()


def assert_gone(pid: int) -> None:
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def long_directory(tmp_path: Path) -> Path:
    directory = tmp_path / ("d" * 110)
    assert len(os.fsencode(directory / "redis.sock")) > 107
    return directory


async def test_serves_on_a_unix_socket_only(tmp_path: Path, start_redis: StartRedis) -> None:
    directory = tmp_path / "redis data"  # a space, to exercise quoting in redis.conf
    server = await start_redis(directory)
    assert server.url.startswith("unix://")
    async with aioredis.Redis.from_url(server.url) as client:
        assert await client.ping()
        assert await client.config_get("port") == {"port": "0"}
        assert await client.config_get("appendonly") == {"appendonly": "yes"}
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    assert stat.S_IMODE((directory / "redis.sock").stat().st_mode) == 0o700


async def test_data_survives_stop_and_start(tmp_path: Path, start_redis: StartRedis) -> None:
    server = await start_redis(tmp_path / "redis")
    async with aioredis.Redis.from_url(server.url) as client:
        await client.set("greeting", "hello")
    pid = server.pid
    assert pid is not None
    await server.stop()
    assert server.pid is None
    assert_gone(pid)
    await server.stop()  # idempotent

    await server.start()
    async with aioredis.Redis.from_url(server.url) as client:
        assert await client.get("greeting") == b"hello"


async def test_supervisor_restarts_a_killed_server(tmp_path: Path) -> None:
    logged: list[str] = []
    server = PrivateRedis(tmp_path / "redis", log=logged.append)
    await server.start()
    try:
        async with aioredis.Redis.from_url(server.url) as client:
            await client.set("greeting", "hello")
            killed = server.pid
            assert killed is not None
            os.kill(killed, signal.SIGKILL)

            deadline = asyncio.get_running_loop().time() + 10
            while True:
                if server.pid not in (None, killed):
                    try:
                        value = await client.get("greeting")  # the same client reconnects
                        break
                    except RedisConnectionError:
                        pass
                assert asyncio.get_running_loop().time() < deadline, logged
                await asyncio.sleep(0.05)
        assert value == b"hello"
        assert_gone(killed)
        assert any("exited" in line for line in logged)
        assert any("restarted" in line for line in logged)
    finally:
        await server.stop()


async def test_long_directory_falls_back_to_tcp_with_a_password(
    tmp_path: Path, start_redis: StartRedis
) -> None:
    directory = long_directory(tmp_path)
    server = await start_redis(directory)
    assert server.url.startswith("redis://:")
    assert "@127.0.0.1:" in server.url
    async with aioredis.Redis.from_url(server.url) as client:
        await client.set("greeting", "hello")
        assert await client.config_get("bind") == {"bind": "127.0.0.1"}
    anonymous = server.url.replace(server.url.split("@")[0] + "@", "redis://")
    async with aioredis.Redis.from_url(anonymous) as client:
        with pytest.raises(AuthenticationError):
            await client.get("greeting")
    assert stat.S_IMODE((directory / "redis.conf").stat().st_mode) == 0o600
    assert not (directory / "redis.sock").exists()

    url = server.url
    await server.stop()
    await server.start()  # same url after a restart, and the AOF kept the data
    assert server.url == url
    async with aioredis.Redis.from_url(server.url) as client:
        assert await client.get("greeting") == b"hello"


@pytest.mark.parametrize("transport", ["unix", "tcp"])
async def test_connect_or_start_reuses_a_running_server(
    tmp_path: Path, start_redis: StartRedis, transport: str
) -> None:
    directory = tmp_path / "redis" if transport == "unix" else long_directory(tmp_path)
    server = await start_redis(directory)

    url, started = await connect_or_start(directory)

    assert (url, started) == (server.url, None)
    with pytest.raises(RedisStartError, match="already serves"):
        await PrivateRedis(directory).start()


async def test_connect_or_start_starts_one_when_none_runs(tmp_path: Path) -> None:
    url, server = await connect_or_start(tmp_path / "redis")
    assert server is not None
    try:
        async with aioredis.Redis.from_url(url) as client:
            assert await client.ping()
    finally:
        await server.stop()


async def test_missing_executable_is_a_clear_error(tmp_path: Path) -> None:
    server = PrivateRedis(tmp_path / "redis", executable="kiln-no-such-redis-server")
    with pytest.raises(RedisStartError, match="'kiln-no-such-redis-server' was not found on PATH"):
        await server.start()
    assert server.pid is None


async def test_a_server_that_dies_at_startup_reports_its_log(tmp_path: Path) -> None:
    fake = tmp_path / "fake-redis-server"
    fake.write_text("#!/bin/sh\necho 'FATAL: cannot start' >&2\nexit 3\n")
    fake.chmod(0o755)
    server = PrivateRedis(tmp_path / "redis", executable=str(fake))
    with pytest.raises(RedisStartError, match=r"(?s)exited with code 3.*FATAL: cannot start"):
        await server.start()
    assert server.pid is None
