"""The recovery sweep: finds unfinished tasks that nothing will run any more, and queues them again.

Leases and arq's redelivery recover a run whose worker died while its job was still queued. The
sweep is the backstop for the rest: a task left STARTED or PROGRESS with neither a live lease nor
its job in the queue (the job was dropped or failed inside arq), and a task waiting in PENDING or
RETRY whose job never reached the scheduler (an enqueue lost to an outage). Every worker runs it; a
lock lets one process sweep per interval, and each change goes through the event guards, so two
sweepers (or a sweeper and a worker) can never both act on a task.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field

from redis.exceptions import RedisError

from records import keys
from records.events import TaskState
from records.ids import new_id
from services import Services

log = logging.getLogger("kiln.sweep")

BATCH = 500
"""Unfinished tasks looked at per sweep (a ZSCAN step; the cursor carries over)."""

FIND_SCRIPT = """
local active, queue, cursor_key, pending = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local prefix, count, now, grace = ARGV[1], ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
local terminal = {SUCCESS = true, FAILURE = true, REVOKED = true}
local running = {STARTED = true, PROGRESS = true}
local scan = redis.call('ZSCAN', active, redis.call('GET', cursor_key) or '0', 'COUNT', count)
redis.call('SET', cursor_key, scan[1])
local found = {}
local items = scan[2]
for i = 1, #items, 2 do
  local id = items[i]
  local key = prefix .. id
  local f = redis.call('HMGET', key, 'state', 'attempt', 'job', 'updated')
  local state, attempt, job, updated = f[1], f[2], f[3], tonumber(f[4] or '0')
  if not state or terminal[state] then
    redis.call('ZREM', active, id)
  elseif running[state] then
    local queued = job and job ~= '' and redis.call('ZSCORE', queue, job)
    if redis.call('EXISTS', key .. ':lease') == 0 and not queued then
      found[#found + 1] = {id, 'lost'}
    end
  elseif now - updated > grace then
    local job = id .. '-' .. attempt
    if not redis.call('ZSCORE', queue, job) and redis.call('HEXISTS', pending, job) == 0 then
      found[#found + 1] = {id, 'unqueued'}
    end
  end
end
return found
"""
"""One step of the sweep. KEYS: the unfinished-task index, arq's queue, the scan cursor, the
scheduler's waiting jobs (`keys.SCHED_PENDING`). ARGV:
the task key prefix, the scan COUNT, now and the grace (seconds) a waiting task has to reach the
queue. Returns {task id, 'lost' | 'unqueued'} pairs and drops finished tasks from the index. A
task's lease is `<task key>:lease` (`keys.run_lease`); a waiting task's job is `<id>-<attempt>`
(`records.queue.job_id`)."""


@dataclass
class SweepReport:
    requeued: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    enqueued: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.requeued or self.failed or self.enqueued)


class Sweeper:
    """Runs the sweep every `interval` seconds in one process among all that share the Redis."""

    def __init__(self, services: Services, *, interval: float, grace: float) -> None:
        self._services = services
        self._interval = interval
        self._grace = grace
        self._find = services.redis.register_script(FIND_SCRIPT)
        self._token = new_id()

    async def sweep(self) -> SweepReport:
        """One sweep, if no other process holds this interval's lock."""
        redis = self._services.redis
        report = SweepReport()
        lock_ms = max(1, int(self._interval * 900))  # a little under one interval
        if not await redis.set(keys.SWEEP_LOCK, self._token, px=lock_ms, nx=True):
            return report
        found = await self._find(
            keys=[keys.ACTIVE, keys.QUEUE, keys.SWEEP_CURSOR, keys.SCHED_PENDING],
            args=[keys.TASK_PREFIX, str(BATCH), repr(time.time()), repr(self._grace)],
        )
        for raw_id, raw_kind in found:
            task_id, kind = _text(raw_id), _text(raw_kind)
            record = await self._services.tasks.get(task_id)
            if record is None:
                continue
            if kind == "lost":
                state = await self._services.queue.recover_lost(record)
                if state is TaskState.RETRY:
                    report.requeued.append(task_id)
                elif state is TaskState.FAILURE:
                    report.failed.append(task_id)
            elif await self._services.queue.enqueue_again(record):
                report.enqueued.append(task_id)
        if report:
            log.warning("sweep: %d stranded task(s) requeued, %d given up, %d job(s) re-enqueued",
                        len(report.requeued), len(report.failed), len(report.enqueued))
        return report

    async def run(self) -> None:
        """Sweep now and then every interval until cancelled; Redis outages only skip a turn."""
        while True:
            try:
                await self.sweep()
            except (RedisError, OSError, TimeoutError) as exc:
                log.debug("sweep skipped: %s", type(exc).__name__)
            except Exception:
                log.exception("sweep failed; trying again next interval")
            me = asyncio.current_task()
            if me is not None and me.cancelling():  # a cancel a Redis command turned into an error
                raise asyncio.CancelledError
            await asyncio.sleep(self._interval)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
