"""A private redis-server and a real uvicorn serving Kiln (embedded worker) on 127.0.0.1, for
benchmarks; both stopped when the `with` ends."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import uvicorn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from starlette.datastructures import Secret  # noqa: E402

from auth.accounts import Accounts  # noqa: E402
from server import build_app  # noqa: E402
from services import connect_redis  # noqa: E402
from settings import Settings  # noqa: E402

USER, PASSWORD = "bench", "bench password"


@dataclass(frozen=True)
class Live:
    base_url: str
    redis_url: str


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def private_redis(directory: str) -> Iterator[str]:
    """A redis-server on a free loopback port, its files in `directory`; its url."""
    port = _free_port()
    redis = subprocess.Popen(
        [shutil.which("redis-server") or "redis-server", "--port", str(port),
         "--bind", "127.0.0.1", "--save", "", "--dir", directory, "--daemonize", "no",
         "--logfile", str(Path(directory) / "redis.log")])
    try:
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        redis.kill()
        redis.wait()


@contextlib.contextmanager
def live_service(**settings: Any) -> Iterator[Live]:
    """Kiln with `settings` (Settings fields) over its own Redis; the user USER exists."""
    with tempfile.TemporaryDirectory(prefix="kiln-bench-") as tmp, private_redis(tmp) as url:
        # one bench user uploads as fast as it can: no per-user limit unless asked
        config = Settings(redis_url=url, data_dir=Path(tmp) / "data",
                          jwt_secret=Secret("bench-" + "x" * 40),
                          **{"upload_requests_per_minute": 0, **settings})
        asyncio.run(_add_user(url))
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        server = uvicorn.Server(uvicorn.Config(build_app(config), log_level="warning",
                                               loop="uvloop", timeout_graceful_shutdown=1))
        thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]})
        thread.start()
        try:
            while not server.started:
                time.sleep(0.01)
            yield Live(f"http://127.0.0.1:{sock.getsockname()[1]}", url)
        finally:
            server.should_exit = True
            thread.join()


async def wait_for_redis(url: str) -> None:
    """Until the redis-server at `url` answers (it has just been started)."""
    client = connect_redis(url)
    try:
        for _ in range(200):
            try:
                await client.ping()
                return
            except Exception:
                await asyncio.sleep(0.02)
    finally:
        await client.aclose(close_connection_pool=True)


async def sign_in(http: httpx.AsyncClient) -> dict[str, str]:
    """USER's Authorization header, from a sign-in through `http`."""
    answer = await http.post("/api/auth/login", json={"username": USER, "password": PASSWORD})
    return {"Authorization": f"Bearer {answer.json()['access_token']}"}


async def _add_user(url: str) -> None:
    await wait_for_redis(url)
    client = connect_redis(url)
    await Accounts(client).create(USER, PASSWORD)
    await client.aclose(close_connection_pool=True)
