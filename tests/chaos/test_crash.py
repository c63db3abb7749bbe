"""kill -9 mid-task (RELIABILITY A1): of the web process with its embedded worker, then a restart;
of the busy one of two standalone workers. The task comes back on attempt 2 and succeeds."""

from __future__ import annotations

import time

from tests.chaos.outcomes import assert_recovered, progressed
from tests.chaos.processes import Processes, pid_alive
from tests.chaos.session import CUBE, Session, leftover_jobs

SHORT = {"mesh": "tests.helpers.pipelines:short_steps",
         "texture": "tests.helpers.pipelines:short_steps"}
LEASE = 3.0
RECOVERY = LEASE + 15
"""From the kill to the terminal event at most: one lease, a restart, and the four-second run."""


async def test_kill9_of_the_web_process_mid_task_then_a_restart(processes: Processes,
                                                                 redis_url: str) -> None:
    web = processes.serve(pipelines=SHORT)
    await web.ready()
    session = await Session.open(web.url, redis_url)
    try:
        recorder = session.recorder().start()
        (tid,) = await session.upload(("cube.obj", CUBE))
        recorder.expect([tid])
        await recorder.until(progressed(tid, 0.5), 20, "half-way progress")

        first = web.pid
        web.kill()
        killed = time.monotonic()
        web.start()  # same port, same data directory
        assert time.monotonic() - killed < 2.0
        history = await recorder.until_done(RECOVERY)
        ended_after = (history.terminal_at(tid) or 0) - killed

        assert not pid_alive(first) and web.pid != first
        await session.check(recorder)
        assert_recovered(history, tid, "worker_lost")
        assert history.reconnects, "the stream never reconnected across the restart"
        assert ended_after <= RECOVERY, f"SUCCESS {ended_after:.1f} s after the kill"
        assert await leftover_jobs(redis_url) == []
    finally:
        await session.close()


async def test_kill9_of_the_busy_one_of_two_standalone_workers(processes: Processes,
                                                               redis_url: str) -> None:
    no_worker = {"KILN_EMBEDDED_WORKER": "false"}
    web = processes.serve(pipelines=SHORT, env=no_worker)
    workers = [processes.worker(f"worker-{n}", pipelines=SHORT) for n in (1, 2)]
    for process in (web, *workers):
        await process.ready()
    session = await Session.open(web.url, redis_url)
    try:
        recorder = session.recorder().start()
        (tid,) = await session.upload(("cube.obj", CUBE))
        recorder.expect([tid])
        await recorder.until(progressed(tid, 0.5), 20, "half-way progress")

        child = int((processes.task_dir(tid) / "child.pid").read_text())
        busy = processes.owner_of(child)
        idle = next(w for w in workers if w is not busy)
        idle_pid, web_pid = idle.pid, web.pid
        busy.kill()
        killed = time.monotonic()
        busy.start()  # restarted, as a supervisor would; either worker may take the job
        history = await recorder.until_done(RECOVERY)
        ended_after = (history.terminal_at(tid) or 0) - killed

        await session.check(recorder)
        assert_recovered(history, tid, "worker_lost")
        assert ended_after <= RECOVERY, f"SUCCESS {ended_after:.1f} s after the kill"
        assert idle.alive and idle.pid == idle_pid and web.alive and web.pid == web_pid
        assert await leftover_jobs(redis_url) == []
    finally:
        await session.close()
