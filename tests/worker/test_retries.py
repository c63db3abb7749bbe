"""Automatic retries: a transient fault (a child killed by the system, a lost worker) comes back
after an exponential backoff with jitter, up to KILN_MAX_ATTEMPTS; the file's own failures are
final at once."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from records import keys
from records.queue import new_task_identity
from services import Services
from settings import Settings
from tests.helpers.submit import drain

KILLED_UNTIL = {"mesh": "tests.helpers.pipelines:killed_until"}
FAILS = {"mesh": "tests.helpers.pipelines:share_then_fail"}


async def _submit(services: Services, tmp_path: Path, content: str) -> str:
    who = new_task_identity(owner="u1", session="s1", batch="b1", kind="mesh", filename="a.obj")
    source = tmp_path / "a.obj"
    source.write_text(content)
    services.storage.adopt(who.task_id, [(source.name, source)])
    assert await services.queue.submit(who, format="obj", size=len(content), files=["a.obj"])
    return who.task_id


async def _events(services: Services) -> list[dict[str, object]]:
    entries = await services.redis.xrange(keys.session_stream("s1").log)
    logged = [json.loads(fields[b"e"]) for _, fields in entries]
    return [event for event in logged if event["type"] == "task"]


def _quick(settings: Settings, **changes: object) -> Settings:
    return settings.with_(retry_base=0.2, retry_max=0.4, poll_delay=0.05, **changes)


async def test_a_child_killed_by_the_system_is_retried_after_a_backoff(
        services: Services, settings: Settings, tmp_path: Path) -> None:
    task_id = await _submit(services, tmp_path, "2\n")  # killed twice, then a success
    await drain(_quick(settings, max_attempts=3), KILLED_UNTIL)
    events = await _events(services)
    states = [e["state"] for e in events if e["state"] != "PROGRESS"]
    assert states == ["PENDING", "STARTED", "RETRY", "STARTED", "RETRY", "STARTED", "SUCCESS"]
    retries = [e for e in events if e["state"] == "RETRY"]
    assert [e["reason"] for e in retries] == ["killed", "killed"]
    assert [e["error"]["code"] for e in retries] == ["killed", "killed"]  # type: ignore[index]
    for n, retry in enumerate(retries):  # base 0.2 s doubled each time, up to half taken off
        wait = float(retry["retry_at"]) - float(retry["ts"])  # type: ignore[arg-type]
        ceiling = min(0.4, 0.2 * 2**n)
        assert ceiling / 2 - 0.01 <= wait <= ceiling + 0.01, (n, wait)
        started = next(e for e in events if e["state"] == "STARTED" and
                       e["attempt"] == retry["attempt"])
        assert float(started["ts"]) >= float(retry["retry_at"]) - 0.01  # type: ignore[arg-type]
    record = await services.tasks.get(task_id)
    assert record is not None and record.decoded("result") == {"runs": 3}


async def test_transient_faults_stop_being_retried_at_the_attempts_limit(
        services: Services, settings: Settings, tmp_path: Path) -> None:
    task_id = await _submit(services, tmp_path, "9\n")  # killed every time
    await drain(_quick(settings, max_attempts=2), KILLED_UNTIL)
    states = [e["state"] for e in await _events(services) if e["state"] != "PROGRESS"]
    assert states == ["PENDING", "STARTED", "RETRY", "STARTED", "FAILURE"]
    record = await services.tasks.get(task_id)
    assert record is not None and record.decoded("error")["code"] == "killed"


async def test_a_failure_of_the_file_itself_is_never_retried(
        services: Services, settings: Settings, tmp_path: Path) -> None:
    await _submit(services, tmp_path, "v 0 0 0\n")
    await drain(_quick(settings), FAILS)
    events = await _events(services)
    assert [e["state"] for e in events if e["state"] != "PROGRESS"] == \
        ["PENDING", "STARTED", "FAILURE"]
    assert events[-1]["error"]["code"] == "corrupt_file"  # type: ignore[index]


@pytest.mark.parametrize("failures", [1, 2, 5, 12])
def test_backoff_doubles_up_to_its_ceiling_with_jitter(services: Services,
                                                       failures: int) -> None:
    queue = type(services.queue)(services.redis, services.events,
                                 services.settings.with_(retry_base=2.0, retry_max=60.0))
    ceiling = min(60.0, 2.0 * 2 ** (failures - 1))
    waits = [queue.backoff(failures) for _ in range(200)]
    assert all(ceiling / 2 <= w <= ceiling for w in waits)
    assert max(waits) - min(waits) > ceiling / 10  # jitter: not all at once
