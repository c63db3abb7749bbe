"""A fixed-size pool of killable child processes that run CPU-bound tasks off the event loop."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import os
import signal
import sys
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from tasks.errors import (
    INTERNAL_ERROR,
    KILLED,
    MEMORY_LIMIT,
    PARSER_CRASHED,
    TIMEOUT,
    WORKER_LOST,
    TaskError,
)

logger = logging.getLogger(__name__)

PROJECT_ROOT = Path(__file__).resolve().parent.parent
STREAM_LIMIT = 64 * 1024**2
READY_TIMEOUT = 60.0
Message = dict[str, Any]
"""A JSON object: a request's payload, a reply's value (for a pipeline, tasks.progress's Payload
and Result)."""
ONE_THREAD = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
              # llvmpipe draws in the calling thread: the pool's children are the parallelism
              # (measured: a fifth less CPU per small mesh task with two children busy)
              "LP_NUM_THREADS": "0"}
STEADY_HEAP = {"MALLOC_MMAP_THRESHOLD_": str(32 << 20), "MALLOC_TRIM_THRESHOLD_": str(64 << 20)}
"""glibc's heap keeps blocks under 32 MiB and up to 64 MiB of freed memory, so that a child's
next task reuses its pages instead of faulting fresh zeroed ones in (measured: a 12-face mesh
task took 3,600 page faults and 8-11 ms of kernel time, 6% of its CPU; then 3). An environment
that sets them itself keeps its own. (32 MiB is the largest mmap threshold glibc takes on 64-bit
Linux; a larger one is ignored.)"""


class ChildStartError(RuntimeError):
    """A child died or hung before it was ready: a preload failed or the memory limit is too low."""


class _Child:
    """One child process and what the pool knows about it."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.tasks_run = 0
        self.resident = 0  # bytes, as the child reported after its last task
        self.killed = False
        # started when this child takes its last task, to take its slot warm when it retires
        self.successor: asyncio.Future[_Child] | None = None

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def alive(self) -> bool:
        return self.process.returncode is None

    def kill(self) -> None:
        if self.alive:
            self.killed = True
            # The child leads its own session, so this also takes down anything it started.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.pid, signal.SIGKILL)

    async def send(self, line: bytes) -> None:
        assert self.process.stdin is not None
        # A child that died a moment ago cannot read: the EOF on its stdout will say why.
        with contextlib.suppress(ConnectionError):
            self.process.stdin.write(line)
            await self.process.stdin.drain()

    async def receive(self) -> dict[str, Any] | None:
        """The next message, or None once the child has closed its end (it is exiting)."""
        assert self.process.stdout is not None
        try:
            line = await self.process.stdout.readline()
            if not line:
                return None
            message = json.loads(line)
        except ValueError:
            # A line longer than STREAM_LIMIT, or not JSON: the stream can no longer be trusted.
            raise TaskError(
                f"processing produced a reply larger than {STREAM_LIMIT >> 20} MiB or garbled",
                code=INTERNAL_ERROR,
            ) from None
        if not isinstance(message, dict):
            raise _protocol_error()
        return message


