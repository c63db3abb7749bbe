"""The child pool against real child processes that crash, hang, overeat and print."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from tasks.errors import TaskError
from worker.pool import ChildPool, ChildStartError, Message

GiB = 1024**3
MiB = 1024**2

MakePool = Callable[..., Awaitable[ChildPool]]
Reports = list[tuple[str, float]]


def function(name: str) -> str:
    return f"tests.helpers.child_functions:{name}"


def gone(pid: int) -> bool:
    """True once the process has exited and been reaped (a zombie still answers signal 0)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def only_pid(pool: ChildPool) -> int:
    (pid,) = pool.pids
    return pid


async def run(
    pool: ChildPool, name: str, payload: Message | None = None, *, limit: float = 10.0
) -> tuple[Message, Reports]:
    reports: Reports = []

    def record(stage: str, fraction: float) -> None:
        reports.append((stage, fraction))

    async with asyncio.timeout(limit + 5):
        result = await pool.run(function(name), payload or {}, on_progress=record, timeout=limit)
    return result, reports


async def fails(pool: ChildPool, name: str, payload: Message | None = None, **kw: Any) -> TaskError:
    with pytest.raises(TaskError) as caught:
        await run(pool, name, payload, **kw)
    return caught.value


def start_spin(
    pool: ChildPool, seconds: float = 30.0
) -> tuple[asyncio.Task[Message], asyncio.Event]:
    """A long spin in the background, and an event set once the child reports progress."""
    started = asyncio.Event()
    task = asyncio.create_task(
        pool.run(
            function("spin"),
            {"seconds": seconds},
            on_progress=lambda stage, fraction: started.set(),
            timeout=60,
        )
    )
    return task, started


@pytest.fixture
async def make_pool() -> AsyncIterator[MakePool]:
    pools: list[ChildPool] = []

    async def make(size: int = 1, memory_bytes: int = GiB, **options: Any) -> ChildPool:
        pool = ChildPool(size, memory_bytes, **options)
        pools.append(pool)
        async with asyncio.timeout(30):
            await pool.start()
        return pool

    yield make
    for pool in pools:
        await pool.close()


@pytest.fixture
async def pool(make_pool: MakePool) -> ChildPool:
    return await make_pool()


async def test_result_and_progress_in_order(pool: ChildPool) -> None:
    payload = {"text": "héllo", "numbers": [1, 2.5, None]}
    result, reports = await run(pool, "echo", payload)
    assert result == payload
    assert reports == [("first", 0.0), ("first", 1.0), ("second", 0.5), ("second", 1.0)]


async def test_progress_is_clamped_and_throttled(pool: ChildPool) -> None:
    steps = [["a", -0.5], ["a", 0.2], ["a", 0.3], ["a", 7.0], ["b", 0.25]]
    _, reports = await run(pool, "report", {"steps": steps})
    assert reports[0] == ("a", 0.0)
    assert reports[-2:] == [("a", 1.0), ("b", 0.25)]
    assert all(0.0 <= fraction <= 1.0 for _, fraction in reports)

    result, reports = await run(pool, "spin", {"seconds": 0.3})
    assert result["calls"] > 1000
    assert len(reports) <= 0.3 / 0.05 + 4  # at most one per 50 ms, plus the first and last
    assert [fraction for _, fraction in reports] == sorted(fraction for _, fraction in reports)


