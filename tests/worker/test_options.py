"""The worker is defined once: arq's CLI (`WorkerSettings`) and `build_worker` take the same
options, every option is one arq knows, and the job every enqueue names is registered."""

from __future__ import annotations

import importlib
import inspect
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from arq.worker import Worker, create_worker

from records.queue import PROCESS_ASSET
from services import open_services
from settings import Settings
from worker.runner import CLEANUP, build_worker, worker_options

COMPARED = ("queue_name", "max_jobs", "job_timeout_s", "keep_result_s", "poll_delay_s",
            "job_serializer", "job_deserializer", "health_check_interval")


@pytest.fixture
def worker_settings(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """`worker_settings` imported as arq's CLI would, with this test's Redis and data dir."""
    monkeypatch.setenv("REDIS_URL", settings.redis_url or "")
    monkeypatch.setenv("KILN_DATA_DIR", str(settings.data_dir))
    monkeypatch.setenv("KILN_JWT_SECRET", str(settings.jwt_secret))
    monkeypatch.setenv("KILN_WORKERS", str(settings.worker_concurrency))
    monkeypatch.setenv("KILN_TASK_TIMEOUT", str(settings.task_timeout))
    monkeypatch.delitem(sys.modules, "worker_settings", raising=False)
    return importlib.import_module("worker_settings")


def _functions(worker: Worker) -> dict[str, tuple[Any, int | None]]:
    return {name: (function.coroutine, function.max_tries)
            for name, function in worker.functions.items()}


async def test_every_worker_settings_attribute_is_an_arq_worker_parameter(
        worker_settings: ModuleType) -> None:
    parameters = set(inspect.signature(Worker).parameters)
    chosen = {name for name in vars(worker_settings.WorkerSettings) if not name.startswith("_")}
    assert chosen - parameters == set()  # arq would silently ignore a misspelt one
    assert set(worker_options(Settings()).keys()) <= chosen


async def test_the_enqueued_job_name_is_registered_in_every_worker_build(
        worker_settings: ModuleType) -> None:
    from_cli = create_worker(worker_settings.WorkerSettings)
    assert PROCESS_ASSET in from_cli.functions
    assert set(from_cli.functions) == {PROCESS_ASSET, CLEANUP}


async def test_the_embedded_and_the_cli_worker_agree(worker_settings: ModuleType,
                                                     settings: Settings, tmp_path: Path) -> None:
    async with open_services(settings, settings.redis_url or "") as services:
        embedded = build_worker(services, pool=None, burst=True)  # type: ignore[arg-type]
        from_cli = create_worker(worker_settings.WorkerSettings, redis_pool=services.redis)
        assert _functions(embedded) == _functions(from_cli)
        for name in COMPARED:
            assert getattr(embedded, name) == getattr(from_cli, name), name
        assert from_cli.max_jobs == settings.worker_concurrency
        assert from_cli.job_timeout_s == settings.task_timeout + 60