class ChildPool:
    """At most `size` tasks at once, each in its own warm child process that the pool may kill.

    A caller that is cancelled, or whose task outlives `timeout`, has its child killed and reaped
    before `run` returns; a child that crashes or is killed is replaced in the background. A
    child retires after `max_tasks_per_child` tasks; its successor starts warming when it takes
    its last one (for that while, one child more than `size` is alive), so no task waits for a
    preload. A child that keeps more than `max_resident_bytes` resident after a task (a large
    model leaves the allocator holding memory) retires at once.
    """

    def __init__(
        self,
        size: int,
        memory_bytes: int,
        *,
        preload: Sequence[str] = (),
        max_tasks_per_child: int = 1000,
        max_resident_bytes: int = 1024**3,
        env: Mapping[str, str] | None = None,
        niceness: int = 0,
    ) -> None:
        if min(size, memory_bytes, max_tasks_per_child, max_resident_bytes) < 1:
            raise ValueError("size, memory_bytes, max_tasks_per_child and max_resident_bytes "
                             "must be positive")
        self._size = size
        self._max_tasks = max_tasks_per_child
        self._max_resident = max_resident_bytes
        self._arguments = ["--memory-bytes", str(memory_bytes), "--nice", str(niceness)]
        if preload:
            self._arguments += ["--preload", ",".join(preload)]
        self._env = child_environment(env)
        self._slots = asyncio.Semaphore(size)  # FIFO: waiters are served in arrival order
        self._free: deque[asyncio.Future[_Child]] = deque()  # one per free slot, maybe warming
        self._warming: set[asyncio.Task[_Child]] = set()
        self._children: set[_Child] = set()  # every child spawned and not yet reaped
        self._ids = itertools.count(1)
        self._started = False
        self._closed = False

    @property
    def pids(self) -> frozenset[int]:
        """Process ids of the children that are alive now (idle, busy or warming up)."""
        return frozenset(child.pid for child in self._children if child.alive)

    async def start(self) -> None:
        """Spawn `size` children and wait until they are warm; ChildStartError if one fails."""
        if self._started:
            raise RuntimeError("ChildPool.start() was already called")
        self._started = True
        for _ in range(self._size):
            self._refill()
        await asyncio.wait(self._free)
        errors = [error for error in _exceptions(self._free) if error is not None]
        if errors:
            await self.close()
            raise errors[0]

    async def close(self) -> None:
        """Kill and reap every child; runs still in progress or waiting fail with `worker_lost`."""
        self._closed = True
        for child in list(self._children):
            child.kill()
        if self._warming:
            await asyncio.wait(set(self._warming))
        await asyncio.gather(*(self._reap(child) for child in list(self._children)))
        _exceptions(self._free)
        self._free.clear()

    async def run(
        self,
        function: str,
        payload: Mapping[str, object],
        *,
        on_progress: Callable[[str, float], None],
        timeout: float,  # noqa: ASYNC109 - the child's deadline, excluding the wait for a slot
        on_partial: Callable[[Message], None] | None = None,
    ) -> Message:
        """Run `package.module:name` on `payload` in a child; raise TaskError for any failure.

        `on_progress(stage, fraction)` is called on the event loop for every progress message,
        `on_partial(value)` for every partial result (`tasks.progress.share`).
        `timeout` counts from the moment a child takes the task, not while waiting for one.
        """
        if not self._started:
            raise RuntimeError("call ChildPool.start() before run()")
        request_id = next(self._ids)
        request = {"id": request_id, "function": function, "payload": payload}
        line = json.dumps(request, separators=(",", ":")).encode() + b"\n"
        async with self._slots:
            child = await self._checkout()
            if child.tasks_run == self._max_tasks - 1 and child.successor is None:
                child.successor = self._start_spawn()
            reusable = False
            deadline = asyncio.timeout(timeout)
            try:
                async with deadline:
                    outcome = await self._exchange(child, request_id, line, on_progress,
                                                   on_partial)
                reusable = not (isinstance(outcome, TaskError) and outcome.code == MEMORY_LIMIT)
            except TimeoutError:
                if not deadline.expired():
                    raise
                message = f"processing took longer than {timeout:g} s and was stopped"
                raise TaskError(message, code=TIMEOUT) from None
            finally:
                if (reusable and child.alive and child.tasks_run < self._max_tasks
                        and child.resident <= self._max_resident):
                    self._free.append(_resolved(child))
                else:
                    await self._discard(child)
        if isinstance(outcome, TaskError):
            raise outcome
        return outcome

    async def _exchange(
        self,
        child: _Child,
        request_id: int,
        line: bytes,
        on_progress: Callable[[str, float], None],
        on_partial: Callable[[Message], None] | None,
    ) -> Message | TaskError:
        """Send a request and follow it to the reply; a TaskError returned is the child's answer."""
        child.tasks_run += 1
        await child.send(line)
        while (message := await child.receive()) is not None:
            if message.get("id") != request_id:
                raise _protocol_error()
            kind = message.get("type")
            if kind == "progress":
                on_progress(message["stage"], message["fraction"])
            elif kind == "partial":
                if on_partial is not None:
                    on_partial(message["value"])
            elif kind == "result":
                child.resident = int(message.get("rss") or 0)
                value: Message = message["value"]
                return value
            elif kind == "error":
                child.resident = int(message.get("rss") or 0)
                return TaskError(message["message"], code=message["code"])
            else:
                raise _protocol_error()
        returncode = await child.process.wait()
        if child.killed:
            raise _closed_error()
        raise _crash_error(returncode)

    async def _checkout(self) -> _Child:
        """Take a free slot's child, replacing one that died while idle or failed to start."""
        failures = 0
        while True:
            if self._closed:
                raise _closed_error()
            warming = self._pop_free()
            try:
                child = await asyncio.shield(warming)
            except asyncio.CancelledError:
                self._free.append(warming)
                raise
            except Exception as error:
                failures += 1
                if self._closed:
                    raise _closed_error() from None
                if failures == 1:
                    self._refill()
                    continue
                self._free.append(warming)  # the next caller tries a fresh child again
                message = "the worker could not start a processing child"
                raise TaskError(message, code=INTERNAL_ERROR) from error
            if child.alive:
                return child
            await self._discard(child)

    def _pop_free(self) -> asyncio.Future[_Child]:
        """A free slot's child, preferring one that is already warm."""
        warm = [f for f in self._free if f.done() and not f.cancelled() and f.exception() is None]
        future = warm[0] if warm else self._free[0]
        self._free.remove(future)
        return future

    def _refill(self, successor: asyncio.Future[_Child] | None = None) -> None:
        """Give a slot a fresh child (`successor`, if one is warming already)."""
        if self._closed:
            if successor is not None:
                successor.add_done_callback(lambda done: _exceptions([done]))
            return
        self._free.append(successor or self._start_spawn())

    def _start_spawn(self) -> asyncio.Task[_Child]:
        task = asyncio.get_running_loop().create_task(self._spawn())
        self._warming.add(task)
        task.add_done_callback(self._warming.discard)
        return task

    async def _discard(self, child: _Child) -> None:
        """Kill and reap a child that may not run another task; its slot gets its successor (if
        one was started) or a child started now."""
        successor, child.successor = child.successor, None
        try:
            child.kill()
            await self._reap(child)
        finally:
            self._refill(successor)

    async def _reap(self, child: _Child) -> None:
        await child.process.wait()
        self._children.discard(child)

    async def _spawn(self) -> _Child:
        process = await asyncio.create_subprocess_exec(
            # -P keeps the working directory off sys.path: only PYTHONPATH can shadow a package.
            *(sys.executable, "-P", "-m", "worker.child", *self._arguments),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            env=self._env,
            start_new_session=True,  # a Ctrl-C in the terminal is for the parent to handle
            limit=STREAM_LIMIT,
        )
        child = _Child(process)
        self._children.add(child)
        try:
            if self._closed:
                raise _closed_error()
            try:
                async with asyncio.timeout(READY_TIMEOUT):
                    message = await child.receive()
            except TimeoutError:
                raise ChildStartError(f"no child ready within {READY_TIMEOUT:g} s") from None
            if message is None:
                returncode = await process.wait()
                raise ChildStartError(f"a child exited with code {returncode} before it was ready")
            if message.get("type") != "ready":
                raise _protocol_error()
            if self._closed:
                raise _closed_error()
        except BaseException as error:
            if isinstance(error, Exception) and not self._closed:
                logger.error("could not start a child process: %s", error)
            child.kill()
            await self._reap(child)
            raise
        return child


