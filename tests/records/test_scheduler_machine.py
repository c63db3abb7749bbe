"""A hypothesis state machine over the real scheduler, task queue and event script on a real
Redis: users submit at every priority, two simulated workers admit and claim jobs, runs succeed,
fail for good or meet transient faults (retried after a backoff), owners cancel, time passes.

Invariants: no task runs twice at once; no user ever has more than KILN_USER_MAX_RUNNING running;
nothing starves (with a stream of high-priority work from another user, every task still ends,
through aging); and every task gets exactly one terminal event."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

from arq.connections import ArqRedis
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test

from records import keys
from records.events import EventWriter, Guard, TaskState
from records.queue import NewTask, TaskQueue, new_task_identity
from records.scheduler import Priority
from records.store import TaskStore
from tests.conftest import make_settings

USERS = ("u1", "u2", "u3")
FLOOD = ("flood1", "flood2")
CAP = 2
SLOTS = 2
AGING_S = 100.0


class SchedulerMachine(RuleBasedStateMachine):
    def __init__(self, redis_url: str, data_dir: Path) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.config = make_settings(redis_url, data_dir, user_max_running=CAP,
                                    priority_aging=AGING_S, retry_base=1.0, retry_max=10.0,
                                    max_attempts=3)
        self.redis = ArqRedis.from_url(redis_url)
        self.run(self.redis.flushdb())
        self.events = EventWriter(self.redis, self.config)
        self.queue = TaskQueue(self.redis, self.events, self.config)
        self.offset_ms = 0
        self.owner: dict[str, str] = {}  # task id -> user
        self.running: dict[str, tuple[str, str, int]] = {}  # job -> (task, run, worker)
        self.serial = 0

    def run(self, awaitable: Any) -> Any:
        return self.loop.run_until_complete(awaitable)

    def teardown(self) -> None:
        """Drain and check the end (see `_drain`), then close."""
        try:
            self.run(self._drain())
        finally:
            self.run(self.redis.aclose())
            self.loop.close()

    def now_ms(self) -> int:
        return int(time.time() * 1000) + self.offset_ms

    async def _submit(self, user: str, priority: Priority, count: int) -> None:
        new = []
        for _ in range(count):
            self.serial += 1
            who = new_task_identity(owner=user, session=f"s-{user}", batch=f"b{self.serial}",
                                    kind="mesh", filename=f"{self.serial}.obj",
                                    priority=priority)
            new.append(NewTask(who, "obj", 1, ("a.obj",)))
            self.owner[who.task_id] = user
        assert all(await self.queue.submit_all(new))

    @rule(user=st.sampled_from(USERS), priority=st.sampled_from(list(Priority)),
          count=st.integers(1, 4))
    def submit(self, user: str, priority: Priority, count: int) -> None:
        self.run(self._submit(user, priority, count))

    async def _admit(self, worker: int) -> None:
        mine = sum(1 for _, _, w in self.running.values() if w == worker)
        admission = await self.queue.scheduler.admit(
            SLOTS - mine, worker=f"w{worker}", slots=SLOTS, heartbeat_s=3600, lease_s=3600,
            now_ms=self.now_ms())
        for job in admission.jobs:
            task_id, attempt = job.rsplit("-", 1)
            assert all(task != task_id for task, _, _ in self.running.values()), \
                f"{task_id} admitted while a run of it is running"
            record = await self.record(task_id)
            run = f"run-{job}"
            claimed = await self.events.emit(record.identity, Guard.CLAIM, TaskState.STARTED,
                                             attempt=int(attempt), run=run, stage="starting",
                                             fields={"job": job})
            if claimed is None:  # cancelled between admission and claim
                await self.queue.scheduler.finished(self.owner[task_id], job)
                continue
            self.running[job] = (task_id, run, worker)

    async def record(self, task_id: str) -> Any:
        record = await TaskStore(self.redis).get(task_id)
        assert record is not None
        return record

    @rule(worker=st.integers(0, 1))
    def admit(self, worker: int) -> None:
        self.run(self._admit(worker))

    async def _finish(self, job: str, outcome: str) -> None:
        task_id, run, _ = self.running.pop(job)
        record = await self.record(task_id)
        if record.run == run and not record.state.terminal:
            attempt = record.attempt
            if outcome == "transient":
                error = {"code": "killed", "message": "killed by the system"}
                if not await self.queue.retry_after_fault(record, run=run, job=job, error=error):
                    await self.events.emit(record.identity, Guard.RUN, TaskState.FAILURE,
                                           attempt=attempt, run=run, extra={"error": error})
            else:
                state = TaskState.SUCCESS if outcome == "success" else TaskState.FAILURE
                await self.events.emit(record.identity, Guard.RUN, state, attempt=attempt,
                                       run=run)
        await self.queue.scheduler.finished(self.owner[task_id], job)

    @rule(data=st.data(), outcome=st.sampled_from(["success", "corrupt", "transient"]))
    def finish(self, data: st.DataObject, outcome: str) -> None:
        if self.running:
            job = data.draw(st.sampled_from(sorted(self.running)))
            self.run(self._finish(job, outcome))

    async def _cancel(self, task_id: str) -> None:
        record = await self.record(task_id)
        if await self.queue.cancel(record):
            for job, (task, _, _) in list(self.running.items()):
                if task == task_id:  # its worker kills the child: the run ends
                    del self.running[job]
                    await self.queue.scheduler.finished(self.owner[task_id], job)

    @rule(data=st.data())
    def cancel(self, data: st.DataObject) -> None:
        if self.owner:
            self.run(self._cancel(data.draw(st.sampled_from(sorted(self.owner)))))

    @rule(seconds=st.floats(0, 250))
    def wait(self, seconds: float) -> None:
        self.offset_ms += int(seconds * 1000)

    @invariant()
    def caps_hold(self) -> None:
        per_user: dict[str, int] = {}
        for task, _, _ in self.running.values():
            per_user[self.owner[task]] = per_user.get(self.owner[task], 0) + 1
        assert all(n <= CAP for n in per_user.values()), per_user

    async def _unfinished(self) -> list[str]:
        states = [await self.record(task_id) for task_id in self.owner]
        return [r.id for r in states if not r.state.terminal]

    async def _drain(self) -> None:
        """Run everything left while another user keeps adding high-priority work: aging must
        still bring every earlier task to its end."""
        earlier = set(self.owner)
        for _ in range(400):
            left = [t for t in await self._unfinished() if t in earlier]
            if not left:
                break
            for flood in FLOOD:  # enough high work to fill every slot
                await self._submit(flood, Priority.HIGH, CAP)
            self.offset_ms += int(AGING_S * 1000 / 4)
            for worker in (0, 1):
                await self._admit(worker)
            for job in sorted(self.running):
                await self._finish(job, "success")
        else:
            raise AssertionError(f"starved: {left}")
        for user in (*USERS, *FLOOD):
            ended: dict[str, int] = {}
            for _, fields in await self.redis.xrange(keys.user_stream(user).log):
                event = json.loads(fields[b"e"])
                if event["type"] == "task" and event["state"] in ("SUCCESS", "FAILURE",
                                                                  "REVOKED"):
                    ended[event["task_id"]] = ended.get(event["task_id"], 0) + 1
            assert all(n == 1 for n in ended.values()), ended
            assert set(ended) >= {t for t in earlier if self.owner[t] == user}


def test_the_scheduler_keeps_its_invariants(redis_url: str, tmp_path: Path) -> None:
    class OnThisRedis(SchedulerMachine):
        def __init__(self) -> None:
            super().__init__(redis_url, tmp_path / "data")

    run_state_machine_as_test(OnThisRedis, settings=settings(
        max_examples=25, stateful_step_count=30, deadline=None, derandomize=True,
        suppress_health_check=[HealthCheck.too_slow]))
