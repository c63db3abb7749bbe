"""The fair scheduler against a plain FIFO: one user's backlog, another user's single upload.

User A queues `--backlog` tasks (200), then user B queues one. Kiln's workers (the default slot
count: one per core) process them with real children on a small OBJ. Two ways of queueing, in
turns, `--repeat` times each:
  - fair:  Kiln's scheduler (`records.scheduler`), as uploads are queued.
  - fifo:  the same tasks' jobs put straight into arq's queue by their enqueue time (arq's own
           FIFO, as Kiln queued them before the scheduler); the workers are the same.
Per run it prints B's wait (B queued → B started), when the first slot freed after B was queued
(the soonest end of a run after it), a task's median run time, and the throughput
(tasks finished per second, from the first start to the last end). The scheduler's cost is the
throughput lost against FIFO (the target: at most 5%); B's wait should be within one task's run
time under fair, against the whole backlog under FIFO.

    .venv/bin/python bench/fairness.py [--backlog 200] [--repeat 3] [--pipeline full|stats]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from live import ROOT, private_redis, wait_for_redis  # noqa: E402
from redis.asyncio.client import Pipeline  # noqa: E402

from records import keys  # noqa: E402
from records.queue import NewTask, new_task_identity  # noqa: E402
from services import Services, open_services  # noqa: E402
from settings import Settings  # noqa: E402
from worker.runner import running_worker  # noqa: E402

MODEL = ROOT / "tests" / "corpus" / "OBJ" / "box.obj"


async def queue_tasks(services: Services, user: str, count: int) -> list[str]:
    """`count` tasks of `user` on MODEL, queued as uploads of at most 100 files queue them."""
    new = []
    for n in range(count):
        who = new_task_identity(owner=user, session=f"s-{user}", batch=f"b-{user}", kind="mesh",
                                filename=f"{user}{n}.obj")
        services.storage.adopt(who.task_id, [(MODEL.name, MODEL)])
        new.append(NewTask(who, "obj", MODEL.stat().st_size, (MODEL.name,)))
    for start in range(0, count, 100):
        await services.queue.submit_all(new[start:start + 100])
    return [task.identity.task_id for task in new]


def bypass_the_scheduler(services: Services) -> None:
    """FIFO: every job goes straight into arq's queue, scored by its enqueue time, as Kiln queued
    them before the scheduler (its workers' admissions then find nothing to admit)."""
    async def straight_to_arq(pipe: Pipeline, jobs: Sequence[tuple[str, str, Any, int]]) -> None:
        for job, _user, _priority, due in jobs:
            pipe.zadd(keys.QUEUE, {job: due})

    services.queue.scheduler.schedule_in = straight_to_arq  # type: ignore[method-assign]


async def runs(services: Services, user: str) -> dict[str, tuple[float, float]]:
    """task id -> (started, ended) from the user's event log."""
    started: dict[str, float] = {}
    ended: dict[str, tuple[float, float]] = {}
    for _, fields in await services.redis.xrange(keys.user_stream(user).log):
        event = json.loads(fields[b"e"])
        if event["type"] != "task":
            continue  # a batch's end
        if event["state"] == "STARTED":
            started[event["task_id"]] = event["ts"]
        elif event["state"] in ("SUCCESS", "FAILURE", "REVOKED"):
            if event["state"] != "SUCCESS":
                raise SystemExit(f"a task ended {event['state']}: {event.get('error')}")
            ended[event["task_id"]] = (started[event["task_id"]], event["ts"])
    return ended


async def one_run(settings: Settings, backlog: int, fifo: bool) -> dict[str, float]:
    async with open_services(settings, settings.redis_url or "") as services:
        await services.redis.flushdb()
        if fifo:
            bypass_the_scheduler(services)
        async with running_worker(services):
            await queue_tasks(services, "alice", backlog)
            queued_b = time.time()
            (b_task,) = await queue_tasks(services, "bob", 1)
            while True:  # polling Redis for the end of the run (every task finished)
                if not await services.redis.zcard(keys.ACTIVE):
                    break
                await asyncio.sleep(0.05)
        a_runs, b_runs = await runs(services, "alice"), await runs(services, "bob")
    every = [*a_runs.values(), *b_runs.values()]
    first, last = min(s for s, _ in every), max(e for _, e in every)
    # the first slot to free after B was queued: the soonest end of a run after it
    ends = [e for _, e in every if e > queued_b]
    return {
        "b_wait_s": b_runs[b_task][0] - queued_b,
        "slot_free_s": min(ends) - queued_b if ends else 0.0,
        "task_s": statistics.median(e - s for s, e in every),
        "tasks_per_s": len(every) / (last - first),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backlog", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--pipeline", choices=("full", "stats"), default="full")
    args = parser.parse_args()
    results: dict[str, list[dict[str, float]]] = {"fair": [], "fifo": []}
    with tempfile.TemporaryDirectory(prefix="kiln-fairness-") as tmp, private_redis(tmp) as url:
        asyncio.run(wait_for_redis(url))
        settings = Settings(redis_url=url, data_dir=Path(tmp) / "data",
                            mesh_pipeline=args.pipeline)
        print(f"slots: {settings.worker_concurrency}, backlog: {args.backlog} tasks of "
              f"{MODEL.name}, pipeline: {args.pipeline}", flush=True)
        for run in range(1, args.repeat + 1):
            for mode in ("fair", "fifo"):  # interleaved: the machine's drift hits both
                result = asyncio.run(one_run(settings, args.backlog, mode == "fifo"))
                results[mode].append(result)
                print(f"  [{run}/{args.repeat}] {mode}: B waited {result['b_wait_s']:.3f} s "
                      f"(the first slot freed after {result['slot_free_s']:.3f} s), "
                      f"a task runs {result['task_s'] * 1000:.0f} ms, "
                      f"{result['tasks_per_s']:.1f} tasks/s", flush=True)
    print("\nmedian of the runs:")
    median = {mode: {k: statistics.median(r[k] for r in rs) for k in rs[0]}
              for mode, rs in results.items()}
    for mode, m in median.items():
        print(f"  {mode}: B waited {m['b_wait_s']:.3f} s ({m['b_wait_s'] / m['task_s']:.1f} task "
              f"run times; the first slot freed after {m['slot_free_s']:.3f} s), "
              f"{m['tasks_per_s']:.1f} tasks/s")
    cost = 1 - median["fair"]["tasks_per_s"] / median["fifo"]["tasks_per_s"]
    print(f"  throughput fair / fifo: {1 - cost:.3f} (scheduler cost {cost * 100:+.1f}%)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
