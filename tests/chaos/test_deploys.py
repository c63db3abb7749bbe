"""SIGTERM mid-task, as every deploy sends it (RELIABILITY A2): the stopping process hands its
running task back at once, another worker (or the restarted server) runs it as attempt 2, and
shutdowns never use up the attempts that real losses have."""

from __future__ import annotations

import signal
import time
from collections.abc import Callable

import redis.asyncio as aioredis

from records import keys
from tests.chaos.history import History
from tests.chaos.outcomes import assert_recovered, progressed
from tests.chaos.processes import KilnProcess, Processes
from tests.chaos.session import CUBE, Session, leftover_jobs

SLOW = {"mesh": "tests.helpers.pipelines:slow_steps",
        "texture": "tests.helpers.pipelines:slow_steps"}
"""Eight seconds a task: longer than the server's graceful shutdown, so SIGTERM finds it running."""
LEASE = 3.0
RECOVERY = LEASE + 15
"""RELIABILITY A2's bound, from the signal to the terminal event (the issue's "lease plus 15 s")."""


async def _stopped_gracefully(process: KilnProcess) -> None:
    """The process ends of itself after SIGTERM: 0, or the signal re-raised once shut down
    (uvicorn re-raises what it caught, as a supervisor expects), never killed half way."""
    code = await process.exited(15)
    assert code in (0, -signal.SIGTERM), process.log_tail()
    assert code == 0 or "Application shutdown complete" in process.log_text(), process.log_tail()


def _progress_on(task_id: str, attempt: int) -> Callable[[History], bool]:
    def seen(history: History) -> bool:
        return any(d["state"] == "PROGRESS" and d["attempt"] == attempt
                   for d in history.task_events(task_id))
    return seen


async def _lost_runs(redis_url: str, task_id: str) -> int:
    client = aioredis.Redis.from_url(redis_url)
    try:
        return int(await client.hget(keys.task(task_id), "lost") or 0)
    finally:
        await client.aclose()


async def test_sigterm_of_the_busy_one_of_two_standalone_workers(processes: Processes,
                                                                 redis_url: str) -> None:
    web = processes.serve(pipelines=SLOW, env={"KILN_EMBEDDED_WORKER": "false"})
    workers = [processes.worker(f"worker-{n}", pipelines=SLOW) for n in (1, 2)]
    for process in (web, *workers):
        await process.ready()
    session = await Session.open(web.url, redis_url)
    try:
        recorder = session.recorder().start()
        (tid,) = await session.upload(("cube.obj", CUBE))
        recorder.expect([tid])
        await recorder.until(progressed(tid, 0.2), 20, "progress on attempt 1")

        child = int((processes.task_dir(tid) / "child.pid").read_text())
        busy = processes.owner_of(child)
        idle = next(w for w in workers if w is not busy)
        busy.send(signal.SIGTERM)
        signalled = time.monotonic()
        await _stopped_gracefully(busy)
        history = await recorder.until_done(RECOVERY)
        ended_after = (history.terminal_at(tid) or 0) - signalled

        await session.check(recorder)
        assert_recovered(history, tid, "shutdown")
        assert ended_after <= RECOVERY, f"SUCCESS {ended_after:.1f} s after SIGTERM"
        assert f"task {tid} handed back" in busy.log_text()
        assert idle.alive and "handed back" not in idle.log_text()
        assert await _lost_runs(redis_url, tid) == 0, "a shutdown was counted as a lost run"
        assert await leftover_jobs(redis_url) == []
    finally:
        await session.close()


async def test_sigterm_of_the_embedded_server_then_a_restart(processes: Processes,
                                                             redis_url: str) -> None:
    web = processes.serve(pipelines=SLOW)
    await web.ready()
    session = await Session.open(web.url, redis_url)
    try:
        recorder = session.recorder().start()
        (tid,) = await session.upload(("cube.obj", CUBE))
        recorder.expect([tid])
        await recorder.until(progressed(tid, 0.2), 20, "progress on attempt 1")

        web.send(signal.SIGTERM)
        signalled = time.monotonic()
        await _stopped_gracefully(web)
        stopped = time.monotonic()
        web.start()  # same port, same data directory, at once
        history = await recorder.until_done(RECOVERY)
        ended_after = (history.terminal_at(tid) or 0) - signalled

        await session.check(recorder)
        assert_recovered(history, tid, "shutdown")
        assert ended_after <= RECOVERY, f"SUCCESS {ended_after:.1f} s after SIGTERM"
        assert stopped - signalled < 8, f"the server took {stopped - signalled:.1f} s to stop"
        assert history.reconnects, "the stream never reconnected across the restart"
        assert await _lost_runs(redis_url, tid) == 0
        assert await leftover_jobs(redis_url) == []
    finally:
        await session.close()


async def test_repeated_deploys_during_one_task_never_fail_it(processes: Processes,
                                                              redis_url: str) -> None:
    """RELIABILITY A2's variant: more SIGTERMs during one task than KILN_MAX_ATTEMPTS."""
    attempts = 2
    env = {"KILN_EMBEDDED_WORKER": "false", "KILN_MAX_ATTEMPTS": str(attempts)}
    web = processes.serve(pipelines=SLOW, env=env)
    worker = processes.worker(pipelines=SLOW, env=env)
    await web.ready()
    await worker.ready()
    session = await Session.open(web.url, redis_url)
    try:
        recorder = session.recorder().start()
        (tid,) = await session.upload(("cube.obj", CUBE))
        recorder.expect([tid])
        for attempt in range(1, attempts + 2):
            await recorder.until(_progress_on(tid, attempt), 30, f"progress on attempt {attempt}")
            worker.send(signal.SIGTERM)
            await _stopped_gracefully(worker)
            worker.start()
            await worker.ready()
        history = await recorder.until_done(30)

        await session.check(recorder)
        terminal = history.terminal(tid)
        assert terminal is not None and terminal["state"] == "SUCCESS", terminal
        assert terminal["attempt"] == attempts + 2
        reasons = [d.get("reason") for d in history.task_events(tid) if d["state"] == "RETRY"]
        assert reasons == ["shutdown"] * (attempts + 1)
        assert await _lost_runs(redis_url, tid) == 0
    finally:
        await session.close()
