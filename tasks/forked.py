"""One stage of a task on a forked copy of its child process: a second core for work that holds
the GIL, with the model shared copy-on-write instead of copied; progress and result come back over
a pipe, and the fork dies with the child (same process group, PDEATHSIG)."""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import sys
import traceback
from collections.abc import Callable
from multiprocessing.connection import Connection, Pipe
from types import TracebackType
from typing import Any, Generic, TypeVar

from tasks.errors import INTERNAL_ERROR, KILLED, MEMORY_LIMIT, PARSER_CRASHED, TaskError
from tasks.progress import Progress

Done = TypeVar("Done")
_PR_SET_PDEATHSIG = 1


class Forked(Generic[Done]):
    """`function(*args, progress)` running in a fork from the moment it is made.

    `result(progress)` waits for it, reporting its progress through the caller's own Progress (a
    task has one reporter), and returns its value or raises its TaskError; leaving the `with`
    block kills a fork whose result nobody took.
    """

    def __init__(self, function: Callable[..., Done], *args: Any) -> None:
        receiving, sending = Pipe(duplex=False)
        for stream in (sys.stdout, sys.stderr):  # or the fork would write their buffers again
            stream.flush()
        self._pid = os.fork()
        if self._pid == 0:  # pragma: no cover - the fork; its exit status is what the parent sees
            receiving.close()
            os._exit(_run_in_fork(sending, function, args))
        sending.close()
        self._connection = receiving
        self._reaped = False

    def result(self, progress: Progress, poll: float = 0.1) -> Done:
        while True:
            try:
                if not self._connection.poll(poll):
                    continue
                kind, *message = self._connection.recv()
            except (EOFError, OSError):
                self._reap()
                raise self._death() from None
            if kind == "progress":
                progress(*message)
                continue
            self._reap()
            if kind == "error":
                raise TaskError(message[1], code=message[0])
            value: Done = message[0]
            return value

    def __enter__(self) -> Forked[Done]:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self._connection.close()
        if not self._reaped:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self._pid, signal.SIGKILL)
            self._reap()

    def _reap(self) -> None:
        if not self._reaped:
            _, self._status = os.waitpid(self._pid, 0)
            self._reaped = True

    def _death(self) -> TaskError:
        """The error for a fork that ended without an answer."""
        if os.WIFSIGNALED(self._status) and os.WTERMSIG(self._status) != signal.SIGKILL:
            name = signal.Signals(os.WTERMSIG(self._status)).name
            return TaskError(f"a parser crashed ({name})", code=PARSER_CRASHED)
        if os.WIFSIGNALED(self._status):  # killed by no one of ours: the kernel's OOM killer
            return TaskError("processing was killed by the system, most likely for using too "
                             "much memory", code=KILLED)
        return TaskError("processing failed unexpectedly (its helper exited)", code=INTERNAL_ERROR)


def _run_in_fork(sending: Connection, function: Callable[..., Any], args: tuple[Any, ...]) -> int:
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)

    def progress(stage: str, fraction: float) -> None:
        sending.send(("progress", stage, fraction))

    try:
        sending.send(("result", function(*args, progress)))
    except TaskError as error:
        sending.send(("error", error.code, error.message))
    except MemoryError:
        traceback.print_exc()
        sending.send(("error", MEMORY_LIMIT, "processing needed more memory than the limit"))
    except BaseException as error:  # the text may name paths on this machine: the class only
        traceback.print_exc()
        sending.send(("error", INTERNAL_ERROR,
                      f"processing failed unexpectedly ({type(error).__name__})"))
    sending.close()
    return 0
