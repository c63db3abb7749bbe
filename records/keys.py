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


def batch_tasks(batch_id: str) -> str:
    """Sorted set: the tasks of one upload request, by creation time."""
    return f"{PREFIX}:batch:{batch_id}:tasks"


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
