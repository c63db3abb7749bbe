"""Submitting, cancelling and retrying tasks: the task record changes first, then the arq queue."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from arq.connections import ArqRedis
from arq.constants import in_progress_key_prefix, job_key_prefix, retry_key_prefix
from arq.jobs import serialize_job

from records import keys
from records.events import EventWriter, Guard, TaskIdentity, TaskState
from records.ids import new_id
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
    """arq job payloads as JSON, never pickle."""
    return json.dumps(value, separators=(",", ":")).encode()


def job_deserializer(raw: bytes) -> Any:
    return json.loads(raw)


def job_id(task_id: str, attempt: int) -> str:
    return f"{task_id}-{attempt}"


RUNNING_SCAN = 1000
"""How many jobs at the front of the queue are checked for arq's in-progress key: more than every
worker's `max_jobs` added up (see `QUEUE_POSITION_SCRIPT`)."""

QUEUE_POSITION_SCRIPT = """
local queue, now, prefix = KEYS[1], ARGV[1], ARGV[2]
local ready = redis.call('ZCOUNT', queue, '-inf', now)
local depth = math.min(ready, tonumber(ARGV[3]))
local front = {}
if depth > 0 then front = redis.call('ZRANGE', queue, 0, depth - 1) end
local running_before = {0}
local running = 0
for i, id in ipairs(front) do
  if redis.call('EXISTS', prefix .. id) == 1 then running = running + 1 end
  running_before[i + 1] = running
end
local positions = {}
for n = 4, #ARGV do
  local rank = redis.call('ZRANK', queue, ARGV[n])
  local position = 0
  if rank and redis.call('EXISTS', prefix .. ARGV[n]) == 0 then
    position = rank - running_before[math.min(rank, depth) + 1] + 1
  end
  positions[#positions + 1] = position
end
return {ready - running, positions}
"""
"""Where jobs wait, in one atomic read. KEYS[1] is the queue; ARGV: now (ms), arq's in-progress
key prefix, the scan depth (`RUNNING_SCAN`), then the job ids. Returns {queued, positions}: the
ready jobs (score <= now) not in progress, and per job id its position, 0 when it is not waiting
(not queued, or running).

arq keeps a job in the queue while it runs (marked by `arq:in-progress:<job id>`) and takes ready
jobs in ZRANGE order: by score (enqueue time in ms, or the time a deferred job becomes due), ties
by job id. A job's position is therefore 1 + its ZRANK - the running jobs ranked ahead of it. A
job that is due or deferred gets a position too; jobs ahead of a deferred one include deferred jobs
due before it.

Bounded, whatever the queue's size: ZCOUNT and ZRANK are O(log n), and running jobs are looked
for only among the first `RUNNING_SCAN` ranks. That is enough: a worker reads the ready jobs from
rank 0 and starts them in order, skipping running ones, so when a job starts every job ahead of
it is running; jobs enqueued or falling due later rank behind every ready job; and a running
job's rank only falls as jobs ahead of it finish. So the running jobs are the front of the queue
(give or take jobs whose dead worker's lease has not lapsed yet, or just lapsed), and their
number is at most the workers' `max_jobs` added up. Were `RUNNING_SCAN` ever passed, positions
and `queued` would be overstated by the running jobs beyond it, never out of order.
"""


@dataclass(frozen=True)
class NewTask:
    """A task to submit: who it is, its format and size, and its stored files (main first)."""

    identity: TaskIdentity
    format: str
    size: int
    files: tuple[str, ...]


@dataclass(frozen=True)
class QueueStanding:
    """The queue as seen at one instant: `positions` of the waiting jobs asked about (by job id,
    1 = next to start; jobs not waiting are absent) and `queued`, every ready job not running."""

    positions: dict[str, int]
    queued: int


