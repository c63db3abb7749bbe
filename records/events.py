"""The wire contract of task events: states, the event schema, and the one script that writes them.

Every state change and progress update goes through `EventWriter.emit`, which runs `EMIT_SCRIPT`:
it checks the transition against the task's snapshot (a claim also takes the run's lease), keeps
the index of unfinished tasks (`keys.ACTIVE`) that the recovery sweep reads, then
INCRs the session's and the user's
sequence, XADDs the event to both capped logs (entry id = sequence), HSETs the snapshot and
PUBLISHes `<seq> <json>` on both channels, all at once, so log, snapshot and channel never disagree.

It also counts each batch's unfinished tasks (`keys.batch_open`): the terminal event that brings
the count to zero is followed, in the same script, by one `batch` event with the batch's tasks
counted by state (Celery's chord callback); a user retry of a finished task opens the batch again.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline

from records import keys
from settings import Settings


class TaskState(StrEnum):
    PENDING = "PENDING"
    STARTED = "STARTED"
    PROGRESS = "PROGRESS"
    RETRY = "RETRY"
    SUCCESS = "SUCCESS"
    FAILURE = "FAILURE"
    REVOKED = "REVOKED"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL_STATES


TERMINAL_STATES = frozenset({TaskState.SUCCESS, TaskState.FAILURE, TaskState.REVOKED})
QUEUED_STATES = frozenset({TaskState.PENDING, TaskState.RETRY})
RUNNING_STATES = frozenset({TaskState.STARTED, TaskState.PROGRESS})


class Guard(StrEnum):
    """Which writer may make a transition; the script refuses any other (returns 0)."""

    CREATE = "create"
    """The upload route: the task must not exist yet."""
    CLAIM = "claim"
    """A worker starts a queued attempt: PENDING or RETRY with the same attempt; sets `run`."""
    RUN = "run"
    """The run that claimed the attempt: same attempt and run id, state not terminal."""
    REQUEUE = "requeue"
    """A new attempt (attempt + 1) of a finished task (user retry) or of a lost run."""
    ABANDON = "abandon"
    """A lost run of this attempt is given up (FAILURE worker_lost): same attempt, not terminal."""
    REVOKE = "revoke"
    """User cancel: any state that is not terminal."""
    REUSE = "reuse"
    """An upload whose content matches a task that succeeded (`records.dedup`): PENDING with the
    same attempt, straight to SUCCESS."""
    RELEASE = "release"
    """The claiming run hands its task back unfinished (its worker is shutting down): same run
    id, state running, attempt + 1; becomes RETRY and drops the run's lease at once."""


