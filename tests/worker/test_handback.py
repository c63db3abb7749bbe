"""A stopping worker hands its running task back; a duplicate delivery never drops a job; the
sweep requeues what nothing would run any more."""

from __future__ import annotations

import asyncio
import contextlib
import json
from pathlib import Path

import pytest

from records import keys
from records.events import TaskState
from records.queue import job_id
from services import Services
from settings import Settings
from tests.helpers.submit import submit_claimed_elsewhere, submit_stub
from worker.runner import KilnWorker, build_worker, running_worker
from worker.sweep import Sweeper

pytestmark = pytest.mark.chaos  # an attack or fault scenario (pytest -m chaos)

SPIN = {"mesh": "tests.helpers.pipelines:spin_forever"}
STEPS = {"mesh": "tests.helpers.pipelines:steps"}


async def _log(services: Services) -> list[dict[str, object]]:
    entries = await services.redis.xrange(keys.session_stream("s1").log)
    logged = [json.loads(fields[b"e"]) for _, fields in entries]
    return [event for event in logged if event["type"] == "task"]


def _states(log: list[dict[str, object]]) -> list[object]:
    return [e["state"] for e in log if e["state"] != "PROGRESS"]


async def _wait_for(services: Services, tid: str, state: str) -> None:
    """Until the task's stream carries `state` (read from the live channel)."""
    async with services.hub.listen(keys.session_stream("s1").channel) as box, \
            asyncio.timeout(30):
        record = await services.tasks.get(tid)
        if record is not None and record.state == state:
            return
        while f'"state":"{state}"' not in (await box.get())[1]:
            pass


async def _run_until_started(services: Services, tid: str) -> None:
    """A worker that starts the spinning task and is then stopped, as SIGTERM stops it."""
    async with services.hub.listen(keys.session_stream("s1").channel) as box, \
            running_worker(services, pipelines=SPIN):
        async with asyncio.timeout(30):
            while '"state":"PROGRESS"' not in (await box.get())[1]:
                pass


async def test_a_stopping_worker_hands_its_running_task_back_at_once(
        services: Services, tmp_path: Path) -> None:
    tid = await submit_stub(services, tmp_path)
    await _run_until_started(services, tid)

    record = await services.tasks.get(tid)
    assert record is not None
    assert record.state is TaskState.RETRY and record.attempt == 2
    assert record.lost == 0, "a shutdown is not a lost run"
    assert not await services.redis.exists(keys.run_lease(tid)), "the lease outlived the run"
    assert await services.redis.zcard(keys.QUEUE) == 0, "attempt 1's job outlived its run"
    waiting = [j.decode() for j in await services.redis.hkeys(keys.SCHED_PENDING)]  # type: ignore[misc]
    assert waiting == [job_id(tid, 2)], "the next attempt's job, and only it, waits"
    retry = [e for e in await _log(services) if e["state"] == "RETRY"]
    assert [(e["attempt"], e["reason"]) for e in retry] == [(2, "shutdown")]

    async with running_worker(services, burst=True, pipelines=STEPS) as running:
        await running.supervisor
    log = await _log(services)
    assert _states(log) == ["PENDING", "STARTED", "RETRY", "STARTED", "SUCCESS"]
    assert [e["attempt"] for e in log if e["state"] == "SUCCESS"] == [2]


async def test_graceful_restarts_never_use_up_the_attempts(
        services: Services, tmp_path: Path, settings: Settings) -> None:
    tid = await submit_stub(services, tmp_path)
    for _ in range(settings.max_attempts + 1):  # more deploys than KILN_MAX_ATTEMPTS
        await _run_until_started(services, tid)
    async with running_worker(services, burst=True, pipelines=STEPS) as running:
        await running.supervisor
    final = await services.tasks.get(tid)
    assert final is not None
    assert final.state is TaskState.SUCCESS, final.fields.get("error")
    assert final.attempt == settings.max_attempts + 2 and final.lost == 0


async def test_a_duplicate_delivery_waits_for_the_live_run_instead_of_dropping_the_job(
        services: Services, tmp_path: Path) -> None:
    # another worker claimed it (and holds its lease); its job is still queued, as arq keeps it
    tid, _ = await submit_claimed_elsewhere(services, tmp_path, run="elsewhere")
    async with running_worker(services, pipelines=STEPS):
        # the delivery found a live lease: the job must stay queued, deferred past the lease
        async with asyncio.timeout(10):
            while True:
                score = await services.redis.zscore(keys.QUEUE, job_id(tid, 1))
                assert score is not None, "the duplicate delivery dropped the job"
                if score > await _now_ms(services):
                    break
                await asyncio.sleep(0.02)  # polling Redis for the worker's deferral
        # that other worker then dies without a word: its lease lapses, the job is still there
        await services.redis.delete(keys.run_lease(tid))
        await _wait_for(services, tid, "SUCCESS")
    log = await _log(services)
    assert _states(log) == ["PENDING", "STARTED", "RETRY", "STARTED", "SUCCESS"]
    assert [e.get("reason") for e in log if e["state"] == "RETRY"] == ["worker_lost"]


