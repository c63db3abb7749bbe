"""At-least-once delivery, exactly one terminal event: duplicates, lost runs, leases."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from records import keys
from records.events import Guard, TaskState
from records.queue import PROCESS_ASSET, job_id, new_task_identity
from services import Services, open_services
from settings import Settings
from tests.conftest import CORPUS
from tests.helpers.submit import submit_claimed_elsewhere, submit_stub
from worker.runner import running_worker

STEPS = {"mesh": "tests.helpers.pipelines:steps", "texture": "tests.helpers.pipelines:steps"}


async def _drain(services: Services) -> None:
    async with running_worker(services, burst=True, pipelines=STEPS) as running:
        await running.supervisor


async def _log(services: Services) -> list[dict[str, object]]:
    entries = await services.redis.xrange(keys.session_stream("s1").log)
    logged = [json.loads(fields[b"e"]) for _, fields in entries]
    return [event for event in logged if event["type"] == "task"]


def _states(log: list[dict[str, object]]) -> list[object]:
    return [e["state"] for e in log if e["state"] != "PROGRESS"]


@pytest.mark.parametrize("duplicates", [1, 3])
async def test_a_job_delivered_twice_runs_once(services: Services, tmp_path: Path,
                                               duplicates: int) -> None:
    tid = await submit_stub(services, tmp_path)
    for n in range(duplicates):  # delivered again while the first delivery runs, or after
        await services.redis.enqueue_job(PROCESS_ASSET, tid, _job_id=f"duplicate-{n}",
                                         _queue_name=keys.QUEUE)
    await _drain(services)
    log = await _log(services)
    assert _states(log) == ["PENDING", "STARTED", "SUCCESS"]
    assert await services.redis.zcard(keys.QUEUE) == 0


async def test_a_lost_run_gets_a_new_attempt_and_its_stale_events_are_refused(
        services: Services, tmp_path: Path) -> None:
    # a worker claimed attempt 1 and died: its job is still queued, as arq leaves it
    tid, identity = await submit_claimed_elsewhere(services, tmp_path, run="dead-run",
                                                   job=False)
    await services.redis.delete(keys.run_lease(tid))  # its lease lapsed with it
    await _drain(services)
    log = await _log(services)
    assert _states(log) == ["PENDING", "STARTED", "RETRY", "STARTED", "SUCCESS"]
    assert [e["attempt"] for e in log if e["state"] == "SUCCESS"] == [2]
    late = await services.events.emit(identity, Guard.RUN, TaskState.SUCCESS,
                                      attempt=1, run="dead-run", stage="done")
    assert late is None
    assert _states(await _log(services)).count("SUCCESS") == 1


async def test_a_task_whose_worker_keeps_dying_fails_with_worker_lost(
        services: Services, tmp_path: Path) -> None:
    tid = await submit_stub(services, tmp_path)
    record = await services.tasks.get(tid)
    assert record is not None
    ident = record.identity
    await services.events.emit(ident, Guard.CLAIM, TaskState.STARTED, attempt=1, run="r1")
    for attempt in (2, 3):  # KILN_MAX_ATTEMPTS = 3 deliveries, each lost
        await services.events.emit(ident, Guard.REQUEUE, TaskState.RETRY, attempt=attempt,
                                   fields={"lost": str(attempt - 1)})
        await services.events.emit(ident, Guard.CLAIM, TaskState.STARTED, attempt=attempt,
                                   run=f"r{attempt}")
    await services.redis.delete(keys.run_lease(tid))
    await _drain(services)
    final = await services.tasks.get(tid)
    assert final is not None and final.state is TaskState.FAILURE
    assert final.decoded("error")["code"] == "worker_lost"


async def test_transitions_the_script_refuses(services: Services, tmp_path: Path) -> None:
    tid = await submit_stub(services, tmp_path)
    record = await services.tasks.get(tid)
    assert record is not None
    ident = record.identity
    emit = services.events.emit
    assert await emit(ident, Guard.CREATE, TaskState.PENDING, attempt=1) is None  # exists
    assert await emit(ident, Guard.RUN, TaskState.PROGRESS, attempt=1, run="nobody") is None
    assert await emit(ident, Guard.CLAIM, TaskState.STARTED, attempt=1, run="a")
    assert await emit(ident, Guard.CLAIM, TaskState.STARTED, attempt=1, run="b") is None
    assert await emit(ident, Guard.RUN, TaskState.PROGRESS, attempt=1, run="b") is None
    assert await emit(ident, Guard.RUN, TaskState.SUCCESS, attempt=1, run="a")
    for guard in (Guard.RUN, Guard.REVOKE, Guard.ABANDON):
        assert await emit(ident, guard, TaskState.FAILURE, attempt=1, run="a") is None
    assert await emit(ident, Guard.REQUEUE, TaskState.RETRY, attempt=3) is None  # skips one
    assert await emit(ident, Guard.REQUEUE, TaskState.RETRY, attempt=2)
    assert _states(await _log(services)) == ["PENDING", "STARTED", "SUCCESS", "RETRY"]


async def test_a_running_job_holds_only_a_short_lease(services: Services, tmp_path: Path,
                                                      settings: Settings) -> None:
    tid = await submit_stub(services, tmp_path)
    slow = {"mesh": "tests.helpers.pipelines:spin_forever"}
    async with services.hub.listen(keys.session_stream("s1").channel) as box, \
            running_worker(services, pipelines=slow):
        while '"PROGRESS"' not in (await box.get())[1]:
            pass
        ttl_ms = await services.redis.pttl(f"arq:in-progress:{job_id(tid, 1)}")
        assert 0 < ttl_ms <= settings.job_lease * 1000
        record = await services.tasks.get(tid)
        assert record is not None and await services.queue.cancel(record)


async def test_a_task_over_within_the_progress_interval_sends_at_most_four_events(
        settings: Settings, tmp_path: Path) -> None:
    # the progress interval is 1/KILN_PROGRESS_HZ: at 0.2 Hz no run here outlasts it
    async with open_services(settings.with_(progress_hz=0.2), settings.redis_url or "") as quick:
        tid = await submit_stub(quick, tmp_path)
        async with running_worker(quick, burst=True,
                                  pipelines={"mesh": "tests.helpers.pipelines:burst"}) as running:
            await running.supervisor
        log = [e for e in await _log(quick) if e["task_id"] == tid]
    states = [e["state"] for e in log]
    assert states[:2] == ["PENDING", "STARTED"] and states[-1] == "SUCCESS"
    assert states.count("PROGRESS") <= 1 and len(states) <= 4


async def test_progress_reports_share_one_rate_limit(services: Services, tmp_path: Path) -> None:
    # `steps` reports 80 times over about 0.8 s in two stages: at 5 a second, about five go out
    tid = await submit_stub(services, tmp_path)
    await _drain(services)
    progress = [e for e in await _log(services)
                if e["task_id"] == tid and e["state"] == "PROGRESS"]
    assert 1 <= len(progress) <= 8


async def test_the_stats_only_mesh_pipeline_measures_and_makes_no_artifacts(
        settings: Settings, tmp_path: Path) -> None:
    box = CORPUS / "OBJ" / "box.obj"
    async with open_services(settings.with_(mesh_pipeline="stats"),
                             settings.redis_url or "") as services:
        who = new_task_identity(owner="u1", session="s1", batch="b1", kind="mesh",
                                filename="box.obj")
        services.storage.adopt(who.task_id, [("box.obj", box)])
        assert await services.queue.submit(who, format="obj", size=box.stat().st_size,
                                           files=["box.obj"])
        async with running_worker(services, burst=True) as running:  # the settings' pipelines
            await running.supervisor
        log = await _log(services)
        success = [e for e in log if e["state"] == "SUCCESS"]
        assert len(success) == 1, _states(log)
        result = success[0]["result"]
        assert isinstance(result, dict)
        assert result["faces"] == 12 and "thumbnail" not in json.dumps(result)
        assert not any(services.storage.artifacts_dir(who.task_id).glob("*"))
        stages = {e["stage"] for e in log if e["state"] == "PROGRESS"}
        assert not stages & {"thumbnail", "web_model", "lods", "turntable"}