EMIT_SCRIPT = """
local task = KEYS[1]
local guard, state, attempt, run = ARGV[1], ARGV[2], tonumber(ARGV[3]), ARGV[4]
local cur = redis.call('HMGET', task, 'state', 'attempt', 'run')
local cur_state, cur_attempt, cur_run = cur[1], tonumber(cur[2]), cur[3]
local terminal = {SUCCESS = true, FAILURE = true, REVOKED = true}
local queued = {PENDING = true, RETRY = true}
local running = {STARTED = true, PROGRESS = true}
if guard == 'create' then
  if cur_state then return {0, cur_state} end
elseif not cur_state then
  return {0, 'MISSING'}
elseif guard == 'claim' then
  if not queued[cur_state] or attempt ~= cur_attempt then return {0, cur_state} end
  redis.call('SET', KEYS[11], run, 'PX', ARGV[#ARGV])
elseif guard == 'run' then
  if terminal[cur_state] or attempt ~= cur_attempt or run ~= cur_run then return {0, cur_state} end
elseif guard == 'requeue' then
  if queued[cur_state] or attempt ~= cur_attempt + 1 then return {0, cur_state} end
elseif guard == 'abandon' then
  if terminal[cur_state] or attempt ~= cur_attempt then return {0, cur_state} end
elseif guard == 'reuse' then
  if cur_state ~= 'PENDING' or attempt ~= cur_attempt then return {0, cur_state} end
elseif guard == 'revoke' then
  if terminal[cur_state] then return {0, cur_state} end
  attempt = cur_attempt  -- the caller's may be one behind (a retry landed meanwhile)
elseif guard == 'release' then
  if not running[cur_state] or run ~= cur_run or attempt ~= cur_attempt + 1 then
    return {0, cur_state}
  end
  redis.call('DEL', KEYS[11])
else
  return redis.error_reply('unknown guard ' .. guard)
end
local maxlen, event_ttl, task_ttl, event = ARGV[5], tonumber(ARGV[6]), tonumber(ARGV[7]), ARGV[8]
local tid, now = ARGV[9], ARGV[10]
-- TTLs are renewed by every state change; by a progress event only when a run could outlast them
local touch = ARGV[11] == '1' or state ~= 'PROGRESS'
local sseq = redis.call('INCR', KEYS[2])
local useq = redis.call('INCR', KEYS[5])
redis.call('XADD', KEYS[3], 'MAXLEN', '~', maxlen, sseq .. '-0', 'e', event)
redis.call('XADD', KEYS[6], 'MAXLEN', '~', maxlen, useq .. '-0', 'e', event)
if touch then
  for _, k in ipairs({KEYS[2], KEYS[3], KEYS[5], KEYS[6]}) do redis.call('EXPIRE', k, event_ttl) end
end
local fields = {'state', state, 'attempt', attempt, 'run', run}
for i = 12, #ARGV - 1 do fields[#fields + 1] = ARGV[i] end
redis.call('HSET', task, unpack(fields))
if touch then redis.call('EXPIRE', task, task_ttl) end
local batch_done = false
if terminal[state] then
  redis.call('ZREM', KEYS[12], tid)
  redis.call('DEL', KEYS[11])
  batch_done = redis.call('DECR', KEYS[13]) == 0
  redis.call('EXPIRE', KEYS[13], task_ttl)
elseif guard == 'create' or guard == 'requeue' or guard == 'release' then
  redis.call('ZADD', KEYS[12], now, tid)
  if guard == 'create' or terminal[cur_state] then
    redis.call('INCR', KEYS[13])
    redis.call('EXPIRE', KEYS[13], task_ttl)
  end
end
if guard == 'create' then
  local score = redis.call('HGET', task, 'created_ms')
  for _, k in ipairs({KEYS[4], KEYS[7], KEYS[8]}) do
    redis.call('ZADD', k, score, tid)
    redis.call('EXPIRE', k, task_ttl)
  end
end
redis.call('PUBLISH', KEYS[9], sseq .. ' ' .. event)
redis.call('PUBLISH', KEYS[10], useq .. ' ' .. event)
if batch_done then
  local prefix = string.sub(task, 1, #task - #tid)
  local counts, total = {}, 0
  for _, id in ipairs(redis.call('ZRANGE', KEYS[8], 0, -1)) do
    local s = redis.call('HGET', prefix .. id, 'state')
    if s then
      counts[s] = (counts[s] or 0) + 1
      total = total + 1
    end
  end
  local parts = {}
  for _, s in ipairs({'SUCCESS', 'FAILURE', 'REVOKED'}) do
    parts[#parts + 1] = '"' .. s .. '":' .. (counts[s] or 0)
  end
  local t = redis.call('TIME')
  local batch = '{"type":"batch","batch_id":' ..
    cjson.encode(string.match(KEYS[8], ':batch:([^:]+):tasks$')) .. ',"counts":{' ..
    table.concat(parts, ',') .. '},"total":' .. total .. ',"ts":' .. t[1] .. '.' ..
    string.format('%03d', math.floor(tonumber(t[2]) / 1000)) .. '}'
  local bs, bu = redis.call('INCR', KEYS[2]), redis.call('INCR', KEYS[5])
  redis.call('XADD', KEYS[3], 'MAXLEN', '~', maxlen, bs .. '-0', 'e', batch)
  redis.call('XADD', KEYS[6], 'MAXLEN', '~', maxlen, bu .. '-0', 'e', batch)
  redis.call('PUBLISH', KEYS[9], bs .. ' ' .. batch)
  redis.call('PUBLISH', KEYS[10], bu .. ' ' .. batch)
end
return {1, sseq, useq}
"""


EVENT_TYPES = ("task", "batch", "deleted")
"""The `type` every logged event starts with (its SSE event name): a task's state or progress, a
batch whose tasks have all finished, a task deleted."""


def event_name(data: str) -> str:
    """The SSE event name of a logged event: its `type`, which every writer puts first."""
    if data.startswith('{"type":"task"'):
        return "task"
    name = data[9:data.find('"', 9)] if data.startswith('{"type":"') else ""
    return name if name in EVENT_TYPES else "task"


