"""Builds and supervises the arq worker, embedded in the web process or standalone (`kiln worker`).

`KilnWorker` is arq's Worker with one change: instead of sleeping `poll_delay` between polls, it
waits for a wake-up (a `{"op": "wake"}` on the control channel after every enqueue, or a job
finishing) with `poll_delay` only as a fallback, so an idle worker starts a task within
milliseconds. Jobs are JSON, never pickle; leases and cancellation live in `worker.jobs`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from arq.connections import log_redis_info
from arq.cron import cron
from arq.worker import Worker, func
from redis.exceptions import RedisError

from records import keys
from records.ids import new_id
from records.queue import PROCESS_ASSET, job_deserializer, job_serializer
from records.scheduler import Scheduler
from services import Services
from settings import Settings
from worker.cleanup import cleanup
from worker.jobs import WorkerContext, pipelines_for, process_asset
from worker.pool import ChildPool
from worker.sweep import Sweeper

log = logging.getLogger("kiln.worker")

WAKE = json.dumps({"op": "wake"})

def heartbeat(poll_delay: float) -> float:
    """How long a worker's slots count after its last admission: it admits at least every poll
    delay, so four of them (and 5 s for a slow Redis) mean it is gone."""
    return poll_delay * 4 + 5


CLEANUP = "kiln_cleanup"
"""The arq name of the cleanup cron job (`worker.cleanup`)."""

PRELOAD = ("numpy", "trimesh", "PIL.Image", "tasks.mesh", "tasks.texture", "tasks.material",
           "tasks.render:warm")
"""Imported (and warmed: the OpenGL context) by every child before its first task, so no task
pays for them."""


class KilnWorker(Worker):
    """arq's Worker, woken by the control channel instead of polling every half second, that
    takes its jobs from the scheduler (`records.scheduler`): each poll admits as many jobs as it
    has free slots, in the policy's order, and starts them."""

    def __init__(self, *args: Any, scheduler: Scheduler, lease_s: float, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._wake = asyncio.Event()
        self._scheduler = scheduler
        self._lease_s = lease_s
        self.worker_id = new_id()

    async def _poll_iteration(self) -> None:
        """Admit jobs for the free slots and start them, then arq's poll (which also starts jobs
        due again in arq's queue: a run deferred while another run held its task)."""
        free = self.max_jobs - self.job_counter
        if self.burst and self.max_burst_jobs >= 0:
            free = min(free, self.max_burst_jobs - self._jobs_started())
        admission = await self._scheduler.admit(
            max(0, free), worker=self.worker_id, slots=self.max_jobs,
            heartbeat_s=heartbeat(self.poll_delay_s), lease_s=self._lease_s)
        if admission.jobs:
            await self.start_jobs([job.encode() for job in admission.jobs])
            if self.job_counter < self.max_jobs:
                self._wake.set()  # another worker started one of ours: look again at once
        await super()._poll_iteration()

    async def idle(self) -> bool:
        """Nothing is waiting anywhere (the scheduler and arq's queue): a burst may end."""
        return await self._scheduler.waiting() == 0 and \
            await self.pool.zcard(self.queue_name) == 0

    def wake(self) -> None:
        self._wake.set()

    def _release_sem_dec_counter_on_complete(self) -> None:
        super()._release_sem_dec_counter_on_complete()
        self._wake.set()  # a slot is free: look at the queue now

    async def start_jobs(self, job_ids: list[bytes]) -> None:
        """arq's, minus the jobs this worker is running already. arq trusts its in-progress key
        alone, so after a long Redis stall (the key expired meanwhile) it would start a second
        run of the same job id beside the first, and its bookkeeping of the two would collide
        (a KeyError in run_job)."""
        running = {job_id for job_id, task in self.tasks.items() if not task.done()}
        await super().start_jobs([j for j in job_ids if j.decode() not in running])

    async def finish_job(self, job_id: str, finish: bool, *args: Any, **kwargs: Any) -> None:
        await super().finish_job(job_id, finish, *args, **kwargs)
        if not finish:  # back in the queue (a shutdown, a deferred duplicate): wake the others
            with contextlib.suppress(RedisError, OSError):
                await self.pool.publish(keys.CONTROL_CHANNEL, WAKE)

    async def main(self) -> None:
        """arq's main loop, with the fixed-delay sleep replaced by a wake-up wait."""
        log.info("worker polling %s for %s", self.queue_name, ", ".join(self.functions))
        await log_redis_info(self.pool, log.info)
        self.ctx["redis"] = self.pool
        while True:
            _raise_if_cancelled()  # a cancel that redis-py's wait_for lost mid-poll
            await self._poll_iteration()
            if self.burst:
                if 0 <= self.max_burst_jobs <= self._jobs_started():
                    await asyncio.gather(*self.tasks.values())
                    return
                if await self.idle():
                    await asyncio.gather(*self.tasks.values())
                    return
            with contextlib.suppress(TimeoutError):
                # not wait_for: on Python 3.11 it loses a cancel that lands as the wait ends,
                # and the worker would then poll on after it was told to stop
                async with asyncio.timeout(self.poll_delay_s):
                    await self._wake.wait()
            self._wake.clear()

    async def stop(self) -> None:
        """Cancel running jobs (their children die; arq requeues them) without closing the pool."""
        for task in list(self.tasks.values()):
            task.cancel()
        await asyncio.gather(*self.tasks.values(), return_exceptions=True)


def child_pool(settings: Settings) -> ChildPool:
    """The worker's pool of processing children, for the embedded and the standalone worker."""
    return ChildPool(settings.worker_concurrency, settings.child_memory_bytes, preload=PRELOAD,
                     max_tasks_per_child=settings.child_max_tasks,
                     max_resident_bytes=settings.child_max_resident,
                     niceness=settings.child_nice)


def worker_options(settings: Settings) -> dict[str, Any]:
    """The arq Worker options of every Kiln worker: embedded, `kiln worker`, and arq's own CLI
    (`worker_settings.WorkerSettings` is made from them)."""
    every = settings.cleanup_every
    return {
        "functions": [func(process_asset, name=PROCESS_ASSET, max_tries=1_000_000)],
        # one run per tick among every worker: arq's unique cron job id (kept an hour so a
        # worker whose clock lags cannot queue the tick again), and the cleanup's own lock
        "cron_jobs": [cron(cleanup, name=CLEANUP, minute=set(range(0, 60, every)), second=0,
                           unique=True, keep_result=3600, timeout=3600)] if every else [],
        "queue_name": keys.QUEUE,
        "max_jobs": settings.worker_concurrency,
        "job_timeout": settings.task_timeout + 60,
        "keep_result": 0,
        "poll_delay": settings.poll_delay,
        "job_serializer": job_serializer,
        "job_deserializer": job_deserializer,
        "health_check_interval": 60,
    }


def build_worker(services: Services, pool: ChildPool, *, burst: bool = False,
                 pipelines: Mapping[str, str] | None = None) -> KilnWorker:
    """The Kiln worker run in this process (embedded in `kiln serve`, or `kiln worker`)."""
    settings = services.settings
    context = WorkerContext(services=services, pool=pool,
                            pipelines=dict(pipelines or pipelines_for(settings)))
    worker = KilnWorker(**worker_options(settings), redis_pool=services.redis, burst=burst,
                        handle_signals=False, ctx={"kiln": context},
                        scheduler=services.queue.scheduler, lease_s=settings.job_lease)
    services.hub.on_control(lambda message: handle_control(message, context, worker))
    return worker


class StockAdmitter:
    """Admits jobs for arq's stock Worker (`arq worker_settings.WorkerSettings`), which reads
    arq's queue only: as many as its slots free, on every wake and every poll delay; arq's own
    poll then starts them."""

    def __init__(self, context: WorkerContext, settings: Settings) -> None:
        self._context = context
        self._settings = settings
        self._scheduler = context.services.queue.scheduler
        self._wake = asyncio.Event()
        self._lock = asyncio.Lock()
        self.worker_id = new_id()

    def wake(self) -> None:
        self._wake.set()

    async def admit_once(self) -> list[str]:
        """Admit as many jobs as arq's slots are free, less those admitted and not started yet;
        one admission at a time (a wake, a job's end and the poll may ask together)."""
        async with self._lock:
            settings, context = self._settings, self._context
            now = time.monotonic()
            stale = [job for job, when in context.admitted.items()
                     if when < now - 2 * settings.poll_delay - 1]
            if stale:  # not started yet: still in arq's queue (waiting for a slot), or taken
                async with context.services.redis.pipeline(transaction=False) as pipe:
                    for job in stale:
                        pipe.zscore(keys.QUEUE, job)
                    scores = await pipe.execute()
                for job, score in zip(stale, scores, strict=True):
                    if score is None:  # another worker ran it
                        del context.admitted[job]
            free = settings.worker_concurrency - context.arq_jobs - len(context.admitted)
            admission = await self._scheduler.admit(
                max(0, free), worker=self.worker_id, slots=settings.worker_concurrency,
                heartbeat_s=heartbeat(settings.poll_delay), lease_s=settings.job_lease)
            context.admitted.update(dict.fromkeys(admission.jobs, now))
            return admission.jobs

    async def run(self) -> None:
        while True:
            self._wake.clear()
            try:
                await self.admit_once()
            except (RedisError, OSError) as exc:
                log.debug("admission skipped: %s", type(exc).__name__)
            _raise_if_cancelled()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._settings.poll_delay):
                    await self._wake.wait()


