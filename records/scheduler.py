"""Which waiting job starts next: priorities with aging, a weighted fair share between users, and
an optional cap on each user's running jobs, decided atomically in Redis.

A task's job does not go straight into arq's queue. It waits in its owner's queue
(`keys.waiting`), scored by its *effective time*: when it became ready, less `aging` seconds per
priority level (low 0, default 1, high 2). Its level at any instant is `floor((now - e) / aging)`
clamped to 0..2: a low job that has waited `aging` seconds stands with default jobs just queued,
and so on up, so nothing starves. With aging off, `aging` is effectively infinite and a job keeps
its level.

A worker with free slots runs `ADMIT_SCRIPT`, which picks, one slot at a time: the users whose
most urgent job has the highest level; among them the one with the smallest *pass* (stride
scheduling: each job started adds STRIDE/weight to its user's pass), so slots go round-robin,
weighted, and equal passes go to the smaller user id (the backlog's own order, so a pick reads
one user, not all of them). A user back from idle (nothing waiting, nothing running) comes in
just below the smallest pass of the users waiting, so their first job is next (just behind it
when that user has had no slot yet: first come, first served), but never below their own pass:
whoever just had more than their share keeps that debt.
A user with jobs running keeps their pass when their queue refills. Users at
`KILN_USER_MAX_RUNNING` are skipped. The job picked moves into arq's queue, due now, and the
worker starts it at once; the user's running set holds it until the run ends or its lease lapses.

Positions (`standing`) project the same rules forward from the current passes and queues. They
leave out what the rules cannot know ahead: jobs queued later, aging that will happen while the
job waits, and `KILN_USER_MAX_RUNNING` (a capped user's jobs are counted as if their turn came).
A user whose low jobs have aged up comes in with the pass they had when last served, so they may
take several slots in a row until their pass catches up with the others': they had waited.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from enum import IntEnum

from arq.constants import in_progress_key_prefix
from redis.asyncio import Redis
from redis.asyncio.client import Pipeline

from records import keys
from records.scheduler_scripts import (
    ADMIT_SCRIPT,
    DURATION_SCRIPT,
    SCHEDULE_SCRIPT,
    STANDING_SCRIPT,
    UNSCHEDULE_SCRIPT,
)

NO_AGING_S = 1e10
"""The aging used when KILN_PRIORITY_AGING is 0: longer than any wait, so levels never change."""

USERS_SCAN = 500
"""Users with waiting work looked at per pick and per position (those waiting longest first);
beyond this many at once, the share is fair among these and positions leave the rest out."""

DELAYED_BATCH = 100
"""Jobs whose retry delay has run out moved back to their queues per admission."""

LEVEL_SLACK = 0.02
"""A job moves up a level this fraction of the aging time early: a job just queued at default
stands exactly one aging from low, and clocks a few milliseconds apart must not drop it there."""

STRIDE = 1_000_000
"""What a job started adds to its user's pass at weight 1 (STRIDE / weight at other weights,
rounded: passes stay integers, so equal shares compare exactly)."""

DURATION_WEIGHT = 0.2
"""How much each finished run moves the moving average of run times."""


class Priority(IntEnum):
    LOW = 0
    DEFAULT = 1
    HIGH = 2

    @property
    def label(self) -> str:
        return self.name.lower()

    @classmethod
    def parse(cls, value: str | None) -> Priority:
        """A priority by its name; DEFAULT for an empty or unknown one (checked where it enters)."""
        try:
            return cls[(value or "default").upper()]
        except KeyError:
            return cls.DEFAULT


PRIORITY_NAMES = tuple(p.label for p in Priority)


@dataclass(frozen=True)
class Admission:
    jobs: list[str]
    slots: int
    """Every live worker's slots added up."""


@dataclass(frozen=True)
class Standing:
    """Where a user's jobs stand: `positions` (1 = next to start; jobs not waiting are absent),
    `eta_s` (seconds until each is expected to finish, when run times are known), and `queued`
    (every user's waiting jobs)."""

    positions: dict[str, int]
    eta_s: dict[str, float]
    queued: int


@dataclass(frozen=True)
class _Other:
    """Another user's standing: id (which breaks ties between equal passes), pass, stride,
    waiting jobs by level."""

    user: str
    passes: int
    stride: int
    high: int
    default_or_higher: int
    total: int


