"""Redis stalled (SIGSTOP) under a standalone worker's running task for longer than the job lease
(RELIABILITY B3, the arq run_job KeyError): arq's in-progress key expires meanwhile, so once Redis
answers, arq sees the job as free while it still runs in that very worker. The worker must not
start it a second time: the task ends exactly once and no process logs a traceback or a KeyError
(the `processes_on_private_redis` fixture checks every log at the end)."""

from __future__ import annotations

import asyncio
import os
import signal

from arq.constants import in_progress_key_prefix
from redis.asyncio import Redis

from records import keys
from records.queue import job_id
from tests.chaos.history import fold
from tests.chaos.outcomes import progressed
from tests.chaos.processes import Processes
from tests.chaos.session import CUBE, Session, leftover_jobs
from tests.conftest import RedisProcess

SLOW = {"mesh": "tests.helpers.pipelines:slow_steps",
        "texture": "tests.helpers.pipelines:slow_steps"}
LEASE = 1.5
"""KILN_JOB_LEASE: arq's in-progress key lives this long unless the running job refreshes it."""
STALL_SECONDS = 4.0
"""Well past the lease, and short of the rest of the eight-second task: it runs on after."""


async def test_a_worker_outliving_its_lease_in_a_redis_stall_runs_the_job_once(
        processes_on_private_redis: Processes, private_redis: RedisProcess) -> None:
    processes = processes_on_private_redis
    lease = {"KILN_JOB_LEASE": str(LEASE)}
    web = processes.serve(env={"KILN_EMBEDDED_WORKER": "false", **lease})
    # two slots: arq polls only while it has a free one, and then finds the running job's id
    worker = processes.worker(pipelines=SLOW, env={**lease, "KILN_WORKERS": "2"})
    await web.ready()
    await worker.ready()
    worker_pid = worker.pid
    session = await Session.open(web.url, private_redis.url)
    try:
        recorder = session.recorder().start()
        (tid,) = await session.upload(("cube.obj", CUBE))
        recorder.expect([tid])
        await recorder.until(progressed(tid, 0.1), 20, "progress of the task")

        assert private_redis.process is not None
        os.kill(private_redis.process.pid, signal.SIGSTOP)
        try:
            await asyncio.sleep(STALL_SECONDS)  # the stall itself, past the lease
        finally:
            os.kill(private_redis.process.pid, signal.SIGCONT)
        admin = Redis.from_url(private_redis.url)
        try:  # the trap is set: arq would now see the running job as free to start
            job = job_id(tid, 1)
            assert not await admin.exists(in_progress_key_prefix + job)
            assert await admin.zscore(keys.QUEUE, job) is not None
        finally:
            await admin.aclose()
        history = await recorder.until_done(45)

        await session.check(recorder)
        terminal = history.terminal(tid)
        assert terminal is not None and terminal["state"] == "SUCCESS", terminal
        started = [d for d in history.task_events(tid) if d["state"] == "STARTED"]
        assert len(started) == 1 and terminal["attempt"] == 1, (
            f"the task was started {len(started)} times: {fold(history.states(tid))}")
        starts = worker.log_text().count(f"→ {job_id(tid, 1)}:")
        assert starts == 1, f"arq started the job {starts} times"
        assert worker.alive and worker.pid == worker_pid, "the worker did not ride out the stall"
        assert await leftover_jobs(private_redis.url) == []
    finally:
        await session.close()