class TaskQueue:
    """The web side of the task life: PENDING at submit, REVOKED on cancel, RETRY on retry."""

    def __init__(self, redis: ArqRedis, events: EventWriter, settings: Settings) -> None:
        self._redis = redis
        self._events = events
        self._settings = settings
        self._standing = redis.register_script(QUEUE_POSITION_SCRIPT)

    async def submit(
        self, who: TaskIdentity, *, format: str, size: int, files: Sequence[str]
    ) -> bool:
        """Create the task (PENDING, attempt 1) and queue its first job; `files` are its stored
        files, the main one first."""
        return (await self.submit_all([NewTask(who, format, size, tuple(files))]))[0]

    async def submit_all(self, new: Sequence[NewTask]) -> list[bool]:
        """`submit` for every task of an upload, in one round trip: each task's PENDING event
        (the emit script, atomic per task), then its arq job (as arq's `enqueue_job` writes it:
        the serialised job with its expiry, and its place in the queue), then one wake for the
        workers. True for each task created (its id is new: always, but for a bug)."""
        if not new:
            return []
        # a millisecond apart, the last one now: lists, pages and the queue keep the upload's
        # order, and every job is due at once (arq takes only jobs whose score is not ahead)
        first_ms = int(time.time() * 1000) - len(new) + 1
        async with self._redis.pipeline(transaction=False) as pipe:
            for index, task in enumerate(new):
                enqueued_ms = first_ms + index
                who = task.identity
                await self._events.emit_in(pipe, self._events.prepare(
                    who, Guard.CREATE, TaskState.PENDING, attempt=1, stage="queued",
                    fields={
                        "id": who.task_id, "owner": who.owner, "session": who.session,
                        "batch": who.batch, "kind": who.kind, "filename": who.filename,
                        "format": task.format, "size": str(task.size), "source": task.files[0],
                        "files": json.dumps(list(task.files)),
                        "created": repr(enqueued_ms / 1000), "created_ms": str(enqueued_ms),
                    },
                ))
                job = job_id(who.task_id, 1)
                pipe.psetex(job_key_prefix + job, QUEUE_EXPIRY_S * 1000, serialize_job(
                    PROCESS_ASSET, (who.task_id,), {}, None, enqueued_ms,
                    serializer=job_serializer))
                pipe.zadd(keys.QUEUE, {job: enqueued_ms})
            pipe.publish(keys.CONTROL_CHANNEL, json.dumps({"op": "wake"}))
            replies = await pipe.execute()
        return [self._events.outcome(reply) is not None for reply in replies[:-1:3]]

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
        await self._redis.zrem(keys.QUEUE, job_id(record.id, record.attempt))
        await self._control({"op": "cancel", "task_id": record.id})
        return True

    async def retry(self, record: TaskRecord) -> bool:
        """Queue a new attempt of a finished task."""
        attempt = record.attempt + 1
        emitted = await self._events.emit(
            record.identity, Guard.REQUEUE, TaskState.RETRY, attempt=attempt, stage="queued",
            fields={"error": "", "result": "", "artifacts": "", "started": "", "finished": ""},
        )
        if emitted is None:
            return False
        await self._enqueue(record.id, attempt)
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
        await self._enqueue(record.id, attempt)
        return True

    async def recover_lost(self, record: TaskRecord) -> TaskState | None:
        """A run that was lost (its worker died, or its job vanished) gets a new attempt, or,
        once KILN_MAX_ATTEMPTS runs were lost, fails with `worker_lost`. Returns the state it
        moved to; None when the guard refused (another process recovered it first)."""
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
        emitted = await self._events.emit(
            record.identity, Guard.REQUEUE, TaskState.RETRY, attempt=attempt, stage="queued",
            extra={"reason": WORKER_LOST},
            fields={"started": "", "job": "", "lost": str(lost), **NO_OUTCOME},
        )
        if emitted is None:
            return None
        await self._enqueue(record.id, attempt)
        return TaskState.RETRY

    async def enqueue_again(self, record: TaskRecord) -> bool:
        """Queue the job of a waiting task whose job is gone (an enqueue that never happened);
        False when arq still holds a job of that id."""
        return await self._enqueue(record.id, record.attempt)

    async def standing(self, job_ids: Sequence[str]) -> QueueStanding:
        """Positions of `job_ids` in the queue and the number of ready jobs, in one script;
        callers bound `job_ids` (each costs two O(log n) lookups)."""
        now_ms = int(time.time() * 1000)  # arq scores jobs by its client's clock too
        queued, positions = await self._standing(
            keys=[keys.QUEUE],
            args=[str(now_ms), in_progress_key_prefix, str(RUNNING_SCAN), *job_ids],
        )
        return QueueStanding(
            positions={jid: int(p) for jid, p in zip(job_ids, positions, strict=True) if int(p)},
            queued=int(queued),
        )

    async def _enqueue(self, task_id: str, attempt: int) -> bool:
        job = await self._redis.enqueue_job(
            PROCESS_ASSET, task_id, _job_id=job_id(task_id, attempt),
            _queue_name=keys.QUEUE, _expires=QUEUE_EXPIRY_S,
        )
        await self._control({"op": "wake"})
        return job is not None

    async def _forget(self, job: str) -> None:
        """Take a job out of arq's queue for good (its task now runs under another job id)."""
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.zrem(keys.QUEUE, job)
            pipe.delete(job_key_prefix + job, retry_key_prefix + job)
            await pipe.execute()

    async def _control(self, message: dict[str, str]) -> None:
        await self._redis.publish(keys.CONTROL_CHANNEL, json.dumps(message))


def new_task_identity(
    *, owner: str, session: str, batch: str, kind: str, filename: str
) -> TaskIdentity:
    return TaskIdentity(task_id=new_id(), owner=owner, session=session, batch=batch,
                        kind=kind, filename=filename)