def child_environment(extra: Mapping[str, str] | None) -> dict[str, str]:
    """The parent's environment (over STEADY_HEAP), one thread per child, `extra`, and the
    project on PYTHONPATH."""
    env = {**STEADY_HEAP, **os.environ, **ONE_THREAD, **(extra or {})}
    paths = [str(PROJECT_ROOT), env.get("PYTHONPATH", "")]
    env["PYTHONPATH"] = os.pathsep.join(path for path in paths if path)
    return env


def _resolved(child: _Child) -> asyncio.Future[_Child]:
    future: asyncio.Future[_Child] = asyncio.get_running_loop().create_future()
    future.set_result(child)
    return future


def _exceptions(futures: Iterable[asyncio.Future[_Child]]) -> list[BaseException | None]:
    """The exceptions of the finished futures (which also marks them as retrieved)."""
    return [f.exception() for f in futures if f.done() and not f.cancelled()]


def _crash_error(returncode: int) -> TaskError:
    if returncode == -signal.SIGKILL:
        # Not sent by the pool: on Linux that is almost always the kernel's OOM killer.
        message = "processing was killed by the system, most likely for using too much memory"
        return TaskError(message, code=KILLED)
    if returncode < 0:
        try:
            cause = signal.Signals(-returncode).name
        except ValueError:
            cause = f"signal {-returncode}"
    else:
        cause = f"exit code {returncode}"
    return TaskError(f"the file crashed the parser ({cause})", code=PARSER_CRASHED)


def _closed_error() -> TaskError:
    return TaskError("the worker shut down before processing finished", code=WORKER_LOST)


def _protocol_error() -> TaskError:
    return TaskError("a processing child broke the protocol", code=INTERNAL_ERROR)
