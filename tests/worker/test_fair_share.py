"""The fair share and the per-user cap, through real workers: one user's backlog does not hold
back another's first task, and no user ever runs more than KILN_USER_MAX_RUNNING at once."""

from __future__ import annotations

import json
from pathlib import Path

from records import keys
from records.queue import NewTask, new_task_identity
from services import Services
from settings import Settings
from tests.helpers.submit import drain

STEPS = {"mesh": "tests.helpers.pipelines:steps"}


async def _queue(services: Services, tmp_path: Path, user: str, count: int) -> list[str]:
    """`count` one-file tasks of `user` (session s-<user>), in one upload."""
    new = []
    for n in range(count):
        who = new_task_identity(owner=user, session=f"s-{user}", batch=f"b-{user}",
                                kind="mesh", filename=f"{user}{n}.obj")
        source = tmp_path / f"{user}{n}.obj"
        source.write_text("v 0 0 0\n")
        services.storage.adopt(who.task_id, [(source.name, source)])
        new.append(NewTask(who, "obj", 8, (source.name,)))
    assert all(await services.queue.submit_all(new))
    return [task.identity.task_id for task in new]


async def _runs(services: Services, users: list[str]) -> list[tuple[float, float, str, str]]:
    """(start, end, user, file) of every run, from the users' event logs."""
    runs = []
    for user in users:
        started: dict[str, float] = {}
        for _, fields in await services.redis.xrange(keys.user_stream(user).log):
            event = json.loads(fields[b"e"])
            if event["type"] != "task":
                continue  # a batch event
            if event["state"] == "STARTED":
                started[event["task_id"]] = event["ts"]
            elif event["state"] in ("SUCCESS", "FAILURE"):
                runs.append((started.pop(event["task_id"]), event["ts"], user,
                             event["filename"]))
    return sorted(runs)


async def test_a_second_users_first_task_does_not_wait_behind_a_backlog(
        services: Services, settings: Settings, tmp_path: Path) -> None:
    await _queue(services, tmp_path, "alice", 6)
    await _queue(services, tmp_path, "bob", 1)  # after all of alice's: FIFO would run it last
    await drain(settings.with_(worker_concurrency=1), STEPS)
    order = [name for _, _, _, name in await _runs(services, ["alice", "bob"])]
    assert order == ["alice0.obj", "bob0.obj", "alice1.obj", "alice2.obj", "alice3.obj",
                     "alice4.obj", "alice5.obj"]


async def test_the_per_user_cap_is_never_passed(
        services: Services, settings: Settings, tmp_path: Path) -> None:
    await _queue(services, tmp_path, "alice", 4)
    await _queue(services, tmp_path, "bob", 2)
    await drain(settings.with_(worker_concurrency=3, user_max_running=1), STEPS)
    runs = await _runs(services, ["alice", "bob"])
    assert len(runs) == 6
    for user in ("alice", "bob"):
        mine = [(start, end) for start, end, who, _ in runs if who == user]
        for (_, end), (start, _) in zip(mine, mine[1:], strict=False):
            assert start >= end, f"{user} ran two tasks at once"
