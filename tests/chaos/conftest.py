"""Chaos fixtures: every test here is marked `chaos`; its Kiln processes die with it, logs shown."""

from __future__ import annotations

from collections.abc import Generator, Iterator
from pathlib import Path

import pytest

from tests.chaos.processes import Processes
from tests.conftest import RedisProcess

HERE = Path(__file__).resolve().parent
LOG_TAIL = 200
"""Lines of each process's log shown under a failed test."""


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if HERE in item.path.resolve().parents:
            item.add_marker(pytest.mark.chaos)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]
                              ) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    if report.failed and report.when != "teardown":
        for value in getattr(item, "funcargs", {}).values():
            if isinstance(value, Processes):
                for name, text in value.logs():
                    tail = "\n".join(text.splitlines()[-LOG_TAIL:])
                    report.sections.append((f"kiln process {name!r} (last {LOG_TAIL} lines)",
                                            tail))
    return report


@pytest.fixture
def processes(tmp_path: Path, redis_url: str) -> Iterator[Processes]:
    """Kiln processes on the session's Redis (flushed), all killed by PID when the test ends;
    then none of their logs may hold a traceback or a KeyError."""
    group = Processes(tmp_path / "kiln", redis_url)
    yield group
    group.cleanup()
    group.assert_clean_logs()


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[RedisProcess]:
    """A redis-server (AOF, fsync always) of this test's own, to kill and restart on its port."""
    directory = tmp_path / "redis"
    directory.mkdir()
    server = RedisProcess(directory)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def processes_on_private_redis(tmp_path: Path, private_redis: RedisProcess
                               ) -> Iterator[Processes]:
    """Kiln processes on `private_redis`, killed by PID when the test ends; logs checked."""
    group = Processes(tmp_path / "kiln", private_redis.url)
    yield group
    group.cleanup()
    group.assert_clean_logs()
