"""A stage on a forked copy of the child: its value, its progress, its errors, its death."""

from __future__ import annotations

import faulthandler
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tasks.errors import TaskError, TooLarge
from tasks.forked import Forked
from tasks.progress import Progress


def summed(values: np.ndarray[Any, Any], progress: Progress) -> tuple[int, int]:
    progress("summing", 0.5)
    return int(values.sum()), os.getpid()


def refused(progress: Progress) -> None:
    raise TooLarge("far too big")


def broken(progress: Progress) -> None:
    raise KeyError("/a/path/of/this/machine")


def crash(progress: Progress) -> None:
    faulthandler.disable()  # pytest's handler would print every thread's stack
    os.kill(os.getpid(), signal.SIGSEGV)


def wait_forever(pid_file: Path, progress: Progress) -> None:
    pid_file.write_text(str(os.getpid()))
    while True:
        time.sleep(0.05)


def test_the_fork_sees_the_parents_memory_and_reports_through_it() -> None:
    values = np.arange(1_000_000, dtype=np.int64)  # not copied: the fork reads it in place
    seen: list[tuple[str, float]] = []
    with Forked(summed, values) as fork:
        total, pid = fork.result(lambda stage, fraction: seen.append((stage, fraction)))
    assert total == int(values.sum()) and pid != os.getpid()
    assert seen == [("summing", 0.5)]


def test_a_task_error_comes_back_with_its_code() -> None:
    with Forked(refused) as fork, pytest.raises(TaskError) as raised:
        fork.result(lambda stage, fraction: None)
    assert (raised.value.code, raised.value.message) == ("too_large", "far too big")


def test_an_unexpected_error_names_its_class_only() -> None:
    with Forked(broken) as fork, pytest.raises(TaskError) as raised:
        fork.result(lambda stage, fraction: None)
    assert raised.value.code == "internal_error"
    assert "KeyError" in raised.value.message and "/a/path" not in raised.value.message


def test_a_crashed_fork_is_a_parser_crash() -> None:
    with Forked(crash) as fork, pytest.raises(TaskError) as raised:
        fork.result(lambda stage, fraction: None)
    assert raised.value.code == "parser_crashed" and "SIGSEGV" in raised.value.message


def test_leaving_the_block_kills_a_fork_nobody_waited_for(tmp_path: Path) -> None:
    pid_file = tmp_path / "fork.pid"
    with Forked(wait_forever, pid_file):
        deadline = time.monotonic() + 10
        while not pid_file.exists() or not pid_file.read_text():
            assert time.monotonic() < deadline, "the fork never started"
            time.sleep(0.01)
    pid = int(pid_file.read_text())
    with pytest.raises(ProcessLookupError):  # killed and reaped: not even a zombie is left
        os.kill(pid, 0)


def test_the_fork_dies_with_its_parent(tmp_path: Path) -> None:
    pid_file = tmp_path / "fork.pid"
    script = (
        "import sys, time\n"
        "from pathlib import Path\n"
        "from tests.tasks.test_forked import wait_forever\n"
        "from tasks.forked import Forked\n"
        f"fork = Forked(wait_forever, Path({str(pid_file)!r}))\n"
        "time.sleep(60)\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", script], cwd=Path(__file__).parents[2])
    try:
        deadline = time.monotonic() + 20
        while not pid_file.exists() or not pid_file.read_text():
            assert time.monotonic() < deadline and parent.poll() is None, "the fork never started"
            time.sleep(0.01)
        fork_pid = int(pid_file.read_text())
        parent.kill()  # SIGKILL to the parent alone, not its process group
        parent.wait(timeout=10)
        deadline = time.monotonic() + 10
        while _alive(fork_pid):
            assert time.monotonic() < deadline, "the fork outlived its parent"
            time.sleep(0.01)
    finally:
        parent.kill()
        parent.wait(timeout=10)
        if pid_file.exists() and pid_file.read_text() and _alive(int(pid_file.read_text())):
            os.kill(int(pid_file.read_text()), signal.SIGKILL)  # a failed run leaves no orphan


def _alive(pid: int) -> bool:
    """True while `pid` runs (a zombie waiting for init to reap it counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False
