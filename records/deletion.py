"""Deleting finished tasks: the record, every index that names it, and its stored bytes' share of
the owner's quota go in one script, which writes the `deleted` event to the task's streams."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from enum import Enum

from redis.asyncio import Redis

from records import keys
from records.queue import TaskQueue
from records.store import TaskRecord, TaskStore
from settings import Settings

ATTEMPTS = 3
"""Cancel-then-delete rounds before giving up on a task its owner keeps retrying meanwhile."""

DELETE_SCRIPT = """
local task, tid, owner = KEYS[1], ARGV[1], ARGV[2]
local f = redis.call('HMGET', task, 'owner', 'state', 'stored')
if f[1] ~= owner then return 0 end
local terminal = {SUCCESS = true, FAILURE = true, REVOKED = true}
if not terminal[f[2]] then return -1 end
redis.call('DEL', task, KEYS[11])
for _, index in ipairs({KEYS[4], KEYS[7], KEYS[8], KEYS[12], KEYS[15]}) do
  redis.call('ZREM', index, tid)
end
redis.call('HDEL', KEYS[16], tid)
if redis.call('EXISTS', KEYS[8]) == 0 then redis.call('DEL', KEYS[13]) end
local stored = tonumber(f[3] or '0') or 0
if stored > 0 and redis.call('HINCRBY', KEYS[14], owner, -stored) < 0 then
  redis.call('HSET', KEYS[14], owner, 0)
end
local maxlen, event = ARGV[3], ARGV[4]
local sseq, useq = redis.call('INCR', KEYS[2]), redis.call('INCR', KEYS[5])
redis.call('XADD', KEYS[3], 'MAXLEN', '~', maxlen, sseq .. '-0', 'e', event)
redis.call('XADD', KEYS[6], 'MAXLEN', '~', maxlen, useq .. '-0', 'e', event)
redis.call('PUBLISH', KEYS[9], sseq .. ' ' .. event)
redis.call('PUBLISH', KEYS[10], useq .. ' ' .. event)
return 1
"""
"""Delete one finished task of `owner`. KEYS: as `events.EMIT_SCRIPT`'s (task, the session's and
the user's seq, log, tasks index, the batch's tasks, both channels, the run lease, the unfinished
index, the batch's open count), then the usage hash, the files index and its stored bytes. ARGV:
task id, owner, the log's MAXLEN, the `deleted` event. Returns 1 when deleted, 0 when there is no
such task of `owner`, -1 when it is not finished (cancel it first)."""


class Deleted(Enum):
    DONE = "done"
    GONE = "gone"
    """There was no such task (of that owner) any more."""
    BUSY = "busy"
    """Still there: its owner retried it again and again while it was being deleted."""


class TaskDeleter:
    """DELETE /api/tasks/{id} and /api/batches/{id}: cancel, then remove record and files."""

    def __init__(self, redis: Redis, settings: Settings, *, queue: TaskQueue, tasks: TaskStore,
                 remove_files: Callable[[str], None]) -> None:
        self._script = redis.register_script(DELETE_SCRIPT)
        self._maxlen = str(settings.event_log_max)
        self._queue = queue
        self._tasks = tasks
        self._remove_files = remove_files  # Storage.remove_task (storage sits above records)

    async def delete_task(self, record: TaskRecord) -> Deleted:
        """Cancel the task if it has not finished, then delete its record, indexes and files."""
        for _ in range(ATTEMPTS):
            if not record.state.terminal:
                await self._queue.cancel(record)  # refused only if it has just finished
            outcome = await self.delete(record)
            if outcome == 0:
                return Deleted.GONE
            if outcome == 1:
                await asyncio.to_thread(self._remove_files, record.id)
                return Deleted.DONE
            again = await self._tasks.get(record.id)  # retried meanwhile: cancel that too
            if again is None:
                return Deleted.GONE
            record = again
        return Deleted.BUSY

    async def delete(self, record: TaskRecord) -> int:
        """Remove a finished task's record and indexes (not its files): 1 done, 0 gone already,
        -1 not finished."""
        who = record.identity
        event = json.dumps({"type": "deleted", "task_id": who.task_id, "batch_id": who.batch,
                            "ts": round(time.time(), 3)}, separators=(",", ":"))
        session, user = keys.session_stream(who.session), keys.user_stream(who.owner)
        return int(await self._script(
            keys=[keys.task(who.task_id), session.seq, session.log, session.tasks,
                  user.seq, user.log, user.tasks, keys.batch_tasks(who.batch),
                  session.channel, user.channel, keys.run_lease(who.task_id), keys.ACTIVE,
                  keys.batch_open(who.batch), keys.USAGE, keys.FILES, keys.FILES_STORED],
            args=[who.task_id, who.owner, self._maxlen, event]))
