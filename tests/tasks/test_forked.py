"""A stage on a forked copy of the child: its value, its progress, its errors, its death."""

from __future__ import annotations

import faulthandler
import os
import signal
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
