"""Task records: reading task snapshots from Redis and the JSON view the API and streams show."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis

from records import keys
from records.events import QUEUED_STATES, TaskIdentity, TaskState

SNAPSHOT_SCRIPT = """
local seq = tonumber(redis.call('GET', KEYS[1]) or '0')
local ids = redis.call('ZREVRANGE', KEYS[2], 0, tonumber(ARGV[2]) - 1)
local tasks = {}
for _, id in ipairs(ids) do
  local h = redis.call('HGETALL', ARGV[1] .. id)
  if #h > 0 then tasks[#tasks + 1] = h end
end
return {seq, tasks}
"""

QUEUED_SCRIPT = """
local scan, limit = tonumber(ARGV[2]), tonumber(ARGV[3])
local found = {}
if scan < 1 or limit < 1 then return found end
local ids = redis.call('ZREVRANGE', KEYS[1], 0, scan - 1)
for _, id in ipairs(ids) do
  local f = redis.call('HMGET', ARGV[1] .. id, 'owner', 'state', 'attempt', 'kind')
  local queued = false
  for n = 5, #ARGV do
    if f[2] == ARGV[n] then queued = true end
  end
  if f[1] == ARGV[4] and queued then
    found[#found + 1] = {id, f[3] or '1', f[4] or ''}
    if #found >= limit then break end
  end
end
return found
"""
"""The newest queued tasks of an index. KEYS[1]: the index; ARGV: the task key prefix, how many of
the index's newest ids to look at, how many queued tasks to return at most, the owner, then the
queued states. Returns {task id, attempt, kind} triples, newest first."""


def _float(raw: str | None) -> float | None:
    return float(raw) if raw else None


def _json(raw: str | None) -> Any:
    return json.loads(raw) if raw else None


@dataclass(frozen=True)
class TaskRecord:
    """One task's snapshot as stored in its hash."""

    fields: dict[str, str]

    @property
    def id(self) -> str:
        return self.fields["id"]

    @property
    def owner(self) -> str:
        return self.fields["owner"]

    @property
    def state(self) -> TaskState:
        return TaskState(self.fields["state"])

    @property
    def attempt(self) -> int:
        return int(self.fields.get("attempt", "1"))

    @property
    def lost(self) -> int:
        """How many of its runs were lost (a worker died); shutdowns do not count."""
        return int(self.fields.get("lost") or "0")

    @property
    def job(self) -> str:
        """The arq job id the current run was claimed by ("" while waiting)."""
        return self.fields.get("job", "")

    @property
    def run(self) -> str:
        return self.fields.get("run", "")

    @property
    def identity(self) -> TaskIdentity:
        f = self.fields
        return TaskIdentity(
            task_id=f["id"], owner=f["owner"], session=f["session"], batch=f["batch"],
            kind=f["kind"], filename=f["filename"], priority=f.get("priority", "default"),
        )

    @property
    def artifacts(self) -> list[dict[str, Any]]:
        return list(_json(self.fields.get("artifacts")) or [])

    def number(self, name: str) -> float | None:
        """A numeric field (a timestamp, the progress), None when unset."""
        return _float(self.fields.get(name))

    def decoded(self, name: str) -> Any:
        """A JSON field (`error`, `result`), None when unset."""
        return _json(self.fields.get(name))


@dataclass(frozen=True)
class QueuedTask:
    """A task waiting for a worker (PENDING or RETRY) and the attempt its job is for."""

    task_id: str
    attempt: int
    kind: str


def _pairs(flat: list[Any]) -> dict[str, str]:
    it = iter(flat)
    return {_s(k): _s(v) for k, v in zip(it, it, strict=True)}


def _s(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class TaskStore:
    """Reads task records; writing is `events.EventWriter`'s job."""

    def __init__(self, redis: Redis) -> None:
        self._redis = redis
        self._snapshot = redis.register_script(SNAPSHOT_SCRIPT)
        self._queued = redis.register_script(QUEUED_SCRIPT)

    async def get(self, task_id: str) -> TaskRecord | None:
        raw = await self._redis.hgetall(keys.task(task_id))  # type: ignore[misc]
        if not raw:
            return None
        return TaskRecord({_s(k): _s(v) for k, v in raw.items()})

    async def in_batch(self, batch_id: str, limit: int = 1000) -> list[TaskRecord]:
        """The batch's tasks (at most `limit`: an upload makes at most KILN_MAX_FILES_PER_UPLOAD),
        in creation order."""
        ids = await self._redis.zrange(keys.batch_tasks(batch_id), 0, limit - 1)
        async with self._redis.pipeline(transaction=False) as pipe:
            for task_id in ids:
                pipe.hgetall(keys.task(_s(task_id)))
            rows = await pipe.execute()
        return [TaskRecord({_s(k): _s(v) for k, v in row.items()}) for row in rows if row]

    async def get_owned(self, task_id: str, user_id: str) -> TaskRecord | None:
        """The task if `user_id` owns it; None for unknown ids and for other users' tasks alike."""
        record = await self.get(task_id)
        if record is None or record.owner != user_id:
            return None
        return record

    async def listing(self, owner: str, session_id: str, *, session_only: bool,
                      batch: str | None, offset: int, limit: int) -> tuple[list[TaskRecord], int]:
        """The owner's tasks, newest first, and how many the listing holds: one batch's (empty
        unless the whole batch is theirs), the session's (`session_only`: the tasks its stream
        carries), or all of the user's. Another user's record never leaves this method."""
        if batch is not None:
            index = keys.batch_tasks(batch)
        elif session_only:
            index = keys.session_stream(session_id).tasks
        else:
            index = keys.user_stream(owner).tasks
        records, total = await self._page(index, offset, limit)
        mine = [record for record in records if record.owner == owner]
        if batch is not None and len(mine) < len(records):
            return [], 0  # someone else's batch: as empty as an unknown one
        return mine, total

    async def _page(self, index_key: str, offset: int, limit: int) -> tuple[list[TaskRecord], int]:
        """Records of one index (newest first) and the index's total size."""
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.zrevrange(index_key, offset, offset + limit - 1)
            pipe.zcard(index_key)
            ids, total = await pipe.execute()
        async with self._redis.pipeline(transaction=False) as pipe:
            for tid in ids:
                pipe.hgetall(keys.task(_s(tid)))
            rows = await pipe.execute()
        records = [TaskRecord({_s(k): _s(v) for k, v in r.items()}) for r in rows if r]
        return records, int(total)

    async def snapshot(self, stream: keys.Stream, limit: int) -> tuple[int, list[TaskRecord]]:
        """Atomically: the stream's current sequence and its newest tasks."""
        seq, rows = await self._snapshot(keys=[stream.seq, stream.tasks],
                                         args=[keys.TASK_PREFIX, str(limit)])
        return int(seq), [TaskRecord(_pairs(r)) for r in rows]

    async def queued(self, session_id: str, owner: str, *, scan: int,
                     limit: int) -> list[QueuedTask]:
        """The owner's tasks in PENDING or RETRY among the session's `scan` newest, at most
        `limit`, newest first; one bounded script."""
        rows = await self._queued(
            keys=[keys.session_stream(session_id).tasks],
            args=[keys.TASK_PREFIX, str(scan), str(limit), owner,
                  *sorted(state.value for state in QUEUED_STATES)],
        )
        return [QueuedTask(_s(tid), int(_s(attempt)), _s(kind)) for tid, attempt, kind in rows]
