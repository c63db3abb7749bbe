"""The pool's child process: runs one task at a time under a memory limit, speaking JSON lines."""

from __future__ import annotations

import argparse
import ctypes
import importlib
import json
import os
import resource
import signal
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from typing import Any, BinaryIO

from tasks.errors import INTERNAL_ERROR, MEMORY_LIMIT, TaskError
from tasks.progress import Progress, Result

GiB = 1024**3
PROGRESS_INTERVAL = 0.05
_PR_SET_PDEATHSIG = 1


class Channel:
    """The private protocol pipe to the parent: one JSON object per line, flushed at once.

    The child sends `ready` once warm, then for each request any number of `progress` and
    `partial` messages followed by exactly one `result` or `error`.
    """

    def __init__(self, stream: BinaryIO) -> None:
        self._stream = stream

    def send(self, message: dict[str, Any]) -> None:
        # Encode before writing so a value that cannot be encoded leaves no half line behind.
        line = json.dumps(message, separators=(",", ":"), allow_nan=False).encode() + b"\n"
        self._stream.write(line)
        self._stream.flush()


class ThrottledProgress:
    """The `Progress` handed to a task: drops updates that come faster than every 50 ms."""

    def __init__(self, channel: Channel, task_id: int) -> None:
        self._channel = channel
        self._task_id = task_id
        self._stage: str | None = None
        self._fraction = 0.0
        self._sent_at = 0.0

    def __call__(self, stage: str, fraction: float) -> None:
        fraction = min(1.0, max(0.0, float(fraction)))  # also maps NaN to 0.0
        now = time.monotonic()
        new_stage = stage != self._stage
        finished = fraction == 1.0 and self._fraction < 1.0
        if not (new_stage or finished or now - self._sent_at >= PROGRESS_INTERVAL):
            return
        self._stage, self._fraction, self._sent_at = stage, fraction, now
        self._channel.send(
            {"type": "progress", "id": self._task_id, "stage": stage, "fraction": fraction}
        )

    def partial(self, result: Result) -> None:
        """The result so far (`tasks.progress.share`): never throttled, sent in order."""
        self._channel.send({"type": "partial", "id": self._task_id, "value": result})


def resolve(name: str) -> Callable[[dict[str, Any], Progress], object]:
    """Import the task function named `package.module:function`."""
    module_name, _, attribute = name.partition(":")
    function: Callable[[dict[str, Any], Progress], object] = getattr(
        importlib.import_module(module_name), attribute
    )
    return function


def resident_bytes() -> int:
    """This process's resident memory now (its peak where /proc is missing)."""
    try:
        with open("/proc/self/statm", "rb") as statm:
            return int(statm.read().split()[1]) * resource.getpagesize()
    except (OSError, IndexError, ValueError):
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak if sys.platform == "darwin" else peak * 1024  # bytes there, KiB elsewhere


def serve(request: dict[str, Any], channel: Channel, memory_bytes: int) -> bool:
    """Run one request and answer it; False when the process must exit (its memory is suspect).

    Every answer carries `rss`, the resident memory left after the task: the parent retires a
    child that keeps too much."""
    task_id = request["id"]
    try:
        function = resolve(request["function"])
        value = function(request["payload"], ThrottledProgress(channel, task_id))
        if not isinstance(value, dict):
            raise TypeError(f"{request['function']} returned {type(value).__name__}, not dict")
        channel.send({"type": "result", "id": task_id, "value": value, "rss": resident_bytes()})
    except TaskError as error:
        channel.send({"type": "error", "id": task_id, **error.as_dict(), "rss": resident_bytes()})
    except MemoryError:
        print(f"kiln child {os.getpid()}: task {task_id} ran out of memory", file=sys.stderr)
        traceback.print_exc()
        limit = f"{memory_bytes / GiB:.1f} GiB"
        message = f"processing needed more memory than the limit of {limit}"
        channel.send({"type": "error", "id": task_id, "code": MEMORY_LIMIT, "message": message})
        return False
    except Exception as error:
        # The exception's text may name paths on this machine: only its class reaches the user.
        print(f"kiln child {os.getpid()}: task {task_id} failed", file=sys.stderr)
        traceback.print_exc()
        message = f"processing failed unexpectedly ({type(error).__name__})"
        channel.send({"type": "error", "id": task_id, "code": INTERNAL_ERROR, "message": message,
                      "rss": resident_bytes()})
    return True


def obey_parent_only() -> None:
    """Leave this process's end to the parent: ignore SIGINT and SIGTERM, die when it dies."""
    # Under systemd every process of the service gets SIGTERM at once; a child dying of it mid-task
    # would read as a parser crash, while the parent may still want to finish or cancel the task.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def limit_memory(memory_bytes: int) -> int:
    """Cap the address space (and forbid core dumps); returns the limit in force."""
    # Measured on Python 3.11, numpy 2.4, scipy 1.17, trimesh 5.2, Pillow 13, with
    # OPENBLAS_NUM_THREADS=1: importing numpy, scipy.spatial, trimesh and PIL.Image peaks at a
    # VmPeak of 254 MiB (334 MiB when OpenBLAS may start its threads), 290 MiB after a small mesh
    # operation; a bare child peaks at 16 MiB. Those preloads fail under 200 MiB and start under
    # 256 MiB. RLIMIT_AS counts address space, not resident memory: leave room above these.
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    if hard != resource.RLIM_INFINITY:
        memory_bytes = min(memory_bytes, hard)
    resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    return memory_bytes


def claim_stdio() -> tuple[BinaryIO, BinaryIO]:
    """Keep stdin and stdout private to the protocol; libraries get /dev/null and stderr instead."""
    requests = os.fdopen(os.dup(0), "rb")
    replies = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    return requests, replies


def parse_arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m worker.child", description=__doc__)
    parser.add_argument("--memory-bytes", type=int, required=True)
    parser.add_argument("--nice", type=int, default=0, help="added to the process's niceness")
    parser.add_argument(
        "--preload", default="",
        help="comma-separated modules to import first; module:function also calls the function")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Serve requests until EOF; exit 2 if a preload fails, 1 after running out of memory."""
    options = parse_arguments(argv)
    obey_parent_only()
    if options.nice:
        # batch work: the worker and the web process beside it keep answering under full load
        os.nice(options.nice)
    memory_bytes = limit_memory(options.memory_bytes)
    requests, replies = claim_stdio()
    try:
        for name in filter(None, (item.strip() for item in options.preload.split(","))):
            module_name, _, function = name.partition(":")
            module = importlib.import_module(module_name)
            if function:
                getattr(module, function)()
    except Exception:
        traceback.print_exc()
        return 2
    channel = Channel(replies)
    channel.send({"type": "ready"})
    for line in requests:
        if not serve(json.loads(line), channel, memory_bytes):
            return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
