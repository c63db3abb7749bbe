"""Real Kiln processes for chaos tests: started by the CLI, waited for, killed by PID, logged."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

import httpx

from tests.chaos.launch import PIPELINES_ENV
from tests.conftest import TEST_SECRET, free_port

ROOT = Path(__file__).resolve().parents[2]
Command = Literal["serve", "worker"]

LOG_FAULTS = ("Traceback", "KeyError")
"""What no Kiln process may ever log in a scenario: an unhandled error (the arq run_job KeyError
of a job id started twice after a Redis stall was one)."""

CHAINED = ("The above exception was the direct cause", "During handling of the above")
"""How Python joins the tracebacks of a chained exception: the next one belongs to the first."""

OUT_OF_MEMORY = re.compile(r"^kiln child \d+: task \S+ ran out of memory$")
"""The line a child prints before the traceback of its MemoryError (worker/child.py)."""

WORKER_READY = "worker polling"
"""The line a worker logs once its children are warm and it takes jobs
(worker.runner.KilnWorker.main)."""

BASE_ENV: Mapping[str, str] = {
    "KILN_JWT_SECRET": TEST_SECRET,
    "KILN_JOB_LEASE": "3",
    "KILN_WORKERS": "1",
    "KILN_TASK_TIMEOUT": "60",
    "KILN_POLL_DELAY": "0.2",
    "KILN_SSE_PING": "1",
    "KILN_CHILD_MEMORY_BYTES": str(2 * 1024**3),
}
"""What every chaos process runs with unless a test says otherwise: a short lease and one slot."""


def _clean_environment() -> dict[str, str]:
    """This process's environment without any Kiln setting that could leak into a scenario."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("KILN_") and k != "REDIS_URL"}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def pid_alive(pid: int) -> bool:
    """Whether `pid` is a live process (a zombie counts as dead)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rpartition(")")[2].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):
        return False


def parent_pid(pid: int) -> int | None:
    """The parent of `pid`, or None when it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return int(stat.read().rpartition(")")[2].split()[1])
    except (FileNotFoundError, ProcessLookupError):
        return None


def children_of(pid: int) -> list[int]:
    """Direct children of `pid`, from every one of its threads' /proc children lists."""
    found: set[int] = set()
    with contextlib.suppress(FileNotFoundError, ProcessLookupError):
        for thread in Path(f"/proc/{pid}/task").iterdir():
            with contextlib.suppress(FileNotFoundError, ProcessLookupError):
                found.update(int(p) for p in (thread / "children").read_text().split())
    return sorted(found)


async def wait_dead(pid: int, timeout: float = 10.0) -> None:  # noqa: ASYNC109 -- a deadline
    """Return once `pid` has died; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while pid_alive(pid):
        if time.monotonic() > deadline:
            raise AssertionError(f"process {pid} still alive {timeout:g} s later")
        await asyncio.sleep(0.02)  # polling the kernel's view of another process


def _memory_limit_report(lines: list[str], number: int) -> bool:
    """Whether the traceback starting at `lines[number]` is a child's MemoryError report."""
    if not (lines[number] == "Traceback (most recent call last):"
            and OUT_OF_MEMORY.search(lines[number - 1])):
        return False
    end = next((n for n in range(number + 1, len(lines)) if not lines[n].startswith(" ")),
               None)
    return end is not None and lines[end] == "MemoryError"


