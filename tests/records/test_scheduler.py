"""The scheduler's rules on a real Redis: priorities with aging, the weighted fair share, the
per-user cap, delayed retries, and positions that say where a job really stands."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

from redis.asyncio import Redis

from records import keys
from records.events import Guard, TaskState
from records.queue import job_id
from records.scheduler import Priority, Scheduler
from services import Services
from tests.helpers.submit import submit_stub

P = Priority


def _scheduler(services: Services, *, aging: float = 300.0, cap: int = 0) -> Scheduler:
    return Scheduler(services.redis, aging=aging, user_max_running=cap)


async def _queue(scheduler: Scheduler, redis: Redis,
                 jobs: Sequence[tuple[str, str, Priority, float]]) -> None:
    """(job, user, priority, seconds it has waited already) entries, in this order."""
    now = int(time.time() * 1000) - len(jobs)
    async with redis.pipeline(transaction=False) as pipe:
        await scheduler.schedule_in(pipe, [(job, user, priority, now - int(waited * 1000) + n)
                                           for n, (job, user, priority, waited)
                                           in enumerate(jobs)])
        await pipe.execute()


async def _order(scheduler: Scheduler, *, finish: bool = True) -> list[str]:
    """Admit one job at a time until none is left (finishing each at once when `finish`)."""
    order: list[str] = []
    while (admitted := (await scheduler.admit(1)).jobs):
        order += admitted
        if finish:
            await scheduler.finished(admitted[0].split("-")[0], admitted[0])
    return order


async def test_high_before_default_before_low(services: Services) -> None:
    scheduler = _scheduler(services)
    await _queue(scheduler, services.redis, [
        ("a-low", "a", P.LOW, 0), ("a-default", "a", P.DEFAULT, 0), ("b-high", "b", P.HIGH, 0),
        ("b-low", "b", P.LOW, 0), ("a-high", "a", P.HIGH, 0)])
    order = await _order(scheduler)
    assert [job.split("-")[1] for job in order] == ["high", "high", "default", "low", "low"]


async def test_a_low_job_moves_up_a_level_once_it_has_waited_the_aging_time(
        services: Services) -> None:
    scheduler = _scheduler(services, aging=60)
    await _queue(scheduler, services.redis, [
        ("a-fresh", "a", P.DEFAULT, 0), ("b-old", "b", P.LOW, 61), ("c-older", "c", P.LOW, 130),
        ("d-high", "d", P.HIGH, 0)])
    # c has waited two agings: high, beside d; b one: default, beside a (equal shares: by id)
    assert await _order(scheduler) == ["c-older", "d-high", "a-fresh", "b-old"]

    without = _scheduler(services, aging=0)  # no aging: a low job stays low however long it waits
    await _queue(without, services.redis, [("a-new", "a", P.DEFAULT, 0),
                                           ("b-ancient", "b", P.LOW, 86_400)])
    assert await _order(without) == ["a-new", "b-ancient"]


async def test_slots_go_round_robin_and_a_newcomer_is_next(services: Services) -> None:
    scheduler = _scheduler(services)
    await _queue(scheduler, services.redis, [(f"a-{n}", "a", P.DEFAULT, 0) for n in range(6)])
    first = (await scheduler.admit(2)).jobs  # a alone takes every slot: work-conserving
    assert first == ["a-0", "a-1"]
    await _queue(scheduler, services.redis, [(f"b-{n}", "b", P.DEFAULT, 0) for n in range(2)])
    assert (await scheduler.admit(1)).jobs == ["b-0"]  # the next free slot is b's
    assert await _order(scheduler) == ["a-2", "b-1", "a-3", "a-4", "a-5"]


async def test_weights_share_slots_in_proportion(services: Services) -> None:
    await services.redis.hset(keys.user("heavy"), "weight", "3")  # type: ignore[misc]
    scheduler = _scheduler(services)
    await _queue(scheduler, services.redis,
                 [(f"light-{n}", "light", P.DEFAULT, 0) for n in range(10)] +
                 [(f"heavy-{n}", "heavy", P.DEFAULT, 0) for n in range(10)])
    first_eight = [job.split("-")[0] for job in await _order(scheduler)][:8]
    assert first_eight.count("heavy") == 6 and first_eight.count("light") == 2


async def test_the_per_user_cap_holds_and_frees_with_each_finished_run(
        services: Services) -> None:
    scheduler = _scheduler(services, cap=1)
    await _queue(scheduler, services.redis, [("a-0", "a", P.DEFAULT, 0),
                                             ("a-1", "a", P.DEFAULT, 0),
                                             ("b-0", "b", P.DEFAULT, 0)])
    assert (await scheduler.admit(3)).jobs == ["a-0", "b-0"]  # a's second waits for its first
    assert (await scheduler.admit(3)).jobs == []
    await scheduler.finished("a", "a-0")
    assert (await scheduler.admit(3)).jobs == ["a-1"]


async def test_a_dead_runs_place_is_freed_when_its_lease_lapses(services: Services) -> None:
    scheduler = _scheduler(services, cap=1)
    await _queue(scheduler, services.redis, [("a-0", "a", P.DEFAULT, 0),
                                             ("a-1", "a", P.DEFAULT, 0)])
    now = int(time.time() * 1000)
    assert (await scheduler.admit(1, lease_s=5, now_ms=now)).jobs == ["a-0"]
    assert (await scheduler.admit(1, now_ms=now + 4_000)).jobs == []
    assert (await scheduler.admit(1, now_ms=now + 6_000)).jobs == ["a-1"]  # never finished


async def test_a_delayed_job_waits_until_it_is_due(services: Services) -> None:
    scheduler = _scheduler(services)
    now = int(time.time() * 1000)
    async with services.redis.pipeline(transaction=False) as pipe:
        await scheduler.schedule_in(pipe, [("a-later", "a", P.DEFAULT, now + 30_000)])
        await pipe.execute()
    assert await scheduler.waiting() == 1
    assert (await scheduler.admit(1, now_ms=now)).jobs == []
    assert (await scheduler.admit(1, now_ms=now + 30_001)).jobs == ["a-later"]
    assert await scheduler.waiting() == 0


async def test_positions_are_the_order_jobs_are_admitted_in(services: Services) -> None:
    await services.redis.hset(keys.user("c"), "weight", "2")  # type: ignore[misc]
    scheduler = _scheduler(services, aging=60)
    await _queue(scheduler, services.redis,
                 [(f"a-{n}", "a", P.DEFAULT, 0) for n in range(5)] +
                 [("b-0", "b", P.LOW, 0), ("b-1", "b", P.LOW, 70), ("b-2", "b", P.DEFAULT, 0)] +
                 [(f"c-{n}", "c", P.DEFAULT, 0) for n in range(4)] + [("d-0", "d", P.HIGH, 0)])
    assert (await scheduler.admit(1)).jobs == ["d-0"]  # passes are no longer all equal
    await services.redis.delete(keys.QUEUE)  # and its run is over
    expected = []
    for user, count in (("a", 5), ("b", 3), ("c", 4)):
        standing = await scheduler.standing(user, [(f"{user}-{n}", "mesh") for n in range(count)])
        expected += [(position, job) for job, position in standing.positions.items()]
    assert sorted(position for position, _ in expected) == list(range(1, len(expected) + 1))
    assert [job for _, job in sorted(expected)] == await _order(scheduler)


async def test_a_position_comes_with_an_estimate_once_run_times_are_known(
        services: Services) -> None:
    scheduler = _scheduler(services)
    await _queue(scheduler, services.redis, [(f"a-{n}", "a", P.DEFAULT, 0) for n in range(5)])
    assert (await scheduler.standing("a", [("a-4", "mesh")])).eta_s == {}
    await scheduler.admit(0, worker="w1", slots=2, heartbeat_s=60)  # two slots in all
    await scheduler.record_duration("mesh", 4.0)
    await scheduler.record_duration("texture", 1.0)  # the mean over kinds moves to 3.4
    standing = await scheduler.standing("a", [("a-0", "mesh"), ("a-4", "texture")])
    assert standing.positions == {"a-0": 1, "a-4": 5}
    assert standing.queued == 5
    assert standing.eta_s == {"a-0": 4.0, "a-4": round(4 / 2 * 3.4 + 1.0, 1)}


async def test_a_cancelled_job_leaves_the_queue(services: Services) -> None:
    scheduler = _scheduler(services)
    await _queue(scheduler, services.redis, [("a-0", "a", P.DEFAULT, 0),
                                             ("a-1", "a", P.DEFAULT, 0)])
    assert await scheduler.unschedule("a-0", "a")
    assert not await scheduler.unschedule("a-0", "a")
    assert await _order(scheduler) == ["a-1"]
    assert await services.redis.zcard(keys.SCHED_USERS) == 0


async def test_a_user_sending_one_file_at_a_time_shares_with_a_backlog(
        services: Services) -> None:
    """Each refill, whether the last job still runs or has ended, comes back at no better a pass
    than the user had: the two alternate instead of the one-at-a-time user taking every slot."""
    scheduler = _scheduler(services)
    await _queue(scheduler, services.redis, [(f"a-{n}", "a", P.DEFAULT, 0) for n in range(8)])
    await _queue(scheduler, services.redis, [("s-0", "s", P.DEFAULT, 0)])
    order = []
    for n in range(1, 9):
        (job,) = (await scheduler.admit(1)).jobs
        order.append(job)
        if job.startswith("s-"):
            if n % 2:  # sometimes its last run has ended when the next file comes
                await scheduler.finished("s", job)
            await _queue(scheduler, services.redis, [(f"s-{n}", "s", P.DEFAULT, 0)])
    users = [job[0] for job in order]
    assert users.count("a") == 4 and users.count("s") == 4, order
    assert all(users[i] != users[i + 1] for i in range(len(users) - 1)), order


async def test_a_newcomer_is_next_after_a_backlog_that_has_had_its_slots(
        services: Services) -> None:
    scheduler = _scheduler(services)
    await _queue(scheduler, services.redis, [(f"a-{n}", "a", P.DEFAULT, 0) for n in range(10)])
    await _queue(scheduler, services.redis, [(f"root-{n}", "root", P.HIGH, 0) for n in range(3)])
    assert (await scheduler.admit(4)).jobs == ["root-0", "root-1", "root-2", "a-0"]
    await _queue(scheduler, services.redis, [("b-0", "b", P.DEFAULT, 0)])
    assert (await scheduler.admit(1)).jobs == ["b-0"]  # not behind root's high passes


async def test_a_job_whose_task_no_longer_waits_is_left_out(
        services: Services, tmp_path: Path) -> None:
    """A pipeline that redis-py sent again after a lost reply queues its jobs a second time; a
    job whose task is running, finished or cancelled meanwhile is neither queued nor admitted."""
    scheduler = services.queue.scheduler
    task_id = await submit_stub(services, tmp_path)
    job = job_id(task_id, 1)
    assert (await scheduler.admit(1)).jobs == [job]
    record = await services.tasks.get(task_id)
    assert record is not None
    assert await services.events.emit(record.identity, Guard.CLAIM, TaskState.STARTED,
                                      attempt=1, run="r1")
    await _queue(scheduler, services.redis, [(job, "u1", P.DEFAULT, 0)])  # sent again
    assert await scheduler.waiting() == 0
    assert await services.redis.zcard(keys.SCHED_USERS) == 0

    cancelled = await submit_stub(services, tmp_path)
    record = await services.tasks.get(cancelled)
    assert record is not None
    await services.events.emit(record.identity, Guard.REVOKE, TaskState.REVOKED, attempt=1)
    assert (await scheduler.admit(5)).jobs == []  # its job was still waiting: dropped
    assert await scheduler.waiting() == 0
