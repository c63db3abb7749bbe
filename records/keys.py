"""Every Redis key and channel name Kiln uses, built in this one module.

Session-scoped names share the hash tag `{s:<sid>}` and user-scoped names `{u:<uid>}`, so a
session's channel, log and counter would live on one slot of a Redis Cluster. Ids are made by the
server and checked against `ids.ID_PATTERN` where they enter (tokens, routes); names are only ever
used with exact commands (SUBSCRIBE, never PSUBSCRIBE), so even a forced odd id cannot match
another.
"""

from __future__ import annotations

PREFIX = "kiln"

QUEUE = f"{PREFIX}:queue"
"""The arq queue (a sorted set of job ids)."""

CONTROL_CHANNEL = f"{PREFIX}:control"
"""Worker control: `{"op": "wake"}` after an enqueue, `{"op": "cancel", "task_id": ...}`."""

ACTIVE = f"{PREFIX}:active"
"""Sorted set: every task that is not finished (by when it last became queued), which the
recovery sweep reads; `events.EMIT_SCRIPT` keeps it."""

SWEEP_LOCK = f"{PREFIX}:sweep:lock"
"""String with a TTL: the process sweeping for stranded tasks this interval."""

SWEEP_CURSOR = f"{PREFIX}:sweep:cursor"
"""String: where the last sweep's ZSCAN of `ACTIVE` stopped."""

SCHED = f"{PREFIX}:sched"
SCHED_USERS = f"{SCHED}:users"
"""Sorted set: every user with waiting jobs, scored by their most urgent job's effective time
(`records.scheduler`)."""
SCHED_PASSES = f"{SCHED}:passes"
"""Hash: user id -> the user's pass in the fair share (grows by 1/weight per job started)."""
SCHED_SINCE = f"{SCHED}:since"
"""Hash: user id -> when their queue last filled from empty (ms); breaks ties between passes."""
SCHED_BACKLOG = f"{SCHED}:backlog"
"""Sorted set: every user with waiting jobs, by their pass; the smallest is where a user back
from idle comes in."""
SCHED_JOINED = f"{SCHED}:joined"
"""Hash: user id -> their pass when they last came back from idle (unchanged: no slot since)."""
SCHED_VTIME = f"{SCHED}:vtime"
"""String: the pass of the job started last, where a user whose queue was empty comes in."""
SCHED_PENDING = f"{SCHED}:pending"
"""Hash: job id -> "<user id> <level>" for every job waiting or delayed (not yet admitted)."""
SCHED_DELAYED = f"{SCHED}:delayed"
"""Sorted set: jobs waiting out a retry's backoff, by when they are due (ms)."""
SCHED_WORKERS = f"{SCHED}:workers"
"""Sorted set: live workers by when their heartbeat lapses (ms)."""
SCHED_CAPACITY = f"{SCHED}:capacity"
"""Hash: worker id -> its slots (`max_jobs`); their sum is the service's slot count."""
DURATIONS = f"{SCHED}:durations"
"""Hash: task kind (and `*` for every kind) -> recent run time in seconds (a moving average)."""

FILES = f"{PREFIX}:files"
"""Sorted set: every task with files on disk, by when its record was last seen alive (ms); the
cleanup (`worker.cleanup`) deletes the files of those whose record has expired."""
FILES_STORED = f"{PREFIX}:files:stored"
"""Hash: task id -> "<owner> <bytes>", its share of the owner's quota, given back with its files."""
CLEANUP_LOCK = f"{PREFIX}:cleanup:lock"
"""String with a TTL: the process running the cleanup now."""
CLEANUP_CURSOR = f"{PREFIX}:cleanup:cursor"
"""String: the last task directory the orphan scan looked at."""

USERNAMES = f"{PREFIX}:usernames"
"""Hash: user name -> user id (names come from people; they never go into a key name)."""

TASK_PREFIX = f"{PREFIX}:task:"


def task(task_id: str) -> str:
    """Hash: the task's snapshot (state, stage, progress, owner, result...)."""
    return f"{TASK_PREFIX}{task_id}"


def run_lease(task_id: str) -> str:
    """String with a TTL: the run id of the live run of a task, kept alive by its worker."""
    return f"{TASK_PREFIX}{task_id}:lease"


def user(user_id: str) -> str:
    """Hash: a user's name, password hash and role."""
    return f"{PREFIX}:user:{user_id}"


def revoked_token(token_id: str) -> str:
    """String with a TTL: a logged-out token id (jti), kept until the token would expire."""
    return f"{PREFIX}:revoked:{token_id}"


def ended_session(session_id: str) -> str:
    """String with a TTL: a session that was signed out or whose refresh secret was reused; every
    access token of it is refused until the longest-lived one would have expired."""
    return f"{PREFIX}:ended:{session_id}"


LOGIN_FAILURES = f"{PREFIX}:login"
UPLOAD_LIMITS = f"{PREFIX}:upload-limits"
USAGE = f"{PREFIX}:usage"  # hash: user id -> bytes their uploads keep on disk
"""Key prefix of the sign-in throttle (the `limits` library's moving windows): failed sign-ins
per user name and per client address, each identified by a keyed hash, never the name itself."""


def refresh_session(session_id: str) -> str:
    """Hash with a TTL: a session's refresh credential (user, sha256 of the current and previous
    secret, when it was last rotated), kept `KILN_SESSION_TTL` from its last use."""
    return f"{PREFIX}:refresh:{session_id}"


USER_QUEUE_PREFIX = f"{PREFIX}:{{u:"
"""User-scoped key names start with this and go on `<user id>}:<name>` (see `Stream`)."""


def waiting(user_id: str) -> str:
    """Sorted set: the user's waiting jobs by effective time (`records.scheduler`)."""
    return f"{USER_QUEUE_PREFIX}{user_id}}}:waiting"


def running(user_id: str) -> str:
    """Sorted set: the user's admitted jobs by when their lease lapses (ms)."""
    return f"{USER_QUEUE_PREFIX}{user_id}}}:running"


def dedup(user_id: str, digest: str) -> str:
    """String with a TTL: the user's task that succeeded on content with this key
    (`records.dedup`)."""
    return f"{USER_QUEUE_PREFIX}{user_id}}}:dedup:{digest}"


def batch_tasks(batch_id: str) -> str:
    """Sorted set: the tasks of one upload request, by creation time."""
    return f"{PREFIX}:batch:{batch_id}:tasks"


def batch_open(batch_id: str) -> str:
    """Counter: the batch's tasks not finished yet (`events.EMIT_SCRIPT` keeps it)."""
    return f"{PREFIX}:batch:{batch_id}:open"


class Stream:
    """The names of one event stream: a session's (`s`) or a user's (`u`), which share one shape."""

    __slots__ = ("channel", "log", "seq", "tasks")

    def __init__(self, scope: str, owner_id: str) -> None:
        base = f"{PREFIX}:{{{scope}:{owner_id}}}"
        self.channel = base
        """Pub/sub channel of live events; messages are `<seq> <json>`."""
        self.log = f"{base}:log"
        """Capped stream of the same events; entry id `<seq>-0`, field `e` = json."""
        self.seq = f"{base}:seq"
        """Counter: the last sequence number given out."""
        self.tasks = f"{base}:tasks"
        """Sorted set of task ids by creation time (newest first with ZREVRANGE)."""


def session_stream(session_id: str) -> Stream:
    return Stream("s", session_id)


def user_stream(user_id: str) -> Stream:
    return Stream("u", user_id)
