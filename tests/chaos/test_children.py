"""A child killed, crashed or over its memory limit (RELIABILITY A5): only its task fails, with
the documented code, on its first attempt; the worker and the web process go on, same PIDs."""

from __future__ import annotations

import os
import signal

import httpx

from tests.chaos.outcomes import assert_failed, progressed
from tests.chaos.processes import Processes, wait_dead
from tests.chaos.recorder import Recorder
from tests.chaos.session import CUBE, GRADIENT, Session

FAULTY = {"mesh": "tests.helpers.pipelines:spin_forever",
          "texture": "tests.helpers.pipelines:allocate_past_limit"}
CHILD_MEMORY = 512 * 1024**2
"""Room for a warm child (about 254 MiB of address space) and little more."""


async def _kill_child(processes: Processes, recorder: Recorder, task_id: str,
                      sig: signal.Signals) -> int:
    await recorder.until(progressed(task_id, 0.0), 20, f"progress of {task_id[:8]}")
    pid = int((processes.task_dir(task_id) / "child.pid").read_text())
    os.kill(pid, sig)
    await wait_dead(pid)
    return pid


async def test_a_killed_crashed_or_bloated_child_fails_only_its_own_task(
        processes: Processes, redis_url: str) -> None:
    web = processes.serve(env={"KILN_EMBEDDED_WORKER": "false"})
    # one attempt each: a child killed by the system is a transient fault, retried after a
    # backoff otherwise (tests/worker/test_retries.py); here it must fail alone, at once
    worker = processes.worker(pipelines=FAULTY, env={
        "KILN_WORKERS": "2", "KILN_CHILD_MEMORY_BYTES": str(CHILD_MEMORY),
        "KILN_MAX_ATTEMPTS": "1"})
    await web.ready()
    await worker.ready()
    pids = (web.pid, worker.pid)
    session = await Session.open(web.url, redis_url)
    try:
        recorder = session.recorder().start()
        (killed,) = await session.upload(("killed.obj", CUBE))
        (crashed,) = await session.upload(("crashed.obj", CUBE))
        recorder.expect([killed, crashed])
        killed_pid = await _kill_child(processes, recorder, killed, signal.SIGKILL)
        await _kill_child(processes, recorder, crashed, signal.SIGSEGV)
        (bloated,) = await session.upload(("bloated.png", GRADIENT))
        recorder.expect([bloated])
        history = await recorder.until_done(30)

        await session.check(recorder)
        # a SIGKILL the pool did not send is taken for the kernel's OOM killer (worker/pool.py)
        assert_failed(history, killed, "killed")
        segfault = assert_failed(history, crashed, "parser_crashed")
        assert "SIGSEGV" in segfault["error"]["message"]
        assert_failed(history, bloated, "memory_limit")
        assert all(state != "RETRY" for t in (killed, crashed, bloated)
                   for state, _ in history.states(t)), "a poison task was requeued"

        assert (web.pid, worker.pid) == pids and web.alive and worker.alive
        assert killed_pid not in worker.children()
        async with httpx.AsyncClient() as http:
            assert (await http.get(f"{web.url}/healthz")).status_code == 200
        # the pool replaced its children: the next task runs (and is killed again)
        (after,) = await session.upload(("after.obj", CUBE))
        again = session.recorder(first_cursor=recorder.cursor).start()
        again.expect([after])
        await _kill_child(processes, again, after, signal.SIGKILL)
        await again.until_done(20)
        assert_failed(again.history, after, "killed")
    finally:
        await session.close()
