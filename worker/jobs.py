"""The asset job: claim the task, run its pipeline in a child, report progress, finish exactly once.

arq delivers a job at least once. The task record decides what a delivery does: a finished task is
left alone; a queued one is claimed (STARTED, with a fresh run id and the run's lease); one that a
live run holds is looked at again when that run's lease would lapse (never dropped: arq would
forget the job); one that a lost run left STARTED gets a new attempt (RETRY) or, after
KILN_MAX_ATTEMPTS lost runs, FAILURE `worker_lost`. A run whose worker stops (SIGTERM) hands its
task back at once as a new attempt that is not counted as lost. Every later event of the run must
match its attempt and run id, so a stale run can never write a second terminal event; when one of
its events is refused, it kills its child and stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypedDict, cast

from arq.connections import ArqRedis
from arq.constants import in_progress_key_prefix
from arq.worker import Retry
from redis.exceptions import RedisError

from records import keys
from records.events import RUNNING_STATES, Emitted, Guard, TaskState
from records.ids import new_id
from records.queue import NO_OUTCOME
from records.store import TaskRecord
from services import Services
from settings import Settings
from tasks.errors import TRANSIENT, TaskError
from tasks.progress import Payload
from worker.coalesce import ProgressCoalescer
from worker.pool import ChildPool

log = logging.getLogger("kiln.jobs")

HAND_BACK_TIMEOUT = 5.0
"""Seconds a stopping worker spends handing a running task back before it gives up."""

PIPELINES: Mapping[str, str] = {
    "mesh": "tasks.mesh:process",
    "texture": "tasks.texture:describe",
    "material": "tasks.material:process",
}
"""Task kind -> the function its child runs (module:function)."""
MESH_STATS_ONLY = "tasks.mesh:analyse"
"""The mesh pipeline under KILN_MESH_PIPELINE=stats: load and measure, no artifacts."""


def pipelines_for(settings: Settings) -> dict[str, str]:
    """The pipelines a worker with these settings runs."""
    chosen = dict(PIPELINES)
    if settings.mesh_pipeline == "stats":
        chosen["mesh"] = MESH_STATS_ONLY
    return chosen


@dataclass
class WorkerContext:
    """What every job of this worker shares (arq's ctx["kiln"])."""

    services: Services
    pool: ChildPool
    pipelines: Mapping[str, str] = field(default_factory=lambda: dict(PIPELINES))
    running: dict[str, asyncio.Task[dict[str, Any]]] = field(default_factory=dict)
    arq_jobs: int = 0
    """Every arq job running now, cron jobs included; kept by arq's stock worker's job hooks
    (`worker_settings`) for its `StockAdmitter`."""
    admitted: dict[str, float] = field(default_factory=dict)
    """Jobs admitted for this worker that it has not started yet (job id -> monotonic time),
    kept by `worker.runner.StockAdmitter` only."""

    def cancel(self, task_id: str) -> bool:
        """Kill the child of a running task (its REVOKED event is already written)."""
        inner = self.running.get(task_id)
        if inner is None or inner.done():
            return False
        inner.cancel()
        return True


class JobContext(TypedDict, total=False):
    """arq's `ctx` as a Kiln job sees it: ours (`kiln`) beside the keys arq sets for each job."""

    kiln: WorkerContext
    kiln_stack: contextlib.AsyncExitStack  # arq's CLI worker only: what its shutdown closes
    kiln_admitter: Any  # arq's CLI worker only: its `worker.runner.StockAdmitter`
    redis: ArqRedis
    job_id: str
    job_try: int
    enqueue_time: datetime
    score: int


async def process_asset(ctx: dict[str, Any], task_id: str) -> None:
    """The arq job function (registered as records.queue.PROCESS_ASSET); arq types `ctx` as a
    plain dict, JobContext says what it holds."""
    job = cast(JobContext, ctx)
    kiln, job_id = job["kiln"], job.get("job_id", "")
    kiln.admitted.pop(job_id, None)
    await _Run(kiln, task_id, job_id).execute()


class _Run:
    def __init__(self, kiln: WorkerContext, task_id: str, job_id: str) -> None:
        self.kiln = kiln
        self.services = kiln.services
        self.task_id = task_id
        self.job_id = job_id
        self.run_id = new_id()
        self.record: TaskRecord | None = None
        self.attempt = 0
        self.began = time.monotonic()
        self.release = True
        """Whether this delivery's end frees its job's place in the user's running set (not
        when another delivery of the same job holds the run)."""

    async def execute(self) -> None:
        try:
            await self._execute()
        finally:
            if self.record is not None and self.job_id and self.release:
                with contextlib.suppress(RedisError, OSError):  # else its lease lapses
                    await self.services.queue.scheduler.finished(self.record.owner, self.job_id)

    async def _execute(self) -> None:
        record = await self.services.tasks.get(self.task_id)
        if record is None:
            log.warning("job for unknown task %s dropped", self.task_id)
            return
        self.record = record
        if record.state.terminal or self._stale(record):
            return
        self.attempt = record.attempt
        if record.state in RUNNING_STATES:
            lease_ms = await self.services.redis.pttl(keys.run_lease(self.task_id))
            if lease_ms > 0:
                self.release = False
                # A live run holds the task. Returning would make arq drop this job, and if
                # that run then vanishes without a word, nothing would run the task again: look
                # again when the lease would have lapsed (a finished task then just returns).
                raise Retry(defer=lease_ms / 1000 + 0.05)
            # the run that held it is gone: a new attempt in a new job, or `worker_lost`
            await self.services.queue.recover_lost(record)
            return
        # a run's partial result belongs to it: none is left from an earlier run
        claimed = await self._emit(Guard.CLAIM, TaskState.STARTED, stage="starting",
                                   fields={"started": repr(time.time()), "job": self.job_id,
                                           **NO_OUTCOME})
        if claimed is None:  # another delivery got there first, or it was cancelled meanwhile
            now = await self.services.tasks.get(self.task_id)
            self.release = now is None or now.state not in RUNNING_STATES
            return
        # its place in the running set, again if its admission's lease lapsed before it started
        await self.services.queue.scheduler.keep_running(
            record.owner, self.job_id, self.services.settings.job_lease, renew_only=False)
        lease = asyncio.create_task(self._keep_lease())
        try:
            await self._process()
        except asyncio.CancelledError:
            # the worker is stopping: hand the task back now, not after the lease lapses, and
            # without counting it as a loss
            lease.cancel()
            await asyncio.shield(self._hand_back(lease))
            raise
        finally:
            lease.cancel()

    def _stale(self, record: TaskRecord) -> bool:
        """A delivery of an earlier attempt's job (deferred, or redelivered after a retry): the
        current attempt has a job of its own, admitted by the scheduler."""
        task, _, attempt = self.job_id.rpartition("-")
        return task == self.task_id and attempt.isdigit() and int(attempt) != record.attempt

    async def _hand_back(self, lease: asyncio.Task[None]) -> None:
        """Give the task back for another worker (bounded: the process is stopping). If Redis
        cannot be reached, the run's lease lapses and the task is recovered as a lost run."""
        # so no refresh of the lease lands after it is dropped; bounded, since a cancel that a
        # Redis command swallowed must not hold the shutdown (the loop then ends on its own)
        with contextlib.suppress(asyncio.CancelledError, TimeoutError):
            async with asyncio.timeout(HAND_BACK_TIMEOUT):
                await asyncio.shield(lease)
        try:
            async with asyncio.timeout(HAND_BACK_TIMEOUT):
                record = await self.services.tasks.get(self.task_id)
                if record is None or record.run != self.run_id:
                    return
                if await self.services.queue.hand_back(record, run=self.run_id, job=self.job_id):
                    log.info("task %s handed back at shutdown (attempt %d next)",
                             self.task_id, record.attempt + 1)
        except (RedisError, OSError, TimeoutError) as exc:
            log.warning("task %s not handed back (%s); it is retaken when its lease lapses",
                        self.task_id, type(exc).__name__)

    async def _process(self) -> None:
        assert self.record is not None
        settings, storage = self.services.settings, self.services.storage
        kind = self.record.fields["kind"]
        function = self.kiln.pipelines.get(kind)
        if function is None:
            error = {"code": "unsupported_format", "message": f"no pipeline for {kind} files"}
            await self._finish(Guard.RUN, TaskState.FAILURE, error=error)
            return
        if storage.has_run(self.task_id):  # an earlier attempt's: a first run has nothing
            await asyncio.to_thread(storage.clear_run, self.task_id)
        payload = self._payload()
        inner: asyncio.Task[dict[str, Any]] | None = None

        def rejected() -> None:
            if inner is not None:
                inner.cancel()

        progress = ProgressCoalescer(self._send_progress, hz=settings.progress_hz,
                                     on_rejected=rejected)
        inner = asyncio.create_task(self.kiln.pool.run(
            function, payload, on_progress=progress.update, timeout=settings.task_timeout,
            on_partial=progress.partial))
        self.kiln.running[self.task_id] = inner
        try:
            result = await inner
        except asyncio.CancelledError:
            progress.cancel()
            current = asyncio.current_task()
            if current is not None and current.cancelling():
                raise  # the worker is stopping: the job stays queued and runs again
            log.info("task %s: child stopped (cancelled or superseded)", self.task_id)
            return
        except TaskError as exc:
            await progress.close()
            if exc.code in TRANSIENT and await self._retry_later(exc.as_dict()):
                return
            await self._finish(Guard.RUN, TaskState.FAILURE, error=exc.as_dict())
            return
        finally:
            self.kiln.running.pop(self.task_id, None)
            # scratch space (an unpacked zip) is not kept: only the upload and artifacts are
            if storage.work_dir(self.task_id).exists():
                await asyncio.to_thread(storage.clear_work, self.task_id)
        await progress.close()
        await self._finish(Guard.RUN, TaskState.SUCCESS, result=result)

    async def _retry_later(self, error: dict[str, str]) -> bool:
        """A transient fault: the task comes back after a backoff, unless its attempts are used
        up (False: it fails)."""
        assert self.record is not None
        record = await self.services.tasks.get(self.task_id)
        if record is None or record.run != self.run_id:
            return True  # no longer ours: whoever holds it decides
        if not await self.services.queue.retry_after_fault(record, run=self.run_id,
                                                           job=self.job_id, error=error):
            return False
        log.info("task %s: %s, retried after a backoff", self.task_id, error["code"])
        return True

    def _payload(self) -> Payload:
        """What the child needs: where the task's files are, what they are, and the limits."""
        assert self.record is not None
        storage, settings = self.services.storage, self.services.settings
        fields = self.record.fields
        files = json.loads(fields.get("files") or "[]")
        if files:
            source = storage.files_dir(self.task_id) / fields["source"]
        else:  # queued by Kiln 0.1: a single file named `source`
            source, files = storage.source(self.task_id), ["source"]
        return {
            "source": str(source),
            "files_dir": str(source.parent),
            "main": source.name,
            "files": files,
            "format": fields.get("format", ""),
            "artifacts_dir": str(storage.artifacts_dir(self.task_id)),
            "work_dir": str(storage.work_dir(self.task_id)),
            "max_pixels": settings.max_pixels,
            "limits": settings.pipeline_limits(),
        }

    async def _send_progress(self, stage: str, fraction: float,
                             partial: dict[str, Any] | None) -> bool:
        """One PROGRESS event; with a partial result, its stats and the artifacts written so far
        go into the event and the record (GET /api/tasks/{id} shows them while it runs)."""
        extra: dict[str, Any] | None = None
        fields: dict[str, str] | None = None
        if partial is not None:
            stats = partial.get("stats", {})
            artifacts = self._existing(partial.get("artifacts", []))
            extra = {"result": stats, "artifacts": artifacts}
            fields = {"result": json.dumps(stats), "artifacts": json.dumps(artifacts)}
        try:
            emitted = await self._emit(Guard.RUN, TaskState.PROGRESS, stage=stage,
                                       progress=fraction, extra=extra, fields=fields)
        except (RedisError, OSError):
            return True  # progress may be lost in an outage; state changes may not
        return emitted is not None

    async def _finish(self, guard: Guard, state: TaskState, *,
                      error: dict[str, str] | None = None,
                      result: dict[str, Any] | None = None,
                      fields: dict[str, str] | None = None) -> None:
        fields = {**(fields or {}), "finished": repr(time.time())}
        extra: dict[str, Any] = {}
        if error is not None:
            extra["error"] = error
            fields["error"] = json.dumps(error)
            log.info("task %s failed: %s", self.task_id, error["code"])
        if result is not None:
            stats, artifacts = result.get("stats", {}), self._existing(result.get("artifacts", []))
            extra.update(result=stats, artifacts=artifacts)
            fields.update(result=json.dumps(stats), artifacts=json.dumps(artifacts))
        else:
            fields.update(NO_OUTCOME)  # a failed run's result so far is no result
        stage = "done" if state is TaskState.SUCCESS else "failed"
        progress = 1.0 if state is TaskState.SUCCESS else 0.0
        await self._emit_reliably(guard, state, stage=stage, progress=progress,
                                  extra=extra, fields=fields)
        assert self.record is not None
        task, owner = self.record.fields, self.record.owner
        scheduler, dedup = self.services.queue.scheduler, self.services.dedup
        # one round trip: the run time (an estimate), the result offered for dedup (a shortcut)
        # and the job's place in the running set (else its lease lapses): none is lost if lost
        with contextlib.suppress(RedisError, OSError):
            async with self.services.redis.pipeline(transaction=False) as pipe:
                await scheduler.record_duration(task["kind"], time.monotonic() - self.began,
                                                pipe)
                if state is TaskState.SUCCESS and task.get("digest") and \
                        task.get("signature") == dedup.signature_id:
                    dedup.remember_in(pipe, owner, task["digest"], self.task_id)
                if self.job_id:
                    scheduler.finished_in(pipe, owner, self.job_id)
                await pipe.execute()
            self.release = False  # released already

    def _existing(self, artifacts: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Only artifacts that are really on disk under a name Kiln serves."""
        storage = self.services.storage
        kept = []
        for artifact in artifacts:
            path = storage.artifact(self.task_id, str(artifact.get("name", "")))
            if path is not None and path.is_file():
                kept.append({"name": artifact["name"], "size": path.stat().st_size,
                             "media_type": artifact.get("media_type", "application/octet-stream")})
        return kept

    async def _emit_reliably(self, guard: Guard, state: TaskState, **kw: Any) -> None:
        """A state change survives a short Redis outage: retry for up to a minute."""
        delay, deadline = 0.1, time.monotonic() + 60
        while True:
            try:
                await self._emit(guard, state, **kw)
                return
            except (RedisError, OSError):
                me = asyncio.current_task()
                if time.monotonic() > deadline or (me is not None and me.cancelling()):
                    raise
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)

    async def _emit(self, guard: Guard, state: TaskState, *, stage: str = "",
                    progress: float = 0.0, extra: dict[str, Any] | None = None,
                    fields: dict[str, str] | None = None) -> Emitted | None:
        assert self.record is not None
        return await self.services.events.emit(
            self.record.identity, guard, state, attempt=self.attempt, run=self.run_id,
            stage=stage, progress=progress, extra=extra, fields=fields)

    async def _keep_lease(self) -> None:
        """Keep arq's in-progress key short-lived while we run, so a dead worker's job is retaken
        after one lease instead of arq's job timeout; and notice a cancel we may have missed."""
        settings = self.services.settings
        redis = self.services.redis
        lease_ms = int(settings.job_lease * 1000)
        me = asyncio.current_task()
        while me is None or not me.cancelling():  # a cancel a command swallowed still ends it
            with contextlib.suppress(RedisError, OSError):
                if self.job_id:
                    await redis.pexpire(in_progress_key_prefix + self.job_id, lease_ms)
                    if self.record is not None:
                        await self.services.queue.scheduler.keep_running(
                            self.record.owner, self.job_id, settings.job_lease)
                await redis.set(keys.run_lease(self.task_id), self.run_id, px=lease_ms)
                state = await redis.hget(keys.task(self.task_id), "state")  # type: ignore[misc]
                if state is None or state.decode() == TaskState.REVOKED:  # or deleted
                    self.kiln.cancel(self.task_id)
            if me is not None and me.cancelling():
                return
            await asyncio.sleep(settings.job_lease / 3)