async def test_children_keep_freed_memory_and_draw_on_one_thread(
    make_pool: MakePool, monkeypatch: pytest.MonkeyPatch
) -> None:
    names = ["MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "LP_NUM_THREADS"]
    monkeypatch.delenv("MALLOC_MMAP_THRESHOLD_", raising=False)
    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", "12345")  # set by whoever runs Kiln: kept
    result, _ = await run(await make_pool(), "environment", {"names": names})
    assert result == {"MALLOC_MMAP_THRESHOLD_": str(32 * MiB), "MALLOC_TRIM_THRESHOLD_": "12345",
                      "LP_NUM_THREADS": "0"}


async def test_task_error_code_and_message_pass_through(pool: ChildPool) -> None:
    error = await fails(pool, "fail", {"code": "no_geometry", "message": "the file has no faces"})
    assert (error.code, error.message) == ("no_geometry", "the file has no faces")


async def test_unexpected_exception_names_only_its_class(pool: ChildPool) -> None:
    error = await fails(pool, "boom")
    assert error.code == "internal_error"
    assert error.message == "processing failed unexpectedly (ValueError)"
    assert "/secret/path" not in error.message

    error = await fails(pool, "no_such_function")
    assert error.message == "processing failed unexpectedly (AttributeError)"

    error = await fails(pool, "unencodable")
    assert error.message == "processing failed unexpectedly (TypeError)"
    assert (await run(pool, "echo", {"still": "alive"}))[0] == {"still": "alive"}


@pytest.mark.parametrize(
    ("name", "cause"),
    [("abort", "SIGABRT"), ("segfault", "SIGSEGV"), ("exit_nonzero", "exit code 3")],
)
async def test_crash_is_reported_and_the_pool_recovers(
    pool: ChildPool, name: str, cause: str
) -> None:
    pid = only_pid(pool)
    error = await fails(pool, name)
    assert error.code == "parser_crashed"
    assert error.message == f"the file crashed the parser ({cause})"
    assert gone(pid)
    assert (await run(pool, "echo", {"n": 1}))[0] == {"n": 1}


async def test_sigkill_not_sent_by_the_pool_counts_as_killed_by_the_system(
        pool: ChildPool) -> None:
    """`killed` is transient (retried after a backoff), unlike the child's own memory limit."""
    error = await fails(pool, "sigkill")
    assert error.code == "killed"
    assert (await run(pool, "echo", {"n": 1}))[0] == {"n": 1}


async def test_timeout_kills_the_child(pool: ChildPool) -> None:
    pid = only_pid(pool)
    error = await fails(pool, "spin", {"seconds": 30}, limit=0.5)
    assert error.code == "timeout"
    assert error.message == "processing took longer than 0.5 s and was stopped"
    assert gone(pid)
    assert (await run(pool, "echo", {"n": 1}))[0] == {"n": 1}


async def test_cancelling_the_caller_kills_the_child_within_a_second(pool: ChildPool) -> None:
    pid = only_pid(pool)
    task, started = start_spin(pool)
    async with asyncio.timeout(10):
        await started.wait()
    cancelled_at = time.monotonic()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        async with asyncio.timeout(1):
            await task
    assert time.monotonic() - cancelled_at < 1.0
    assert gone(pid)
    assert (await run(pool, "echo", {"n": 1}))[0] == {"n": 1}


async def test_memory_limit(make_pool: MakePool) -> None:
    pool = await make_pool(memory_bytes=1 * GiB)
    error = await fails(pool, "allocate", {"bytes": 2 * GiB})
    assert error.code == "memory_limit"
    assert error.message == "processing needed more memory than the limit of 1.0 GiB"
    assert (await run(pool, "allocate", {"bytes": 64 * MiB}))[0] == {"bytes": 64 * MiB}


async def test_two_children_work_at_once(make_pool: MakePool) -> None:
    pool = await make_pool(size=2)
    spins = [start_spin(pool) for _ in range(2)]
    async with asyncio.timeout(10):
        await asyncio.gather(*(started.wait() for _, started in spins))
    busy = pool.pids
    assert len(busy) == 2
    assert not any(task.done() for task, _ in spins)
    for task, _ in spins:
        task.cancel()
    await asyncio.gather(*(task for task, _ in spins), return_exceptions=True)
    assert all(gone(pid) for pid in busy)


async def test_waiting_callers_are_served_in_arrival_order(pool: ChildPool) -> None:
    blocker, started = start_spin(pool)
    async with asyncio.timeout(10):
        await started.wait()
    finished: list[int] = []

    async def call(index: int) -> None:
        await run(pool, "echo", {"index": index})
        finished.append(index)

    callers = [asyncio.create_task(call(index)) for index in range(4)]
    await asyncio.sleep(0)  # let every caller queue up behind the blocker
    blocker.cancel()
    async with asyncio.timeout(10):
        await asyncio.gather(*callers)
    assert finished == [0, 1, 2, 3]


async def test_large_results(pool: ChildPool) -> None:
    result, _ = await run(pool, "large", {"bytes": 16 * MiB})
    assert len(result["text"]) == 16 * MiB

    error = await fails(pool, "large", {"bytes": 65 * MiB})
    assert error.code == "internal_error"
    assert (await run(pool, "echo", {"n": 1}))[0] == {"n": 1}


async def test_printing_does_not_break_the_protocol(pool: ChildPool) -> None:
    result, reports = await run(pool, "chatty")
    assert (result, reports) == ({"said": "hello"}, [("chat", 0.5)])
    assert (await run(pool, "echo", {"n": 1}))[0] == {"n": 1}


async def test_child_is_retired_after_max_tasks(make_pool: MakePool) -> None:
    pool = await make_pool(max_tasks_per_child=2)
    first = only_pid(pool)
    await run(pool, "echo")
    assert pool.pids == {first}
    await run(pool, "echo")
    assert gone(first)
    await run(pool, "echo")
    assert first not in pool.pids and len(pool.pids) == 1


async def test_a_child_that_keeps_too_much_memory_retires(make_pool: MakePool) -> None:
    pool = await make_pool(max_resident_bytes=400 * MiB)
    first = only_pid(pool)
    result, _ = await run(pool, "keep", {"bytes": 8 * MiB})  # stays well under the limit
    assert result["pid"] == first and pool.pids == {first}
    result, _ = await run(pool, "keep", {"bytes": 420 * MiB})  # now resident past it
    assert result["pid"] == first and gone(first)
    result, _ = await run(pool, "pid")
    assert result["pid"] != first and len(pool.pids) == 1


async def test_a_retiring_childs_successor_starts_before_it_stops(
        make_pool: MakePool, tmp_path: Path) -> None:
    pool = await make_pool(max_tasks_per_child=2)
    first = only_pid(pool)
    await run(pool, "echo")
    release = tmp_path / "release"
    last = asyncio.Event()
    waiting = asyncio.create_task(pool.run(
        function("wait_for_file"), {"path": str(release)},
        on_progress=lambda stage, fraction: last.set(), timeout=60))
    await asyncio.wait_for(last.wait(), 30)  # the first child runs its last task...
    async with asyncio.timeout(30):
        while len(pool.pids) < 2:  # noqa: ASYNC110 - no event says a child was spawned
            await asyncio.sleep(0.01)
    (successor,) = pool.pids - {first}  # ...while its successor is already starting
    release.touch()
    assert (await waiting)["pid"] == first
    result, _ = await run(pool, "pid")
    assert result["pid"] == successor and gone(first) and pool.pids == {successor}


async def test_children_run_at_the_niceness_they_are_given(make_pool: MakePool) -> None:
    pool = await make_pool(niceness=5)
    result, _ = await run(pool, "niceness")
    assert result["nice"] == min(19, os.nice(0) + 5)


async def test_child_that_died_while_idle_is_replaced(pool: ChildPool) -> None:
    pid = only_pid(pool)
    os.kill(pid, signal.SIGKILL)
    async with asyncio.timeout(5):
        # The pool learns of an idle child's death only when it is reaped; no event says so.
        while pid in pool.pids:  # noqa: ASYNC110
            await asyncio.sleep(0.01)
    assert (await run(pool, "echo", {"n": 1}))[0] == {"n": 1}


async def test_close_kills_every_child(make_pool: MakePool) -> None:
    pool = await make_pool(size=2)
    pids = pool.pids
    busy, started = start_spin(pool)
    async with asyncio.timeout(10):
        await started.wait()
    await pool.close()
    assert pool.pids == frozenset()
    assert all(gone(pid) for pid in pids)
    with pytest.raises(TaskError) as caught:
        await busy
    assert caught.value.code == "worker_lost"
    await pool.close()
    assert (await fails(pool, "echo")).code == "worker_lost"


async def test_run_before_start_is_a_programming_error() -> None:
    with pytest.raises(RuntimeError):
        await ChildPool(1, GiB).run(function("echo"), {}, on_progress=print, timeout=1)


async def test_failed_preload_stops_start(make_pool: MakePool) -> None:
    with pytest.raises(ChildStartError):
        await make_pool(preload=["tests.helpers.no_such_module"])


async def test_real_stack_preloads_within_the_limit(make_pool: MakePool) -> None:
    modules = ["numpy", "scipy.spatial", "trimesh", "PIL.Image"]
    pool = await make_pool(memory_bytes=1 * GiB, preload=modules)
    status, _ = await run(pool, "memory_status")
    assert status["VmPeak"] < 1 * GiB
