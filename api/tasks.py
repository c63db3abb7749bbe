"""The caller's tasks: list, read, cancel, retry, queue positions, artifacts. Others' are 404."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Route

from api.deps import query_int, require_user, services
from api.errors import ApiError, not_found
from api.views import task_view
from records.deletion import Deleted
from records.events import QUEUED_STATES
from records.ids import is_valid_id
from records.queue import job_id
from records.store import TaskRecord

QUEUE_SCAN = 1000
"""`GET /api/queue` looks for the session's waiting tasks among its newest this many."""

QUEUE_LIMIT = 200
"""`GET /api/queue` gives the positions of at most this many of them (the newest)."""


async def _owned(request: Request) -> TaskRecord:
    signed_in = require_user(request)
    task_id = request.path_params["task_id"]
    if not is_valid_id(task_id):
        raise not_found()
    record = await services(request).tasks.get_owned(task_id, signed_in.user.id)
    if record is None:
        raise not_found()
    return record


async def list_tasks(request: Request) -> Response:
    signed_in = require_user(request)
    kiln = services(request)
    limit = query_int(request, "limit", 50, 1, kiln.settings.page_size_max)
    offset = query_int(request, "offset", 0, 0, 10**9)
    batch = request.query_params.get("batch")
    if batch is not None and not is_valid_id(batch):
        return JSONResponse({"tasks": [], "total": 0, "next_offset": None})
    records, total = await kiln.tasks.listing(
        signed_in.user.id, signed_in.claims.session_id,
        session_only=request.query_params.get("scope") == "session", batch=batch,
        offset=offset, limit=limit)
    following = offset + limit
    return JSONResponse({"tasks": [task_view(r) for r in records], "total": total,
                         "next_offset": following if following < total else None})


async def get_task(request: Request) -> Response:
    record = await _owned(request)
    view = task_view(record)
    if record.state in QUEUED_STATES:
        jid = job_id(record.id, record.attempt)
        standing = await services(request).queue.standing(record.owner,
                                                          [(jid, record.fields["kind"])])
        view["queue_position"] = standing.positions.get(jid)
        view["eta_s"] = standing.eta_s.get(jid)
    return JSONResponse(view)


async def queue_positions(request: Request) -> Response:
    """Where the session's waiting tasks stand under the scheduling policy:
    `{"positions": {task_id: n}, "eta_s": {task_id: s}, "queued": total}`, 1 = next to start;
    `eta_s` is when each should be done, from recent run times (absent until some are known);
    `queued` counts every user's jobs waiting for a slot."""
    signed_in = require_user(request)
    kiln = services(request)
    waiting = await kiln.tasks.queued(signed_in.claims.session_id, signed_in.user.id,
                                      scan=QUEUE_SCAN, limit=QUEUE_LIMIT)
    jobs = {job_id(t.task_id, t.attempt): t for t in waiting}
    standing = await kiln.queue.standing(signed_in.user.id,
                                         [(jid, t.kind) for jid, t in jobs.items()])
    return JSONResponse({
        "positions": {jobs[jid].task_id: n for jid, n in standing.positions.items()},
        "eta_s": {jobs[jid].task_id: s for jid, s in standing.eta_s.items()},
        "queued": standing.queued,
    })


async def cancel_task(request: Request) -> Response:
    record = await _owned(request)
    kiln = services(request)
    if not await kiln.queue.cancel(record):
        raise ApiError(409, "not_cancellable", f"the task is already {_current(record)}")
    return JSONResponse(await _fresh(request, record), status_code=202)


async def retry_task(request: Request) -> Response:
    record = await _owned(request)
    kiln = services(request)
    if not await kiln.queue.retry(record):
        raise ApiError(409, "not_retryable",
                       f"only finished tasks can be retried; this one is {_current(record)}")
    return JSONResponse(await _fresh(request, record), status_code=202)


async def delete_task(request: Request) -> Response:
    """Cancel the task if it has not finished, then remove its record, indexes and files: 204,
    then 404 for good; the stream gets a `deleted` event."""
    record = await _owned(request)
    outcome = await services(request).deleter.delete_task(record)
    if outcome is Deleted.GONE:
        raise not_found()
    if outcome is Deleted.BUSY:
        raise ApiError(409, "not_deletable", "the task kept being retried; try again")
    return Response(status_code=204)


async def get_artifact(request: Request) -> Response:
    record = await _owned(request)
    name = request.path_params["name"]
    listed = {a["name"]: a for a in record.artifacts}
    path = services(request).storage.artifact(record.id, name)
    if name not in listed or path is None or not path.is_file():
        raise not_found("artifact")
    return FileResponse(
        path, media_type=listed[name].get("media_type", "application/octet-stream"),
        filename=name, content_disposition_type="attachment",
        headers={"X-Content-Type-Options": "nosniff", "Cache-Control": "private, max-age=3600"},
    )


def _current(record: TaskRecord) -> str:
    return record.state.value


async def _fresh(request: Request, record: TaskRecord) -> dict[str, object]:
    again = await services(request).tasks.get(record.id)
    return task_view(again or record)


routes = [
    Route("/api/queue", queue_positions, methods=["GET"]),
    Route("/api/tasks", list_tasks, methods=["GET"]),
    Route("/api/tasks/{task_id}", get_task, methods=["GET"]),
    Route("/api/tasks/{task_id}", delete_task, methods=["DELETE"]),
    Route("/api/tasks/{task_id}/cancel", cancel_task, methods=["POST"]),
    Route("/api/tasks/{task_id}/retry", retry_task, methods=["POST"]),
    Route("/api/tasks/{task_id}/artifacts/{name}", get_artifact, methods=["GET"]),
]
