"""Submitting, cancelling and retrying tasks: the task record changes first, then the arq queue."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from typing import Any

from arq.connections import ArqRedis

import keys
from events import EventWriter, Guard, TaskIdentity, TaskState
from ids import new_id
from records import TaskRecord
from settings import Settings

PROCESS_ASSET = "process_asset"
"""The arq function name of every asset task (a wire identifier: renaming it breaks queued jobs)."""

CANCELLED = {"code": "cancelled", "message": "cancelled by its owner"}

QUEUE_EXPIRY_S = 30 * 86400
"""A queued job stays runnable this long (arq's default, one day, could drop acknowledged work)."""


def job_serializer(value: Any) -> bytes:
    """arq job payloads as JSON, never pickle."""
    return json.dumps(value, separators=(",", ":")).encode()


def job_deserializer(raw: bytes) -> Any:
    return json.loads(raw)


def job_id(task_id: str, attempt: int) -> str:
    return f"{task_id}-{attempt}"


class TaskQueue:
    """The web side of the task life: PENDING at submit, REVOKED on cancel, RETRY on retry."""

    def __init__(self, redis: ArqRedis, events: EventWriter, settings: Settings) -> None:
        self._redis = redis
        self._events = events
        self._settings = settings

    async def submit(
        self, who: TaskIdentity, *, format: str, size: int, files: Sequence[str]
    ) -> bool:
        """Create the task (PENDING, attempt 1) and queue its first job; `files` are its stored
        files, the main one first."""
        now = time.time()
        emitted = await self._events.emit(
            who, Guard.CREATE, TaskState.PENDING, attempt=1, stage="queued",
            fields={
                "id": who.task_id, "owner": who.owner, "session": who.session,
                "batch": who.batch, "kind": who.kind, "filename": who.filename,
                "format": format, "size": str(size), "source": files[0],
                "files": json.dumps(list(files)),
                "created": repr(now), "created_ms": str(int(now * 1000)),
            },
        )
        if emitted is None:
            return False
        await self._enqueue(who.task_id, 1)
        return True

    async def cancel(self, record: TaskRecord) -> bool:
        """Revoke a task that is not finished; a running child is killed by its worker."""
        emitted = await self._events.emit(
            record.identity, Guard.REVOKE, TaskState.REVOKED, attempt=record.attempt,
            run=record.run, stage="cancelled", progress=float(record.fields.get("progress", 0)),
            extra={"error": CANCELLED},
            fields={"finished": repr(time.time()), "error": json.dumps(CANCELLED)},
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

    async def _enqueue(self, task_id: str, attempt: int) -> None:
        await self._redis.enqueue_job(
            PROCESS_ASSET, task_id, _job_id=job_id(task_id, attempt),
            _queue_name=keys.QUEUE, _expires=QUEUE_EXPIRY_S,
        )
        await self._control({"op": "wake"})

    async def _control(self, message: dict[str, str]) -> None:
        await self._redis.publish(keys.CONTROL_CHANNEL, json.dumps(message))


def new_task_identity(
    *, owner: str, session: str, batch: str, kind: str, filename: str
) -> TaskIdentity:
    return TaskIdentity(task_id=new_id(), owner=owner, session=session, batch=batch,
                        kind=kind, filename=filename)
