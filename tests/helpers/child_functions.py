"""Task functions for tests: each runs in a pool child and misbehaves in one particular way."""

from __future__ import annotations

import ctypes
import os
import signal
import sys
import time
from typing import Any

from tasks.errors import TaskError
from tasks.progress import Progress

Json = dict[str, Any]


def echo(payload: Json, progress: Progress) -> Json:
    """Return the payload after reporting the start and end of two stages."""
    progress("first", 0.0)
    progress("first", 1.0)
    progress("second", 0.5)
    progress("second", 1.0)
    return payload


def large(payload: Json, progress: Progress) -> Json:
    """Return a text of `payload["bytes"]` characters."""
    return {"text": "x" * int(payload["bytes"])}


def report(payload: Json, progress: Progress) -> Json:
    """Report each `[stage, fraction]` of `payload["steps"]` as fast as possible."""
    for stage, fraction in payload["steps"]:
        progress(stage, fraction)
    return {}


def spin(payload: Json, progress: Progress) -> Json:
    """Keep one CPU busy for `payload["seconds"]`, reporting progress all the while."""
    seconds = float(payload["seconds"])
    started = time.monotonic()
    calls = 0
    progress("spin", 0.0)
    while (elapsed := time.monotonic() - started) < seconds:
        progress("spin", elapsed / seconds)
        calls += 1
    progress("spin", 1.0)
    return {"pid": os.getpid(), "calls": calls}


def abort(payload: Json, progress: Progress) -> Json:
    """Die by SIGABRT, as a C library does when an assertion fails."""
    os.abort()


def segfault(payload: Json, progress: Progress) -> Json:
    """Die by SIGSEGV, as a parser does on a crafted file."""
    ctypes.string_at(0)
    return {}


def sigkill(payload: Json, progress: Progress) -> Json:
    """Die by a SIGKILL the pool did not send, as under the kernel's OOM killer."""
    os.kill(os.getpid(), signal.SIGKILL)
    return {}


def allocate(payload: Json, progress: Progress) -> Json:
    """Allocate `payload["bytes"]` and touch every page of it."""
    size = int(payload["bytes"])
    block = bytearray(size)
    block[::4096] = b"\x01" * len(range(0, size, 4096))
    return {"bytes": len(block)}


def fail(payload: Json, progress: Progress) -> Json:
    """Raise the TaskError that the payload describes."""
    raise TaskError(payload["message"], code=payload["code"])


def boom(payload: Json, progress: Progress) -> Json:
    """Raise an unexpected exception whose text must not reach the user."""
    raise ValueError("/secret/path")


def exit_nonzero(payload: Json, progress: Progress) -> Json:
    """Leave the process with exit code 3 and no error message."""
    os._exit(3)


def chatty(payload: Json, progress: Progress) -> Json:
    """Write to stdout at every level, as noisy libraries do, then return normally."""
    print("hello from print", flush=True)
    sys.stdout.write('{"type": "result", "id": 0, "value": {}}\n')
    sys.stdout.flush()
    os.write(1, b"hello from fd 1\n")
    progress("chat", 0.5)
    return {"said": "hello"}


def unencodable(payload: Json, progress: Progress) -> Json:
    """Return a value that JSON cannot carry."""
    return {"value": object()}


def memory_status(payload: Json, progress: Progress) -> Json:
    """The child's VmPeak and VmSize in bytes, from /proc/self/status."""
    with open("/proc/self/status") as status:
        fields = {name: value for name, _, value in (line.partition(":") for line in status)}
    return {name: int(fields[name].split()[0]) * 1024 for name in ("VmPeak", "VmSize")}


def pid(payload: Json, progress: Progress) -> Json:
    """Return this child's process id."""
    return {"pid": os.getpid()}


def wait_for_file(payload: Json, progress: Progress) -> Json:
    """Report once, then wait (up to 30 s) until `payload["path"]` exists; return the pid."""
    progress("waiting", 0.0)
    deadline = time.monotonic() + 30
    while not os.path.exists(payload["path"]) and time.monotonic() < deadline:
        time.sleep(0.01)
    return {"pid": os.getpid()}


def environment(payload: Json, progress: Progress) -> Json:
    """The child's values of the environment variables `payload["names"]` (None where unset)."""
    return {name: os.environ.get(name) for name in payload["names"]}


def niceness(payload: Json, progress: Progress) -> Json:
    """Return this child's niceness."""
    return {"nice": os.nice(0)}


_KEPT: list[bytearray] = []


def keep(payload: Json, progress: Progress) -> Json:
    """Allocate `payload["bytes"]`, touch every page and keep it after returning (a leak)."""
    size = int(payload["bytes"])
    block = bytearray(size)
    block[::4096] = b"\x01" * len(range(0, size, 4096))
    _KEPT.append(block)
    return {"pid": os.getpid()}
