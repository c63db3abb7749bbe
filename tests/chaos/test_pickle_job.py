"""Redis as an attack path (RELIABILITY E6): someone who can write to Redis puts a pickle in an arq
job key and queues it. Kiln's jobs are JSON, so the worker refuses to decode it: nothing in the
pickle runs (it would create a file), the worker lives on and runs the next real task."""

from __future__ import annotations

import asyncio
import pickle
import re
import time
from pathlib import Path
from typing import Any

from arq.constants import job_key_prefix
from redis.asyncio import Redis

from records import keys
from tests.chaos.processes import Processes
from tests.chaos.recorder import Recorder
from tests.chaos.session import CUBE, Session

SHORT = {"mesh": "tests.helpers.pipelines:short_steps",
         "texture": "tests.helpers.pipelines:short_steps"}
JOB = "pickled-1"


class Planted:
    """Unpickling this opens (so creates) `path` for writing: proof that the pickle ran."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (str(self.path), "w"))


async def _wait_for_line(processes: Processes, text: str, timeout: float) -> None:  # noqa: ASYNC109
    deadline = time.monotonic() + timeout
    while not any(text in log for _, log in processes.logs()):
        assert time.monotonic() < deadline, f"no {text!r} in the logs within {timeout:g} s"
        await asyncio.sleep(0.05)  # polling another process's log


async def test_a_pickled_job_is_refused_and_nothing_in_it_runs(processes: Processes,
                                                                redis_url: str,
                                                                tmp_path: Path) -> None:
    marker = tmp_path / "pickle-ran"
    refusal = f"deserializing job {JOB} failed"
    # arq logs the refusal with its traceback, then fails to store the error as a JSON result
    processes.expected_faults += [re.compile(re.escape(refusal)),
                                  re.compile(re.escape(f"error serializing result of {JOB}"))]
    web = processes.serve(env={"KILN_EMBEDDED_WORKER": "false"})
    worker = processes.worker(pipelines=SHORT)
    await web.ready()
    await worker.ready()
    worker_pid = worker.pid
    attacker = Redis.from_url(redis_url)
    session = await Session.open(web.url, redis_url)
    try:
        payload = pickle.dumps({"t": 1, "f": "process_asset", "a": (Planted(marker),), "k": {},
                                "et": int(time.time() * 1000)})
        await attacker.set(job_key_prefix + JOB, payload)
        await attacker.zadd(keys.QUEUE, {JOB: int(time.time() * 1000)})
        await attacker.publish(keys.CONTROL_CHANNEL, '{"op":"wake"}')
        await _wait_for_line(processes, refusal, 15)
        assert not marker.exists(), "the worker unpickled the job: its payload ran"

        async with Recorder(web.url, session.token) as recorder:
            (tid,) = await session.upload(("cube.obj", CUBE))
            recorder.expect([tid])
            history = await recorder.until_done(30)
        assert (history.terminal(tid) or {}).get("state") == "SUCCESS"
        assert worker.alive and worker.pid == worker_pid
        assert not marker.exists()
    finally:
        await attacker.aclose()
        await session.close()
