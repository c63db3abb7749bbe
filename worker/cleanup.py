"""The cleanup: files on disk that nothing points to any more are deleted, a bounded amount a run.

Three kinds, each at most KILN_CLEANUP_BATCH a run:
  - expired tasks: a task's record lapses KILN_TASK_TTL after its last change; `keys.FILES` holds
    every task with files, and those whose record is gone lose their directory and give their
    bytes back to their owner's quota;
  - upload parts a crash left in `incoming/` (older than KILN_CLEANUP_AGE, an hour);
  - orphans: task directories with neither a record nor a `keys.FILES` entry (a crash between
    writing an upload's files and queueing its tasks, or a cleanup killed mid-way), older than
    KILN_CLEANUP_AGE; a cursor walks them across runs.

It runs as an arq cron job on every worker; a lock lets one process clean at a time (arq's unique
cron job id already gives each tick to one worker).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import time
from dataclasses import dataclass, field
from typing import Any, cast

from redis.exceptions import RedisError

from records import keys
from records.ids import is_valid_id, new_id
from services import Services

log = logging.getLogger("kiln.cleanup")

EXPIRED_SCRIPT = """
local files, stored, usage = KEYS[1], KEYS[2], KEYS[3]
local prefix, now, ttl, batch = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4]
local gone = {}
for _, id in ipairs(redis.call('ZRANGEBYSCORE', files, '-inf', now - ttl, 'LIMIT', 0, batch)) do
  if redis.call('EXISTS', prefix .. id) == 1 then
    redis.call('ZADD', files, now, id)
  else
    local meta = redis.call('HGET', stored, id)
    if meta then
      local owner, bytes = string.match(meta, '^(%S+) (%d+)$')
      bytes = tonumber(bytes or '0')
      if bytes > 0 and redis.call('HINCRBY', usage, owner, -bytes) < 0 then
        redis.call('HSET', usage, owner, 0)
      end
      redis.call('HDEL', stored, id)
    end
    redis.call('ZREM', files, id)
    gone[#gone + 1] = id
  end
end
return gone
"""
"""Tasks whose files outlived their record. KEYS: `keys.FILES`, `keys.FILES_STORED`, the usage
hash. ARGV: the task key prefix, now (ms), KILN_TASK_TTL (ms), the batch. A task whose record
is still there is looked at again a TTL later; the others leave the index, their bytes leave
their owner's usage, and their ids are returned for their directories to be deleted."""


@dataclass
class CleanupReport:
    expired: list[str] = field(default_factory=list)
    orphans: list[str] = field(default_factory=list)
    parts: int = 0

    def __bool__(self) -> bool:
        return bool(self.expired or self.orphans or self.parts)


class Cleaner:
    def __init__(self, services: Services) -> None:
        self._services = services
        settings = services.settings
        self._batch = settings.cleanup_batch
        self._age = settings.cleanup_age
        self._ttl_ms = settings.task_ttl * 1000
        self._expired = services.redis.register_script(EXPIRED_SCRIPT)
        self._token = new_id()

    async def run(self) -> CleanupReport | None:
        """One cleanup; None when another process holds the lock."""
        redis = self._services.redis
        if not await redis.set(keys.CLEANUP_LOCK, self._token, px=600_000, nx=True):
            return None
        try:
            report = CleanupReport()
            now_ms = int(time.time() * 1000)
            gone = await self._expired(
                keys=[keys.FILES, keys.FILES_STORED, keys.USAGE],
                args=[keys.TASK_PREFIX, str(now_ms), str(self._ttl_ms), str(self._batch)])
            report.expired = [_text(task_id) for task_id in gone]
            storage = self._services.storage
            for task_id in report.expired:
                await asyncio.to_thread(storage.remove_task, task_id)
            report.parts = await asyncio.to_thread(storage.sweep_incoming, self._age,
                                                   self._batch)
            report.orphans = await self._orphans()
        finally:
            with contextlib.suppress(RedisError, OSError):
                if await redis.get(keys.CLEANUP_LOCK) == self._token.encode():
                    await redis.delete(keys.CLEANUP_LOCK)
        if report:
            log.info("cleanup: removed the files of %d expired task(s), %d orphan task "
                     "director%s, %d upload part(s)", len(report.expired), len(report.orphans),
                     "y" if len(report.orphans) == 1 else "ies", report.parts)
        return report

    async def _orphans(self) -> list[str]:
        """The next KILN_CLEANUP_BATCH task directories after the cursor; those with no record
        and no files entry, older than KILN_CLEANUP_AGE, are deleted."""
        redis, storage = self._services.redis, self._services.storage
        cursor = _text(await redis.get(keys.CLEANUP_CURSOR) or b"")
        names = await asyncio.to_thread(_names_after, storage.tasks, cursor, self._batch)
        await redis.set(keys.CLEANUP_CURSOR, names[-1] if len(names) == self._batch else "")
        if not names:
            return []
        async with redis.pipeline(transaction=False) as pipe:
            for name in names:
                pipe.exists(keys.task(name))
                pipe.zscore(keys.FILES, name)
            known = await pipe.execute()
        cutoff = time.time() - self._age
        orphans = []
        for index, name in enumerate(names):
            if known[2 * index] or known[2 * index + 1] is not None:
                continue
            path = storage.task_dir(name)
            with contextlib.suppress(FileNotFoundError):
                if path.stat().st_mtime < cutoff:
                    await asyncio.to_thread(shutil.rmtree, path, True)
                    orphans.append(name)
        return orphans


def _names_after(directory: os.PathLike[str], cursor: str, limit: int) -> list[str]:
    """The first `limit` task directory names after `cursor`, in order."""
    try:
        names = sorted(name for name in os.listdir(directory) if is_valid_id(name))
    except FileNotFoundError:
        return []
    return [name for name in names if name > cursor][:limit]


async def cleanup(ctx: dict[str, Any]) -> None:
    """The arq cron job (`worker.runner.worker_options`)."""
    services = cast(Services, ctx["kiln"].services)
    await Cleaner(services).run()


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
