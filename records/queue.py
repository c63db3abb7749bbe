"""Submitting, cancelling and retrying tasks: the task record changes first, then the arq queue."""

from __future__ import annotations

import json
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from arq.connections import ArqRedis
from arq.constants import job_key_prefix, retry_key_prefix
from arq.jobs import serialize_job
from redis.asyncio.client import Pipeline

from records import keys
from records.events import EventWriter, Guard, TaskIdentity, TaskState
from records.ids import new_id
from records.scheduler import Priority, Scheduler, Standing
from records.store import TaskRecord
from settings import Settings
from tasks.errors import WORKER_LOST

PROCESS_ASSET = "process_asset"
"""The arq function name of every asset task (a wire identifier: renaming it breaks queued jobs)."""

CANCELLED = {"code": "cancelled", "message": "cancelled by its owner"}
NO_OUTCOME = {"result": "", "artifacts": ""}
"""Fields that clear a run's result so far (`tasks.progress.share`) when it does not end in
SUCCESS: only a success has a result."""

QUEUE_EXPIRY_S = 30 * 86400
"""A queued job stays runnable this long (arq's default, one day, could drop acknowledged work)."""


def job_serializer(value: Any) -> bytes:
    """arq job payloads (and results) as JSON, never pickle; what JSON cannot hold (the
    exception of a job arq failed itself) as its repr."""
    return json.dumps(value, separators=(",", ":"), default=repr).encode()


def job_deserializer(raw: bytes) -> Any:
    return json.loads(raw)


WAKE = json.dumps({"op": "wake"})
"""The control message that tells idle workers to look for work."""


def job_id(task_id: str, attempt: int) -> str:
    return f"{task_id}-{attempt}"


@dataclass(frozen=True)
class NewTask:
    """A task to submit: who it is, its format and size, and its stored files (main first)."""

    identity: TaskIdentity
    format: str
    size: int
    files: tuple[str, ...]
    stored: int = 0
    """Bytes of the upload this task accounts for in its owner's quota (a file that several
    tasks share counts for the first): given back when the task is deleted."""
    digest: str = ""
    """Its content key (`records.dedup`)."""
    signature: str = ""
    """The short id of the pipeline settings the key was made with (`Dedup.signature_id`): a
    worker remembers a success under the key only when its own settings have the same."""
    reuse: TaskRecord | None = None
    """A task of the same owner and key that succeeded: this one is created finished with its
    result and artifacts (linked into place by the caller), and no job."""


