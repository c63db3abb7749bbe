"""POST /api/uploads: stream files to disk, decide each kind from its bytes, queue one task each."""

from __future__ import annotations

import asyncio
import contextlib

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from api.deps import require_user, services
from api.errors import ApiError
from ids import new_id
from tasks.detect import SUPPORTED, Detection, sniff
from tasks.queue import new_task_identity
from uploads import ReceivedFile, receive_files


def _refuse_unreadable(received: ReceivedFile, detection: Detection | None) -> Detection:
    if received.size == 0:
        raise ApiError(400, "empty_file", f"{received.filename} is empty")
    if detection is None:
        raise ApiError(415, "unsupported_type",
                       f"{received.filename} is not a mesh, texture or material Kiln can read")
    if detection.format not in SUPPORTED:
        raise ApiError(415, "unsupported_type",
                       f"{received.filename} is {detection.label}, which Kiln recognises but "
                       "cannot process yet")
    return detection


async def create_upload(request: Request) -> Response:
    signed_in = require_user(request)
    kiln = services(request)
    received = await receive_files(
        request.stream(), request.headers.get("content-type"), kiln.storage,
        max_file_bytes=kiln.settings.max_upload_bytes,
        max_files=kiln.settings.max_files_per_upload,
    )
    try:
        detections = [
            _refuse_unreadable(f, await asyncio.to_thread(sniff, f.path)) for f in received
        ]
    except BaseException:
        for f in received:
            f.path.unlink(missing_ok=True)
        raise
    batch = new_id()
    tasks = []
    for index, (file, detection) in enumerate(zip(received, detections, strict=True)):
        who = new_task_identity(owner=signed_in.user.id, session=signed_in.claims.session_id,
                                batch=batch, kind=detection.kind, filename=file.filename)
        try:
            kiln.storage.adopt(file.path, who.task_id)
            await kiln.queue.submit(who, format=detection.format, size=file.size,
                                    source="source")
        except BaseException:
            for rest in received[index:]:
                with contextlib.suppress(OSError):
                    rest.path.unlink(missing_ok=True)
            raise
        tasks.append({"task_id": who.task_id, "filename": who.filename, "kind": who.kind,
                      "format": detection.format, "size": file.size})
    return JSONResponse({"batch_id": batch, "tasks": tasks}, status_code=202)


routes = [Route("/api/uploads", create_upload, methods=["POST"])]