@dataclass(frozen=True)
class TaskIdentity:
    """What every event of a task carries besides its state: who owns it and what it is."""

    task_id: str
    owner: str
    session: str
    batch: str
    kind: str
    filename: str
    priority: str = "default"


@dataclass(frozen=True)
class Emitted:
    session_seq: int
    user_seq: int


def encode_event(
    who: TaskIdentity,
    state: TaskState,
    *,
    stage: str,
    progress: float,
    attempt: int,
    ts: float,
    extra: dict[str, Any] | None = None,
) -> str:
    """The `data:` JSON of one task event (the SSE `id:` is the sequence, outside it)."""
    event: dict[str, Any] = {
        "type": "task",
        "task_id": who.task_id,
        "batch_id": who.batch,
        "kind": who.kind,
        "filename": who.filename,
        "priority": who.priority,
        "state": state.value,
        "stage": stage,
        "progress": round(progress, 4),
        "attempt": attempt,
        "ts": round(ts, 3),
    }
    if extra:
        event.update(extra)
    return json.dumps(event, separators=(",", ":"))


class EventWriter:
    """Writes task events; the only code that changes a task's state."""

    def __init__(self, redis: Redis, settings: Settings) -> None:
        self._redis = redis
        self._script = redis.register_script(EMIT_SCRIPT)
        self._maxlen = str(settings.event_log_max)
        self._event_ttl = str(settings.event_ttl)
        self._task_ttl = str(settings.task_ttl)
        self._lease_ms = str(int(settings.job_lease * 1000))
        # a progress event renews no TTL (five commands saved) unless a run could outlast one: a
        # run lasts at most arq's job timeout (the task's + 60 s) after waiting a minute at most
        # for a child to warm up
        longest_run = 2 * settings.task_timeout + 240
        self._progress_touches = "1" if min(settings.event_ttl, settings.task_ttl) < longest_run \
            else "0"

    async def emit(
        self,
        who: TaskIdentity,
        guard: Guard,
        state: TaskState,
        *,
        attempt: int,
        run: str = "",
        stage: str = "",
        progress: float = 0.0,
        extra: dict[str, Any] | None = None,
        fields: dict[str, str] | None = None,
    ) -> Emitted | None:
        """Apply one transition; None when the guard refuses it (stale run, already terminal...)."""
        script_keys, args = self.prepare(who, guard, state, attempt=attempt, run=run, stage=stage,
                                         progress=progress, extra=extra, fields=fields)
        return self.outcome(await self._script(keys=script_keys, args=args))

    def prepare(
        self,
        who: TaskIdentity,
        guard: Guard,
        state: TaskState,
        *,
        attempt: int,
        run: str = "",
        stage: str = "",
        progress: float = 0.0,
        extra: dict[str, Any] | None = None,
        fields: dict[str, str] | None = None,
    ) -> tuple[list[str], list[str]]:
        """The script's keys and arguments for one transition (see `emit`), to run in a batch
        with `emit_in`."""
        now = time.time()
        event = encode_event(
            who, state, stage=stage, progress=progress, attempt=attempt, ts=now, extra=extra
        )
        record = {"stage": stage, "progress": repr(round(progress, 4)), "updated": repr(now)}
        if fields:
            record.update(fields)
        session, user = keys.session_stream(who.session), keys.user_stream(who.owner)
        args: list[str] = [guard.value, state.value, str(attempt), run, self._maxlen,
                           self._event_ttl, self._task_ttl, event, who.task_id, str(int(now)),
                           self._progress_touches]
        for name, value in record.items():
            args += [name, value]
        args.append(self._lease_ms)  # last: the run lease a claim takes
        return [keys.task(who.task_id),
                session.seq, session.log, session.tasks,
                user.seq, user.log, user.tasks,
                keys.batch_tasks(who.batch),
                session.channel, user.channel, keys.run_lease(who.task_id), keys.ACTIVE,
                keys.batch_open(who.batch)], args

    async def emit_in(self, pipe: Pipeline, prepared: tuple[list[str], list[str]]) -> None:
        """Queue a prepared transition on a pipeline (nothing is sent yet); its reply, from the
        pipeline's execute, goes through `outcome`."""
        script_keys, args = prepared
        await self._script(keys=script_keys, args=args, client=pipe)

    @staticmethod
    def outcome(result: Any) -> Emitted | None:
        """The script's reply as an Emitted, or None when the guard refused the transition."""
        if int(result[0]) != 1:
            return None
        return Emitted(session_seq=int(result[1]), user_seq=int(result[2]))
