"""The cleanup cron job: expired tasks' files (and their quota share), upload parts a crash left,
orphan task directories; bounded per run, one process at a time, and logged."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import pytest

from records import keys
from services import Services
from tests.helpers.submit import submit_stub
from worker.cleanup import Cleaner
from worker.runner import CLEANUP, worker_options

HOUR_AGO = time.time() - 2 * 3600


def _age(path: Path) -> None:
    os.utime(path, (HOUR_AGO, HOUR_AGO))


async def _expire(services: Services, task_id: str) -> None:
    """As if the task's record had lapsed KILN_TASK_TTL ago."""
    await services.redis.delete(keys.task(task_id))
    await services.redis.zadd(keys.FILES, {task_id: 1})


async def test_expired_tasks_lose_their_files_and_give_back_their_quota(
        services: Services, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    gone, kept = [await submit_stub(services, tmp_path) for _ in range(2)]
    await services.redis.hset(keys.USAGE, "u1", "100")  # type: ignore[misc]
    await services.redis.hset(keys.FILES_STORED, gone, "u1 8")  # type: ignore[misc]
    await _expire(services, gone)
    await services.redis.zadd(keys.FILES, {kept: 1})  # old, but its record is alive
    with caplog.at_level(logging.INFO, logger="kiln.cleanup"):
        report = await Cleaner(services).run()
    assert report is not None and report.expired == [gone]
    assert not services.storage.task_dir(gone).exists()
    assert services.storage.task_dir(kept).exists()
    assert int(await services.redis.hget(keys.USAGE, "u1")) == 92  # type: ignore[misc]
    assert await services.redis.zscore(keys.FILES, gone) is None
    assert await services.redis.zscore(keys.FILES, kept) > time.time() * 1000 - 60_000
    assert "removed the files of 1 expired task(s)" in caplog.text


async def test_old_upload_parts_and_orphan_directories_go(services: Services) -> None:
    storage = services.storage
    old_part, new_part = storage.new_incoming(), storage.new_incoming()
    for part in (old_part, new_part):
        part.write_bytes(b"half an upload")
    _age(old_part)
    orphan = storage.task_dir("orphanorphanorphan01")
    fresh = storage.task_dir("freshfreshfresh00001")
    for directory in (orphan, fresh):
        (directory / "files").mkdir(parents=True)
    _age(orphan)
    report = await Cleaner(services).run()
    assert report is not None
    assert report.parts == 1 and not old_part.exists() and new_part.exists()
    assert report.orphans == ["orphanorphanorphan01"]
    assert not orphan.exists() and fresh.exists()  # a crash's leftovers get an hour first


async def test_each_run_is_bounded_and_one_process_runs_at_a_time(
        services: Services, tmp_path: Path) -> None:
    ids = [await submit_stub(services, tmp_path) for _ in range(5)]
    for task_id in ids:
        await _expire(services, task_id)
    bounded = Services(**{**vars(services), "settings": services.settings.with_(cleanup_batch=2)})
    await services.redis.set(keys.CLEANUP_LOCK, "another process", px=60_000)
    assert await Cleaner(bounded).run() is None  # someone else is cleaning
    await services.redis.delete(keys.CLEANUP_LOCK)
    removed = []
    for expected in (2, 2, 1, 0):
        report = await Cleaner(bounded).run()
        assert report is not None and len(report.expired) == expected
        removed += report.expired
    assert sorted(removed) == sorted(ids)


def test_every_worker_runs_the_cleanup_as_a_unique_cron_job(services: Services) -> None:
    (job,) = worker_options(services.settings)["cron_jobs"]
    assert job.name == CLEANUP and job.unique and job.minute == set(range(0, 60, 10))
    assert worker_options(services.settings.with_(cleanup_every=0))["cron_jobs"] == []