class _Wakeable(Protocol):
    def wake(self) -> None: ...


def handle_control(message: dict[str, Any], context: WorkerContext,
                   worker: _Wakeable | None = None) -> None:
    """Act on a control message: wake the worker's poll, or kill a cancelled task's child."""
    op = message.get("op")
    if op == "wake" and worker is not None:
        worker.wake()
    elif op == "cancel" and isinstance(message.get("task_id"), str) and \
            context.cancel(message["task_id"]):
        log.info("task %s cancelled: child killed", message["task_id"])


async def supervise(worker: KilnWorker) -> None:
    """Run the worker until cancelled (or, in burst mode, until the queue is empty); an outage
    of Redis only pauses it: it retries with a growing delay and goes on by itself."""
    delay = 0.1
    while True:
        try:
            await worker.main()
            return
        except (RedisError, OSError) as exc:
            log.warning("worker lost Redis (%s); retrying in %.1f s", type(exc).__name__, delay)
        except Exception:
            log.exception("worker loop failed; restarting it in %.1f s", delay)
        _raise_if_cancelled()
        await asyncio.sleep(delay)
        delay = min(delay * 2, 5.0)


def _raise_if_cancelled() -> None:
    """A cancel that a Redis command turned into an error (or swallowed) still stops the loop:
    otherwise the loop would retry forever and whoever awaits its end would hang."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


@dataclass(frozen=True)
class RunningWorker:
    worker: KilnWorker
    pool: ChildPool
    supervisor: asyncio.Task[None]
    """Ends when the worker stops by itself (burst mode: the queue is empty)."""


@contextlib.asynccontextmanager
async def running_worker(services: Services, *, burst: bool = False,
                         pipelines: Mapping[str, str] | None = None
                         ) -> AsyncIterator[RunningWorker]:
    """A started child pool and a supervised worker; both stopped on exit."""
    settings = services.settings
    pool = child_pool(settings)
    await pool.start()
    worker = build_worker(services, pool, burst=burst, pipelines=pipelines)
    task = asyncio.create_task(supervise(worker), name="kiln-worker")
    sweeper = asyncio.create_task(sweeper_for(services).run(), name="kiln-sweep")
    try:
        yield RunningWorker(worker, pool, task)
    finally:
        for background in (sweeper, task):
            background.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await background
        await worker.stop()
        await pool.close()


def sweeper_for(services: Services) -> Sweeper:
    """The recovery sweep of a worker: every KILN_SWEEP_INTERVAL; a waiting task's job has
    that long to reach the queue before it is enqueued again."""
    interval = services.settings.sweep_interval
    return Sweeper(services, interval=interval, grace=interval)
