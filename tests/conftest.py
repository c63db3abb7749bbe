"""Test fixtures: a private redis-server per session (flushed per test), live uvicorn servers."""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest
import redis as redis_sync
from starlette.datastructures import Secret

from services import Services, open_services
from settings import Settings
from tests.helpers.watchdog import tasks_dumped_before_timeout
from tests.live import LiveServer, start_live_server

ROOT = Path(__file__).resolve().parents[1]
CORPUS = ROOT / "tests" / "corpus"
TEST_SECRET = "test-secret-" + "x" * 52


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RedisProcess:
    """A redis-server this test session owns: safe to flush, kill, pause and restart."""

    def __init__(self, directory: Path, port: int | None = None) -> None:
        self.directory = directory
        self.port = port or free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        executable = shutil.which("redis-server")
        if executable is None:
            pytest.exit("redis-server is not installed: run scripts/test, which installs it")
        self.process = subprocess.Popen(
            [executable, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "yes", "--appendfsync", "always", "--dir", str(self.directory),
             "--daemonize", "no", "--logfile", str(self.directory / "redis.log")],
            start_new_session=True,
        )
        client = redis_sync.Redis.from_url(self.url)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                break
            except redis_sync.ConnectionError:
                if time.monotonic() > deadline or self.process.poll() is not None:
                    raise RuntimeError("the test redis-server did not start") from None
                time.sleep(0.02)  # waiting for an external process to listen
        client.close()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
        self.process = None


@pytest.fixture(scope="session")
def redis_process() -> Iterator[RedisProcess]:
    with tempfile.TemporaryDirectory(prefix="kiln-redis-") as directory:
        server = RedisProcess(Path(directory))
        server.start()
        yield server
        server.stop()


@pytest.fixture
def redis_url(redis_process: RedisProcess) -> Iterator[str]:
    """The session's redis-server, empty at the start of each test."""
    client = redis_sync.Redis.from_url(redis_process.url)
    client.flushall()
    client.close()
    yield redis_process.url


def make_settings(redis_url: str, data_dir: Path, **changes: object) -> Settings:
    base = Settings(
        redis_url=redis_url, data_dir=data_dir, jwt_secret=Secret(TEST_SECRET),
        worker_concurrency=2, child_memory_bytes=4 * 1024**3, task_timeout=60,
        job_lease=3.0, sse_ping=1.0,
    )
    return base.with_(**changes)


@pytest.fixture
def settings(redis_url: str, tmp_path: Path) -> Settings:
    return make_settings(redis_url, tmp_path / "data")


@pytest.fixture
async def services(settings: Settings, request: pytest.FixtureRequest
                   ) -> AsyncIterator[Services]:
    """The process's services on the test Redis, as a worker or the web app opens them; a test
    that hangs prints its asyncio tasks' stacks before it times out."""
    with tasks_dumped_before_timeout(request):
        async with open_services(settings, settings.redis_url or "") as opened:
            yield opened


@pytest.fixture
def live_server_factory() -> Iterator[Callable[..., LiveServer]]:
    started: list[LiveServer] = []

    def start(settings: Settings, **kwargs: object) -> LiveServer:
        server = start_live_server(settings, **kwargs)  # type: ignore[arg-type]
        started.append(server)
        return server

    yield start
    for server in reversed(started):
        server.stop()


@pytest.fixture
def live_server(settings: Settings, live_server_factory: Callable[..., LiveServer]) -> LiveServer:
    return live_server_factory(settings)


def corpus(relative: str) -> Path:
    path = CORPUS / relative
    if not path.exists():
        pytest.fail(f"corpus file missing: {path}")
    return path