class Scheduler:
    """The scheduler's Redis side, shared by the web process (queueing, positions) and workers
    (admission, leases, run times)."""

    def __init__(self, redis: Redis, *, aging: float, user_max_running: int) -> None:
        self._redis = redis
        self._aging_ms = int((aging if aging > 0 else NO_AGING_S) * 1000)
        self._cap = user_max_running
        self._schedule = redis.register_script(SCHEDULE_SCRIPT)
        self._admit = redis.register_script(ADMIT_SCRIPT)
        self._unschedule = redis.register_script(UNSCHEDULE_SCRIPT)
        self._standing = redis.register_script(STANDING_SCRIPT)
        self._duration = redis.register_script(DURATION_SCRIPT)

    async def schedule_in(self, pipe: Pipeline,
                          jobs: Sequence[tuple[str, str, Priority, int]]) -> None:
        """Queue (job id, user id, priority, due ms) entries on a pipeline: each waits in its
        user's queue, or in the delayed set until it is due."""
        args = [keys.USER_QUEUE_PREFIX, str(self._aging_ms), str(_now_ms()), keys.TASK_PREFIX]
        for job, user, priority, due in jobs:
            args += [job, user, str(int(priority)), str(due)]
        await self._schedule(keys=[keys.SCHED_USERS, keys.SCHED_PASSES, keys.SCHED_VTIME,
                                   keys.SCHED_PENDING, keys.SCHED_SINCE, keys.SCHED_BACKLOG,
                                   keys.SCHED_JOINED, keys.SCHED_DELAYED],
                             args=args, client=pipe)

    async def admit(self, count: int, *, worker: str = "", slots: int = 0,
                    heartbeat_s: float = 0.0, lease_s: float = 10.0,
                    now_ms: int | None = None) -> Admission:
        """Move up to `count` jobs into arq's queue, in the order the policy gives; `worker` and
        `slots` renew this worker's heartbeat (it lasts `heartbeat_s`)."""
        jobs, total = await self._admit(
            keys=[keys.SCHED_USERS, keys.SCHED_PASSES, keys.SCHED_VTIME, keys.SCHED_PENDING,
                  keys.SCHED_SINCE, keys.SCHED_BACKLOG, keys.SCHED_JOINED, keys.SCHED_DELAYED,
                  keys.QUEUE, keys.SCHED_WORKERS,
                  keys.SCHED_CAPACITY],
            args=[keys.USER_QUEUE_PREFIX, str(self._aging_ms),
                  str(_now_ms() if now_ms is None else now_ms), str(max(0, count)),
                  str(self._cap), str(USERS_SCAN), str(int(lease_s * 1000)), worker, str(slots),
                  str(int(heartbeat_s * 1000)), keys.user(""), str(DELAYED_BATCH),
                  repr(LEVEL_SLACK), str(STRIDE), keys.TASK_PREFIX])
        return Admission([_text(j) for j in jobs], int(total))

    async def unschedule(self, job: str, user: str) -> bool:
        """Take a job that was not admitted yet out (a cancel); True when it was waiting."""
        removed = await self._unschedule(
            keys=[keys.SCHED_USERS, keys.SCHED_PENDING, keys.SCHED_DELAYED, keys.waiting(user),
                  keys.SCHED_BACKLOG],
            args=[job, user])
        return bool(removed)

    async def is_scheduled(self, job: str) -> bool:
        return bool(await self._redis.hexists(keys.SCHED_PENDING, job))  # type: ignore[misc]

    async def waiting(self) -> int:
        """Jobs waiting or delayed, over every user."""
        return int(await self._redis.hlen(keys.SCHED_PENDING))  # type: ignore[misc]

    async def keep_running(self, user: str, job: str, lease_s: float, *,
                           renew_only: bool = True) -> None:
        """Renew an admitted job's place in its user's running set (its run is alive); with
        `renew_only` False, put it back if it had lapsed (a run that has just claimed its task)."""
        await self._redis.zadd(keys.running(user), {job: _now_ms() + int(lease_s * 1000)},
                               xx=renew_only)

    async def finished(self, user: str, job: str) -> None:
        """A run of an admitted job ended: its slot counts for its user no more."""
        await self._redis.zrem(keys.running(user), job)

    @staticmethod
    def finished_in(pipe: Pipeline, user: str, job: str) -> None:
        """`finished`, queued on a pipeline."""
        pipe.zrem(keys.running(user), job)

    async def record_duration(self, kind: str, seconds: float,
                              pipe: Pipeline | None = None) -> None:
        """A run of `kind` took `seconds` (queued on `pipe` when one is given)."""
        await self._duration(keys=[keys.DURATIONS],
                             args=[kind, repr(round(seconds, 3)), repr(DURATION_WEIGHT)],
                             client=pipe)

    async def standing(self, user: str, jobs: Sequence[tuple[str, str]]) -> Standing:
        """Positions and estimates of `user`'s (job id, kind) pairs; callers bound how many."""
        now = _now_ms()
        aging = self._aging_ms
        (others_raw, mine, own_pass, own_weight, queued, slots, durations,
         own_since) = await self._standing(
            keys=[keys.SCHED_USERS, keys.SCHED_PASSES, keys.SCHED_VTIME, keys.SCHED_PENDING,
                  keys.SCHED_DELAYED, keys.QUEUE, keys.SCHED_CAPACITY, keys.DURATIONS,
                  keys.SCHED_SINCE],
            args=[keys.USER_QUEUE_PREFIX, str(USERS_SCAN),
                  repr(now - (2 - LEVEL_SLACK) * aging), repr(now - (1 - LEVEL_SLACK) * aging),
                  user, in_progress_key_prefix, keys.user(""),
                  *(job for job, _ in jobs)])
        others = [_Other(_text(o[0]), int(o[2]), _stride(o[3]), int(o[4]), int(o[5]), int(o[6]))
                  for o in others_raw]
        del own_since  # ties go by user id (the order of the backlog's equal scores)
        times = _pairs(durations)
        positions: dict[str, int] = {}
        eta: dict[str, float] = {}
        for (job, kind), (score, rank, admitted, _delayed) in zip(jobs, mine, strict=True):
            if int(admitted):
                position = 1
            elif _text(score):
                level = _level(now, float(_text(score)), aging)
                at = int(own_pass) + int(rank) * _stride(own_weight)
                position = 1 + int(rank) + sum(_ahead(other, level, at, user) for other in others)
            else:
                continue
            positions[job] = position
            estimate = _estimate(position, int(slots), times, kind)
            if estimate is not None:
                eta[job] = estimate
        return Standing(positions, eta, max(0, int(queued)))