class TaskQueue:
    """The web side of the task life: PENDING at submit, REVOKED on cancel, RETRY on retry."""

    def __init__(self, redis: ArqRedis, events: EventWriter, settings: Settings) -> None:
        self._redis = redis
        self._events = events
        self._settings = settings
        self.scheduler = Scheduler(redis, aging=settings.priority_aging,
                                   user_max_running=settings.user_max_running)

    async def submit(
        self, who: TaskIdentity, *, format: str, size: int, files: Sequence[str]
    ) -> bool:
        """Create the task (PENDING, attempt 1) and queue its first job; `files` are its stored
        files, the main one first."""
        return (await self.submit_all([NewTask(who, format, size, tuple(files))]))[0]

    async def submit_all(self, new: Sequence[NewTask]) -> list[bool]:
        """`submit` for every task of an upload, in one round trip: each task's PENDING event
        (the emit script, atomic per task), its files' entry and its arq job (as arq's
        `enqueue_job` writes it: the serialised job with its expiry); then the SUCCESS of every
        task that reuses an earlier result (after every PENDING: the batch's count of open tasks
        must not reach zero before its last task exists); then every job queued with the
        scheduler and one wake for the workers. True for each task created (its id is new:
        always, but for a bug)."""
        if not new:
            return []
        # a millisecond apart, the last one now: lists, pages and the queue keep the upload's
        # order, and every job is due at once
        first_ms = int(time.time() * 1000) - len(new) + 1
        async with self._redis.pipeline(transaction=False) as pipe:
            jobs = []
            for index, task in enumerate(new):
                enqueued_ms = first_ms + index
                who = task.identity
                await self._events.emit_in(pipe, self._events.prepare(
                    who, Guard.CREATE, TaskState.PENDING, attempt=1, stage="queued",
                    fields={
                        "id": who.task_id, "owner": who.owner, "session": who.session,
                        "batch": who.batch, "kind": who.kind, "filename": who.filename,
                        "format": task.format, "size": str(task.size), "source": task.files[0],
                        "files": json.dumps(list(task.files)), "priority": who.priority,
                        "created": repr(enqueued_ms / 1000), "created_ms": str(enqueued_ms),
                        "stored": str(task.stored), "digest": task.digest,
                        "signature": task.signature,
                    },
                ))
                pipe.zadd(keys.FILES, {who.task_id: enqueued_ms})
                pipe.hset(keys.FILES_STORED, who.task_id, f"{who.owner} {task.stored}")
                job = job_id(who.task_id, 1)
                if task.reuse is None:
                    self._store_job(pipe, job, who.task_id, enqueued_ms)
                    jobs.append((job, who.owner, Priority.parse(who.priority), enqueued_ms))
                else:
                    pipe.exists(job_key_prefix + job)  # keeps four replies a task
            for task in new:
                if task.reuse is not None:
                    await self._events.emit_in(pipe, self._reused(task, task.reuse))
            if jobs:
                await self.scheduler.schedule_in(pipe, jobs)
                pipe.publish(keys.CONTROL_CHANNEL, WAKE)
            replies = await pipe.execute()
        return [self._events.outcome(replies[4 * index]) is not None
                for index in range(len(new))]

    def _reused(self, task: NewTask, earlier: TaskRecord) -> tuple[list[str], list[str]]:
        """The SUCCESS of a task created with the result of an earlier one (`records.dedup`)."""
        stats, artifacts = earlier.decoded("result") or {}, earlier.artifacts
        return self._events.prepare(
            task.identity, Guard.REUSE, TaskState.SUCCESS, attempt=1, stage="done",
            progress=1.0,
            extra={"result": stats, "artifacts": artifacts, "deduplicated_from": earlier.id},
            fields={"result": json.dumps(stats), "artifacts": json.dumps(artifacts),
                    "finished": repr(time.time()), "deduplicated_from": earlier.id})

    async def cancel(self, record: TaskRecord) -> bool:
        """Revoke a task that is not finished; a running child is killed by its worker."""
        emitted = await self._events.emit(
            record.identity, Guard.REVOKE, TaskState.REVOKED, attempt=record.attempt,
            run=record.run, stage="cancelled", progress=float(record.fields.get("progress", 0)),
            extra={"error": CANCELLED},
            fields={"finished": repr(time.time()), "error": json.dumps(CANCELLED), **NO_OUTCOME},
        )
        if emitted is None:
            return False
        # the attempt read, or the next one if a retry landed meanwhile (the record keeps
        # whichever it had: the script revokes the current attempt)
        for attempt in (record.attempt, record.attempt + 1):
            job = job_id(record.id, attempt)
            await self.scheduler.unschedule(job, record.owner)
            await self._redis.zrem(keys.QUEUE, job)
        await self._control({"op": "cancel", "task_id": record.id})
        return True

    async def retry(self, record: TaskRecord) -> bool:
        """Queue a new attempt of a finished task."""
        attempt = record.attempt + 1
        emitted = await self._events.emit(
            record.identity, Guard.REQUEUE, TaskState.RETRY, attempt=attempt, stage="queued",
            fields={"error": "", "result": "", "artifacts": "", "started": "", "finished": "",
                    "retry_at": "", "lost": "0"},  # its owner's retry: a fresh count of faults
        )
        if emitted is None:
            return False
        await self._enqueue(record, attempt)
        return True

    async def hand_back(self, record: TaskRecord, *, run: str, job: str) -> bool:
        """A run whose worker is stopping gives its task back unfinished: RETRY with the next
        attempt (not counted as a loss: nothing went wrong), its lease dropped, and the task's
        job swapped for one of the new attempt, which any worker may start at once."""
        attempt = record.attempt + 1
        emitted = await self._events.emit(
            record.identity, Guard.RELEASE, TaskState.RETRY, attempt=attempt, run=run,
            stage="queued", extra={"reason": "shutdown"},
            fields={"started": "", "job": "", **NO_OUTCOME},
        )
        if emitted is None:
            return False
        await self._forget(job)
        await self._enqueue(record, attempt)
        return True

    def backoff(self, failures: int) -> float:
        """Seconds before the next attempt after `failures` transient failures in a row:
        KILN_RETRY_BASE doubled each time up to KILN_RETRY_MAX, less up to half of it at random
        (so tasks that failed together do not all come back together)."""
        ceiling = min(self._settings.retry_max,
                      self._settings.retry_base * 2.0 ** (failures - 1))
        return float(ceiling * random.uniform(0.5, 1.0))

    async def retry_after_fault(self, record: TaskRecord, *, run: str, job: str,
                                error: dict[str, str]) -> bool:
        """The run itself met a transient fault (`tasks.errors.TRANSIENT`: its child was killed
        by the system, its pool shut down): a new attempt after a backoff, counted against
        KILN_MAX_ATTEMPTS (a run that Redis failed mid-way is recovered as a lost run).
        False when that count is used up (the caller fails the task with `error`) or the run
        no longer holds the task."""
        lost = record.lost + 1
        if lost >= self._settings.max_attempts:
            return False
        attempt = record.attempt + 1
        retry_at = time.time() + self.backoff(lost)
        emitted = await self._events.emit(
            record.identity, Guard.RELEASE, TaskState.RETRY, attempt=attempt, run=run,
            stage="queued", extra={"reason": error["code"], "error": error,
                                   "retry_at": round(retry_at, 3)},
            fields={"started": "", "job": "", "lost": str(lost), "retry_at": repr(retry_at),
                    **NO_OUTCOME},
        )
        if emitted is None:
            return False
        await self._forget(job)
        await self._enqueue(record, attempt, due=retry_at)
        return True

    async def recover_lost(self, record: TaskRecord) -> TaskState | None:
        """A run that was lost (its worker died, or its job vanished) gets a new attempt after a
        backoff, or, once KILN_MAX_ATTEMPTS runs were lost, fails with `worker_lost`. Returns
        the state it moved to; None when the guard refused (another process recovered it
        first)."""
        lost = record.lost + 1
        if lost >= self._settings.max_attempts:
            error = {"code": WORKER_LOST,
                     "message": f"the worker processing it stopped {lost} times"}
            emitted = await self._events.emit(
                record.identity, Guard.ABANDON, TaskState.FAILURE, attempt=record.attempt,
                run=record.run, stage="failed", extra={"error": error},
                fields={"lost": str(lost), "finished": repr(time.time()),
                        "error": json.dumps(error), **NO_OUTCOME},
            )
            return TaskState.FAILURE if emitted is not None else None
        attempt = record.attempt + 1
        retry_at = time.time() + self.backoff(lost)
        emitted = await self._events.emit(
            record.identity, Guard.REQUEUE, TaskState.RETRY, attempt=attempt, stage="queued",
            extra={"reason": WORKER_LOST, "retry_at": round(retry_at, 3)},
            fields={"started": "", "job": "", "lost": str(lost), "retry_at": repr(retry_at),
                    **NO_OUTCOME},
        )
        if emitted is None:
            return None
        await self._enqueue(record, attempt, due=retry_at)
        return TaskState.RETRY

    async def enqueue_again(self, record: TaskRecord) -> bool:
        """Queue the job of a waiting task whose job is gone (an enqueue that never happened);
        False when its job is still waiting or in arq's queue."""
        job = job_id(record.id, record.attempt)
        if await self.scheduler.is_scheduled(job) or \
                await self._redis.zscore(keys.QUEUE, job) is not None:
            return False
        await self._enqueue(record, record.attempt)
        return True

    async def standing(self, user: str, jobs: Sequence[tuple[str, str]]) -> Standing:
        """Where `user`'s (job id, kind) pairs stand under the scheduling policy; callers bound
        how many they ask about."""
        return await self.scheduler.standing(user, jobs)

    async def _enqueue(self, record: TaskRecord, attempt: int, *, due: float | None = None) -> None:
        """Write the attempt's arq job and queue it with the scheduler (after `due`, epoch s)."""
        job = job_id(record.id, attempt)
        now_ms = int(time.time() * 1000)
        due_ms = now_ms if due is None else max(now_ms, int(due * 1000))
        async with self._redis.pipeline(transaction=False) as pipe:
            self._store_job(pipe, job, record.id, due_ms)
            await self.scheduler.schedule_in(
                pipe, [(job, record.owner, Priority.parse(record.fields.get("priority")), due_ms)])
            pipe.publish(keys.CONTROL_CHANNEL, WAKE)
            await pipe.execute()

    @staticmethod
    def _store_job(pipe: Pipeline, job: str, task_id: str, enqueued_ms: int) -> None:
        """The arq job as arq's `enqueue_job` writes it (the scheduler puts it in arq's queue)."""
        pipe.psetex(job_key_prefix + job, QUEUE_EXPIRY_S * 1000, serialize_job(
            PROCESS_ASSET, (task_id,), {}, None, enqueued_ms, serializer=job_serializer))

    async def _forget(self, job: str) -> None:
        """Take a job out of arq's queue for good (its task now runs under another job id)."""
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.zrem(keys.QUEUE, job)
            pipe.delete(job_key_prefix + job, retry_key_prefix + job)
            await pipe.execute()

    async def _control(self, message: dict[str, str]) -> None:
        await self._redis.publish(keys.CONTROL_CHANNEL, json.dumps(message))


def new_task_identity(
    *, owner: str, session: str, batch: str, kind: str, filename: str,
    priority: Priority = Priority.DEFAULT,
) -> TaskIdentity:
    return TaskIdentity(task_id=new_id(), owner=owner, session=session, batch=batch,
                        kind=kind, filename=filename, priority=priority.label)