async def _now_ms(services: Services) -> int:
    seconds, micros = await services.redis.time()
    return int(seconds) * 1000 + int(micros) // 1000


async def test_the_sweep_requeues_a_running_task_that_has_no_lease_and_no_job(
        services: Services, tmp_path: Path) -> None:
    tid, _ = await submit_claimed_elsewhere(services, tmp_path, run="gone")
    # its run vanished and arq forgot the job: nothing would ever run it again
    await services.redis.delete(keys.run_lease(tid))
    await services.redis.zrem(keys.QUEUE, job_id(tid, 1))
    sweeper = Sweeper(services, interval=30, grace=30)
    report = await sweeper.sweep()
    assert report.requeued == [tid]
    assert (await Sweeper(services, interval=30, grace=30).sweep()).requeued == [], \
        "a second sweeper in the same interval must not act"
    async with running_worker(services, burst=True, pipelines=STEPS) as running:
        await running.supervisor
    final = await services.tasks.get(tid)
    assert final is not None and final.state is TaskState.SUCCESS and final.attempt == 2
    assert await services.redis.zcard(keys.ACTIVE) == 0, "a finished task left the index"


async def test_the_sweep_enqueues_a_waiting_task_whose_job_never_reached_the_queue(
        services: Services, tmp_path: Path) -> None:
    tid = await submit_stub(services, tmp_path)
    assert await services.queue.scheduler.unschedule(job_id(tid, 1), "u1")  # as if never sent
    await services.redis.delete(f"arq:job:{job_id(tid, 1)}")
    assert (await Sweeper(services, interval=30, grace=30).sweep()).enqueued == [], \
        "a task that has just been queued gets its grace"
    await services.redis.delete(keys.SWEEP_LOCK)
    report = await Sweeper(services, interval=30, grace=0).sweep()
    assert report.enqueued == [tid]
    async with running_worker(services, burst=True, pipelines=STEPS) as running:
        await running.supervisor
    final = await services.tasks.get(tid)
    assert final is not None and final.state is TaskState.SUCCESS and final.attempt == 1


async def test_a_worker_never_starts_a_job_it_is_already_running(
        services: Services, tmp_path: Path) -> None:
    tid = await submit_stub(services, tmp_path)
    worker: KilnWorker = build_worker(services, _NoPool(), pipelines=STEPS)  # type: ignore[arg-type]
    running: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    worker.tasks[job_id(tid, 1)] = asyncio.ensure_future(running)
    # its in-progress key expired during a long stall: arq alone would start it a second time
    await services.redis.delete(f"arq:in-progress:{job_id(tid, 1)}")
    await worker.start_jobs([job_id(tid, 1).encode()])
    assert list(worker.tasks) == [job_id(tid, 1)] and worker.job_counter == 0
    running.cancel()


class _NoPool:
    """A child pool that is never asked for anything."""


class _SwallowingRedis:
    """A Redis whose SET swallows a cancel that arrives while it waits, as redis-py 5 was seen
    to (the command returns True and the task goes on with its cancel pending)."""

    def __init__(self) -> None:
        self.entered = asyncio.Event()
        self.sets = 0

    async def pexpire(self, *args: object) -> bool:
        return True

    async def set(self, *args: object, **kwargs: object) -> bool:
        self.sets += 1
        self.entered.set()
        with contextlib.suppress(asyncio.CancelledError):  # swallowed
            await asyncio.sleep(0.2)
        return True

    async def hget(self, *args: object) -> None:
        return None


async def test_a_lease_loop_whose_cancel_a_command_swallowed_still_ends(
        settings: Settings) -> None:
    from types import SimpleNamespace

    from worker.jobs import WorkerContext, _Run

    redis = _SwallowingRedis()
    services = SimpleNamespace(settings=settings.with_(job_lease=0.3), redis=redis)
    kiln = WorkerContext(services=services, pool=None)  # type: ignore[arg-type]
    run = _Run(kiln, "t1", "job-1")
    lease = asyncio.create_task(run._keep_lease())
    await asyncio.wait_for(redis.entered.wait(), 5)
    lease.cancel()
    # without the check of its own cancel the loop would renew the lease forever, and a
    # stopping worker that waits for it would never exit
    await asyncio.wait_for(asyncio.wait([lease]), 5)
    assert lease.done() and redis.sets == 1
