"""A task queued as an upload would queue it, without the HTTP in front (worker tests)."""

from __future__ import annotations

from pathlib import Path

from records.events import Guard, TaskIdentity, TaskState
from records.queue import job_id, new_task_identity
from services import Services, open_services
from settings import Settings
from worker.runner import running_worker


async def submit_stub(services: Services, tmp_path: Path) -> str:
    """Queue a one-file mesh task (a one-vertex OBJ) for session s1 of user u1; its id."""
    who = new_task_identity(owner="u1", session="s1", batch="b1", kind="mesh", filename="a.obj")
    source = tmp_path / "a.obj"
    source.write_text("v 0 0 0\n")
    services.storage.adopt(who.task_id, [(source.name, source)])
    assert await services.queue.submit(who, format="obj", size=8, files=[source.name])
    return who.task_id


async def submit_claimed_elsewhere(services: Services, tmp_path: Path, *, run: str,
                                   job: bool = True) -> tuple[str, TaskIdentity]:
    """A stub task that another worker's `run` claimed as attempt 1 (STARTED, its lease held),
    its arq job admitted and still queued as arq keeps it; with `job`, the claim names that job,
    as a real claim does. The task's id and identity."""
    tid = await submit_stub(services, tmp_path)
    assert (await services.queue.scheduler.admit(1)).jobs == [job_id(tid, 1)]
    record = await services.tasks.get(tid)
    assert record is not None
    assert await services.events.emit(record.identity, Guard.CLAIM, TaskState.STARTED,
                                      attempt=1, run=run, stage="starting",
                                      fields={"job": job_id(tid, 1)} if job else None)
    return tid, record.identity


async def drain(settings: Settings, pipelines: dict[str, str]) -> None:
    """Run a burst worker with `settings` and these pipelines until nothing is left to run."""
    async with open_services(settings, settings.redis_url or "") as services, \
            running_worker(services, burst=True, pipelines=pipelines) as running:
        await running.supervisor
