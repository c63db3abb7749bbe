"""Dedup by content: an upload whose files, kind, pipeline version and output-affecting settings
match a task of the same user that succeeded reuses that task's result and artifacts.

The key is a sha256 over the task's kind and format, each file's stored name and sha256 (taken
as the upload was written), and `pipeline_signature`. A worker remembers a success under its key
(`keys.dedup`, user-scoped: a match never crosses users) for KILN_TASK_TTL; a later upload with the
same key is created finished, its artifacts hard links to the first task's (stored once, and
still there if the first task is deleted).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline

from records import keys
from records.events import TaskState
from records.store import TaskRecord, TaskStore
from settings import Settings
from tasks.version import PIPELINE_VERSION


def pipeline_signature(settings: Settings) -> str:
    """Everything besides the files that decides what a pipeline makes."""
    return json.dumps({"version": PIPELINE_VERSION, "mesh": settings.mesh_pipeline,
                       "max_pixels": settings.max_pixels, "limits": settings.pipeline_limits()},
                      sort_keys=True)


def content_key(*, kind: str, format: str, files: Sequence[tuple[str, str]],
                signature: str) -> str:
    """The dedup key of a task: (stored name, sha256 hex) of its files, main file first."""
    blob = json.dumps([kind, format, list(files), signature], separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()


class Dedup:
    def __init__(self, redis: Redis, tasks: TaskStore, settings: Settings) -> None:
        self._redis = redis
        self._tasks = tasks
        self._ttl = settings.task_ttl
        self.signature = pipeline_signature(settings)
        self.signature_id = hashlib.sha256(self.signature.encode()).hexdigest()[:16]
        """Recorded on each task: a worker whose own settings differ from the web process's
        does not remember its result under the key the web process made."""

    async def find(self, user: str, digests: Sequence[str]) -> list[TaskRecord | None]:
        """For each key, the user's task that succeeded with it, if it is still there."""
        if not digests:
            return []
        ids = await self._redis.mget([keys.dedup(user, digest) for digest in digests])
        found: list[TaskRecord | None] = []
        for raw in ids:
            record = await self._tasks.get(raw.decode()) if raw else None
            if record is not None and (record.owner != user or
                                       record.state is not TaskState.SUCCESS):
                record = None
            found.append(record)
        return found

    async def remember(self, user: str, digest: str, task_id: str) -> None:
        """A task with this key succeeded: later uploads of the same content may reuse it."""
        await self._redis.set(keys.dedup(user, digest), task_id, ex=self._ttl)

    def remember_in(self, pipe: Pipeline, user: str, digest: str, task_id: str) -> None:
        """`remember`, queued on a pipeline."""
        pipe.set(keys.dedup(user, digest), task_id, ex=self._ttl)
