"""A batch (the tasks of one upload request): its summary, and deleting it whole."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from api.deps import require_user, services
from api.errors import ApiError, not_found
from records.deletion import Deleted
from records.events import TaskState
from records.ids import is_valid_id
from records.store import TaskRecord


async def _owned(request: Request) -> tuple[str, list[TaskRecord]]:
    """The batch id and its tasks, when it exists and every task is the caller's; else 404."""
    signed_in = require_user(request)
    batch_id = request.path_params["batch_id"]
    if not is_valid_id(batch_id):
        raise not_found("batch")
    records = await services(request).tasks.in_batch(batch_id)
    if not records or any(record.owner != signed_in.user.id for record in records):
        raise not_found("batch")
    return batch_id, records


def summary(batch_id: str, records: list[TaskRecord]) -> dict[str, object]:
    """The batch's tasks counted by state (the finished states always, others when some task is
    in them); `done` once every one has finished, when the stream's `batch` event carries the
    same counts."""
    counts = {state.value: 0 for state in TaskState}
    for record in records:
        counts[record.state.value] += 1
    return {"batch_id": batch_id, "total": len(records),
            "counts": {state: n for state, n in counts.items()
                       if n or TaskState(state).terminal},
            "done": all(record.state.terminal for record in records),
            "tasks": [record.id for record in records]}


async def get_batch(request: Request) -> Response:
    batch_id, records = await _owned(request)
    return JSONResponse(summary(batch_id, records))


async def delete_batch(request: Request) -> Response:
    """Every task of the batch as DELETE /api/tasks/{id} does it: 204, then 404."""
    _, records = await _owned(request)
    deleter = services(request).deleter
    outcomes = [await deleter.delete_task(record) for record in records]
    if Deleted.BUSY in outcomes:
        raise ApiError(409, "not_deletable", "a task of the batch kept being retried; try again")
    return Response(status_code=204)


routes = [
    Route("/api/batches/{batch_id}", get_batch, methods=["GET"]),
    Route("/api/batches/{batch_id}", delete_batch, methods=["DELETE"]),
]