class KilnProcess:
    """One `kiln serve` or `kiln worker` subprocess; `start` may be called again after a stop."""

    def __init__(self, name: str, command: Command, env: Mapping[str, str], log_path: Path,
                 port: int | None = None) -> None:
        self.name = name
        self.command: Command = command
        self.env = dict(env)
        self.log_path = log_path
        self.port = port
        self.popen: subprocess.Popen[bytes] | None = None
        self.pids: list[int] = []
        """Every PID this process has had, one per start."""
        self._log_offset = 0

    @property
    def url(self) -> str:
        if self.port is None:
            raise RuntimeError(f"{self.name} is a worker: it serves no HTTP")
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        if self.popen is None:
            raise RuntimeError(f"{self.name} was never started")
        return self.popen.pid

    @property
    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def start(self) -> None:
        """Launch it (it is not ready yet: await `ready()`)."""
        if self.alive:
            raise RuntimeError(f"{self.name} is already running")
        argv = [sys.executable, "-m", "tests.chaos.launch", self.command]
        if self.command == "serve":
            assert self.port is not None
            argv += ["--host", "127.0.0.1", "--port", str(self.port)]
        with self.log_path.open("ab") as log:
            log.write(f"\n--- {self.name}: start {len(self.pids) + 1} ---\n".encode())
            self._log_offset = log.tell()
            self.popen = subprocess.Popen(
                argv, cwd=ROOT, env=self.env, stdin=subprocess.DEVNULL, stdout=log,
                stderr=subprocess.STDOUT, start_new_session=True)
        self.pids.append(self.popen.pid)

    async def ready(self, timeout: float = 45.0) -> None:  # noqa: ASYNC109 -- a deadline
        """Wait until it serves (`/healthz` ok) or, for a worker, takes jobs."""
        deadline = time.monotonic() + timeout
        async with httpx.AsyncClient(timeout=1.0) as http:
            while not await self._is_ready(http):
                if not self.alive:
                    raise AssertionError(f"{self.name} exited with {self.returncode} while "
                                         f"starting:\n{self.log_tail()}")
                if time.monotonic() > deadline:
                    raise AssertionError(f"{self.name} not ready after {timeout:g} s:\n"
                                         f"{self.log_tail()}")
                await asyncio.sleep(0.05)  # waiting for an external process to come up

    async def _is_ready(self, http: httpx.AsyncClient) -> bool:
        if self.command == "worker":
            return WORKER_READY in self.log_since_start()
        try:
            response = await http.get(f"{self.url}/healthz")
        except httpx.HTTPError:
            return False
        embedded = self.env.get("KILN_EMBEDDED_WORKER", "true").lower() not in ("0", "false",
                                                                                 "no", "off")
        return response.status_code == 200 and (not embedded
                                                or WORKER_READY in self.log_since_start())

    @property
    def returncode(self) -> int | None:
        return None if self.popen is None else self.popen.poll()

    def send(self, sig: signal.Signals) -> None:
        """Send `sig` to this process only (its children are its business)."""
        os.kill(self.pid, sig)

    def kill(self) -> None:
        """SIGKILL and reap it: the crash of a machine, as far as this process is concerned."""
        if self.alive:
            assert self.popen is not None
            self.popen.kill()
            self.popen.wait(10)

    async def exited(self, timeout: float = 30.0) -> int:  # noqa: ASYNC109 -- a deadline
        """Its exit code once it has stopped by itself; fail after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while (code := self.returncode) is None:
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.name} still running {timeout:g} s later")
            await asyncio.sleep(0.02)  # polling another process's exit
        return code

    def children(self) -> list[int]:
        """PIDs of its live child processes (the pool's `worker.child` processes)."""
        return [pid for pid in children_of(self.pid) if pid_alive(pid)] if self.alive else []

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_since_start(self) -> str:
        with self.log_path.open("rb") as log:
            log.seek(self._log_offset)
            return log.read().decode(errors="replace")

    def log_tail(self, lines: int = 60) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    def cleanup(self) -> None:
        """Kill it and every child it still has, by PID (the end of every test)."""
        orphans = self.children()
        self.kill()
        for pid in orphans:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


class Processes:
    """The Kiln processes of one scenario: one Redis, one data directory, one JWT secret."""

    def __init__(self, directory: Path, redis_url: str) -> None:
        self.directory = directory
        self.redis_url = redis_url
        self.data_dir = directory / "data"
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.started: list[KilnProcess] = []
        self.expected_faults: list[re.Pattern[str]] = []
        """Headings of tracebacks a scenario provokes on purpose (see `log_faults`)."""

    def _make(self, name: str, command: Command, pipelines: Mapping[str, str] | None,
              env: Mapping[str, str] | None, port: int | None) -> KilnProcess:
        if any(p.name == name for p in self.started):
            raise ValueError(f"a process named {name} exists already")
        full = {**_clean_environment(), **BASE_ENV, "REDIS_URL": self.redis_url,
                "KILN_DATA_DIR": str(self.data_dir), **(env or {})}
        if pipelines is not None:
            full[PIPELINES_ENV] = json.dumps(dict(pipelines))
        process = KilnProcess(name, command, full, self.directory / f"{name}.log", port)
        self.started.append(process)
        return process

    def serve(self, name: str = "web", *, pipelines: Mapping[str, str] | None = None,
              env: Mapping[str, str] | None = None, port: int | None = None) -> KilnProcess:
        """A `kiln serve` on a free loopback port (launched; await its `ready()`)."""
        process = self._make(name, "serve", pipelines, env, port or free_port())
        process.start()
        return process

    def worker(self, name: str = "worker", *, pipelines: Mapping[str, str] | None = None,
               env: Mapping[str, str] | None = None) -> KilnProcess:
        """A `kiln worker` (launched; await its `ready()`)."""
        process = self._make(name, "worker", pipelines, env, None)
        process.start()
        return process

    def task_dir(self, task_id: str) -> Path:
        return self.data_dir / "tasks" / task_id

    def owner_of(self, pid: int) -> KilnProcess:
        """The running process whose child `pid` is."""
        parent = parent_pid(pid)
        for process in self.started:
            if process.alive and process.pid == parent:
                return process
        raise AssertionError(f"no Kiln process of this test is the parent of {pid}")

    def cleanup(self) -> None:
        for process in reversed(self.started):
            process.cleanup()

    def logs(self) -> list[tuple[str, str]]:
        return [(p.name, p.log_text()) for p in self.started]

    def log_faults(self, context: int = 12) -> list[str]:
        """Every traceback, and every other line holding one of LOG_FAULTS, per process.

        Excused: a child that ran out of memory (its limit doing its job) prints its MemoryError
        under `kiln child <pid>: task <id> ran out of memory`; and a traceback whose heading
        line matches one of `expected_faults`, which a scenario provoking it sets.
        """
        found: list[str] = []
        for name, text in self.logs():
            lines = text.splitlines()
            number, chain_excused = 0, False
            while number < len(lines):
                line = lines[number]
                end = number
                if line == "Traceback (most recent call last):":
                    end = next((n for n in range(number + 1, len(lines))
                                if not lines[n].startswith(" ")), len(lines) - 1)
                    heading = lines[number - 1] if number else ""
                    chained = number > 1 and lines[number - 2].startswith(CHAINED)
                    excused = (chain_excused if chained
                               else _memory_limit_report(lines, number)
                               or any(p.search(heading) for p in self.expected_faults))
                    chain_excused = excused
                else:
                    excused = not any(fault in line for fault in LOG_FAULTS)
                if not excused:
                    excerpt = "\n    ".join(lines[number:number + context])
                    found.append(f"{name}, line {number + 1}:\n    {excerpt}")
                number = end + 1
        return found

    def assert_clean_logs(self) -> None:
        """Fail unless no process logged a traceback or a KeyError (the end of every scenario)."""
        faults = self.log_faults()
        assert not faults, (f"{len(faults)} unhandled error(s) in the Kiln processes' logs:\n"
                            + "\n".join(faults[:5]))
