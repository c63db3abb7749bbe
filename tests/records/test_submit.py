"""An upload's tasks are submitted in one round trip, as jobs arq itself reads back."""

from __future__ import annotations

import time

from records import keys
from records.queue import PROCESS_ASSET, NewTask, job_id, new_task_identity
from services import Services


def _new(n: int) -> list[NewTask]:
    return [NewTask(new_task_identity(owner="u1", session="s1", batch="b1", kind="mesh",
                                      filename=f"m{i}.obj"), "obj", 10 + i, (f"m{i}.obj",))
            for i in range(n)]


async def test_every_task_of_an_upload_is_created_and_queued_as_arq_writes_jobs(
        services: Services) -> None:
    new = _new(3)
    assert await services.queue.submit_all(new) == [True, True, True]
    assert await services.queue.scheduler.waiting() == 3  # waiting for a worker's admission
    assert len((await services.queue.scheduler.admit(5)).jobs) == 3
    # every job admitted is due at once: arq takes only jobs whose score is not ahead of now
    due = await services.redis.zrangebyscore(keys.QUEUE, "-inf", int(time.time() * 1000))
    assert len(due) == 3
    for task in new:
        record = await services.tasks.get(task.identity.task_id)
        assert record is not None and record.state == "PENDING" and record.attempt == 1
        assert record.fields["files"] == f'["{task.files[0]}"]'
    # arq's own reader understands the jobs: the function, its argument, no try counted yet
    queued = await services.redis.queued_jobs(queue_name=keys.QUEUE)
    assert {(job.function, tuple(job.args), job.job_try is None) for job in queued} == {
        (PROCESS_ASSET, (task.identity.task_id,), True) for task in new}
    # in the upload's order: admitted so, and by creation time
    ids = [job_id(task.identity.task_id, 1).encode() for task in new]
    assert sorted(await services.redis.zrange(keys.QUEUE, 0, -1)) == sorted(ids)
    records = [await services.tasks.get(task.identity.task_id) for task in new]
    created = [int(record.fields["created_ms"]) for record in records if record is not None]
    assert created == sorted(set(created)) and len(created) == 3
    for job in ids:  # a month to run, as before: arq's default day could drop acknowledged work
        assert await services.redis.pttl(b"arq:job:" + job) > 29 * 86400 * 1000


async def test_a_task_id_that_exists_is_not_created_twice(services: Services) -> None:
    (task,) = _new(1)
    assert await services.queue.submit_all([task]) == [True]
    assert await services.queue.submit_all([task]) == [False]
    assert await services.queue.submit_all([]) == []
