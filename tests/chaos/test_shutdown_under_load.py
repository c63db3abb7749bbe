"""SIGTERM of a busy `kiln serve` (RELIABILITY F5): with 21 open streams over three sessions and
three tasks running, the server stops within its graceful-shutdown timeout plus 5 s, every stream
is ended cleanly (the client sees the end of the body, so a browser reconnects), and once it is
back every acknowledged task ends exactly once and every stream resumes losslessly."""

from __future__ import annotations

import asyncio
import signal
import time

from tests.chaos.history import History, assert_resumed
from tests.chaos.outcomes import assert_recovered, progressed
from tests.chaos.processes import Processes
from tests.chaos.recorder import Recorder
from tests.chaos.session import CUBE, Session, leftover_jobs

SHORT = {"mesh": "tests.helpers.pipelines:short_steps",
         "texture": "tests.helpers.pipelines:short_steps"}
SESSIONS = 3
STREAMS_PER_SESSION = 7
"""Under KILN_SSE_PER_SESSION (8 by default): 21 streams in all, none refused."""
GRACEFUL_SHUTDOWN = 5.0
"""`kiln serve`'s uvicorn timeout_graceful_shutdown (cli.cmd_serve)."""


def _opened(history: History) -> bool:
    return bool(history.connections) and history.connections[0].status == 200


def _first_ended(history: History) -> bool:
    return bool(history.connections) and history.connections[0].ended != "open"


async def test_sigterm_with_open_streams_and_running_tasks(processes: Processes,
                                                           redis_url: str) -> None:
    web = processes.serve(pipelines=SHORT, env={"KILN_WORKERS": str(SESSIONS)})
    await web.ready()
    sessions = [await Session.open(web.url, redis_url, f"user{n}") for n in range(SESSIONS)]
    try:
        streams: list[tuple[Session, Recorder]] = [
            (session, session.recorder().start())
            for session in sessions for _ in range(STREAMS_PER_SESSION)]
        await asyncio.gather(*(r.until(_opened, 15, "an open stream") for _, r in streams))
        tasks = {id(s): (await s.upload((f"cube-{n}.obj", CUBE)))[0]
                 for n, s in enumerate(sessions)}
        for session, recorder in streams:
            recorder.expect([tasks[id(session)]])
        # every task runs (one slot each) and every stream has seen it move
        await asyncio.gather(*(r.until(progressed(tasks[id(s)], 0.2), 20, "progress")
                               for s, r in streams))

        web.send(signal.SIGTERM)
        signalled = time.monotonic()
        code = await web.exited(GRACEFUL_SHUTDOWN + 5)
        stopped = time.monotonic() - signalled
        assert code in (0, -signal.SIGTERM), web.log_tail()
        assert stopped <= GRACEFUL_SHUTDOWN + 5, f"the server took {stopped:.1f} s to stop"
        await asyncio.gather(*(r.until(_first_ended, 5, "the end of the first stream")
                               for _, r in streams))
        endings = [r.history.connections[0].ended for _, r in streams]
        assert endings == ["closed by the server"] * len(streams), (
            f"not every stream was ended cleanly by the shutdown: {endings}")

        web.start()  # same port, same data directory
        histories = await asyncio.gather(*(r.until_done(30) for _, r in streams))

        for (session, recorder), history in zip(streams, histories, strict=True):
            await session.check(recorder)
            assert_resumed(history)
            assert history.reconnects, "a stream never reconnected across the restart"
        for session in sessions:
            recorded = next(h for (s, _), h in zip(streams, histories, strict=True)
                            if s is session)
            assert_recovered(recorded, tasks[id(session)], "shutdown")
        assert await leftover_jobs(redis_url) == []
    finally:
        for session in sessions:
            await session.close()
