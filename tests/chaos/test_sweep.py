"""The recovery sweep of a running `kiln worker` (every KILN_SWEEP_INTERVAL) finds a stranded task
by itself: left STARTED by a run that vanished, with no lease and its job gone from arq, nothing
else would ever run it. The worker's own sweep requeues it as a lost run and it succeeds."""

from __future__ import annotations

from records import keys
from records.events import Guard, TaskState
from records.queue import job_id
from services import open_services
from tests.chaos.outcomes import assert_recovered
from tests.chaos.processes import Processes
from tests.chaos.session import CUBE, Session, leftover_jobs
from tests.conftest import make_settings

SHORT = {"mesh": "tests.helpers.pipelines:short_steps",
         "texture": "tests.helpers.pipelines:short_steps"}
SWEEP_INTERVAL = 1.0
RECOVERY = 20.0
"""From the worker's start to the SUCCESS: a sweep interval, a poll, the four-second run."""


async def _strand(processes: Processes, task_id: str) -> None:
    """Claim the task for a run that then vanished, and make arq forget its job."""
    settings = make_settings(processes.redis_url, processes.data_dir)
    async with open_services(settings, processes.redis_url) as services:
        record = await services.tasks.get(task_id)
        assert record is not None and record.state is TaskState.PENDING
        assert await services.events.emit(record.identity, Guard.CLAIM, TaskState.STARTED,
                                          attempt=1, run="vanished", stage="starting",
                                          fields={"job": job_id(task_id, 1)})
        await services.redis.delete(keys.run_lease(task_id))
        await services.queue.scheduler.unschedule(job_id(task_id, 1), record.owner)  # admitted
        await services.redis.zrem(keys.QUEUE, job_id(task_id, 1))
        await services.redis.delete(f"arq:job:{job_id(task_id, 1)}")


async def test_a_running_workers_sweep_recovers_a_stranded_task(processes: Processes,
                                                                 redis_url: str) -> None:
    web = processes.serve(env={"KILN_EMBEDDED_WORKER": "false"})
    await web.ready()
    session = await Session.open(web.url, redis_url)
    try:
        recorder = session.recorder().start()
        (tid,) = await session.upload(("cube.obj", CUBE))
        recorder.expect([tid])
        await _strand(processes, tid)

        worker = processes.worker(pipelines=SHORT,
                                  env={"KILN_SWEEP_INTERVAL": str(SWEEP_INTERVAL)})
        await worker.ready()
        history = await recorder.until_done(RECOVERY)

        await session.check(recorder)
        assert_recovered(history, tid, "worker_lost")
        assert "sweep: 1 stranded task(s) requeued" in worker.log_text(), worker.log_tail()
        assert await leftover_jobs(redis_url) == []
    finally:
        await session.close()