def _level(now: int, effective: float, aging: int) -> int:
    return max(0, min(2, math.floor((now - effective) / aging + LEVEL_SLACK)))


def _ahead(other: _Other, level: int, at: int, user: str) -> int:
    """How many of another user's jobs start before one of ours at `level` whose user reaches
    pass `at` when it is picked: all of theirs at a higher level, and of those at its level, the
    ones whose pass comes first (an equal pass goes to the smaller user id)."""
    higher = (other.default_or_higher, other.high, 0)[level]
    level_or_higher = (other.total, other.default_or_higher, other.high)[level]
    picks = 0
    if at >= other.passes:
        turns, rest = divmod(at - other.passes, other.stride)
        picks = turns + (1 if rest or other.user < user else 0)
    return max(higher, min(level_or_higher, picks))


def _estimate(position: int, slots: int, times: dict[str, float], kind: str) -> float | None:
    """Seconds until a job at `position` finishes: the jobs ahead share the slots at the recent
    run time over every kind, then its own kind's."""
    every, own = times.get("*"), times.get(kind, times.get("*"))
    if every is None or own is None or slots < 1:
        return None
    return round((position - 1) / slots * every + own, 1)


def _pairs(flat: list[bytes]) -> dict[str, float]:
    return {_text(flat[i]): float(_text(flat[i + 1])) for i in range(0, len(flat) - 1, 2)}


def _stride(raw_weight: bytes | str) -> int:
    """What a job adds to the pass of a user of this weight (as `ADMIT_SCRIPT` counts it)."""
    try:
        weight = float(_text(raw_weight))
    except ValueError:
        weight = 1.0
    if not (weight > 0 and math.isfinite(weight)):
        weight = 1.0
    return max(1, math.floor(STRIDE / weight + 0.5))


def _now_ms() -> int:
    return int(time.time() * 1000)


def _text(value: bytes | str | int) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
