"""POST /api/uploads: stream files to disk, decide each kind from its bytes, group a model with its
companion files, and queue one task per group."""

from __future__ import annotations

import contextlib
from dataclasses import replace

from redis.exceptions import RedisError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from api.deps import require_user, services
from api.errors import ApiError, error_response, retry_later
from api.multipart import (
    INLINE_DISK_BYTES,
    ReceivedFile,
    UploadTooSlow,
    disk_work,
    receive_files,
)
from auth.backend import SignedIn
from records.dedup import content_key
from records.ids import new_id
from records.queue import NewTask, new_task_identity
from records.scheduler import PRIORITY_NAMES, Priority
from storage import stored_names
from tasks.detect import SUPPORTED, sniff
from tasks.grouping import Group, UploadFile, plan

_COMPANIONS = {
    "mtl": "an MTL material library: upload it together with the OBJ that uses it",
    "bin": "a glTF buffer: upload it together with the .gltf that uses it",
}


def _over_quota(quota: int) -> ApiError:
    return ApiError(413, "quota_exceeded",
                    f"this upload would take your stored files past your quota of "
                    f"{quota:,} bytes")


def _declared_length(request: Request) -> int:
    """The body's length as its Content-Length says (0 when it does not say)."""
    try:
        return max(0, int(request.headers.get("content-length") or 0))
    except ValueError:
        return 0


def _inspect(
    received: list[ReceivedFile],
) -> tuple[dict[str, ReceivedFile], list[Group], list[UploadFile]]:
    """The received files by stored name, the tasks to create, and the files refused."""
    names = stored_names([f.filename for f in received])
    files = [UploadFile(name, f.path, f.size, sniff(f.path) if f.size else None)
             for name, f in zip(names, received, strict=True)]
    return dict(zip(names, received, strict=True)), *plan(files)


def _refusal(file: UploadFile, received: ReceivedFile) -> ApiError:
    name = received.filename
    if file.size == 0:
        return ApiError(400, "empty_file", f"{name} is empty", file=name)
    suffix = file.name.rsplit(".", 1)[-1].lower()
    if suffix in _COMPANIONS:
        return ApiError(415, "unsupported_type",
                        f"{name} is {_COMPANIONS[suffix]} (no model here names it)", file=name)
    return ApiError(415, "unsupported_type",
                    f"{name} is not a mesh, texture or material Kiln can read", file=name)


def _check_supported(groups: list[Group], received: dict[str, ReceivedFile]) -> None:
    for group in groups:
        if group.format not in SUPPORTED:
            name = received[group.main].filename
            raise ApiError(415, "unsupported_type",
                           f"{name} is a {group.format.upper()} file, "
                           "which Kiln recognises but cannot process", file=name)


def _asked_priority(raw: str | None, signed_in: SignedIn) -> Priority | None:
    """The priority an upload asks for (None: let the size decide); only admins may ask for
    high."""
    if raw is None or raw.strip() == "":
        return None
    name = raw.strip().lower()
    if name not in PRIORITY_NAMES:
        raise ApiError(400, "bad_parameter", "priority must be high, default or low")
    priority = Priority.parse(name)
    if priority is Priority.HIGH and not signed_in.user.is_admin:
        raise ApiError(403, "forbidden_priority", "only admins may queue uploads at high priority")
    return priority


def _priority(asked: Priority | None, total: int, low_over: int) -> Priority:
    if asked is not None:
        return asked
    return Priority.LOW if low_over and total > low_over else Priority.DEFAULT


async def create_upload(request: Request) -> Response:
    signed_in = require_user(request)
    kiln = services(request)
    user = signed_in.user.id
    asked = _asked_priority(request.query_params.get("priority"), signed_in)
    declared = _declared_length(request)
    wait = await kiln.uploads.admit(user, declared)
    if wait:
        return retry_later(429, "rate_limited", "too many uploads for now; try again later", wait)
    quota = kiln.uploads.quota_bytes
    if quota and declared and await kiln.uploads.stored(user) + declared > quota:
        raise _over_quota(quota)  # before a byte is written
    form: dict[str, str] = {}
    try:
        received = await receive_files(
            request.stream(), request.headers.get("content-type"), kiln.storage,
            max_file_bytes=kiln.settings.max_upload_bytes,
            max_files=kiln.settings.max_files_per_upload,
            max_fields=kiln.settings.max_form_fields,
            min_rate=kiln.settings.upload_min_rate,
            rate_grace=kiln.settings.upload_rate_grace,
            form=form,
        )
    except UploadTooSlow as slow:
        # closing: the rest of the body would otherwise keep trickling into a kept-alive link
        response = error_response(408, slow.code, slow.message)
        response.headers["Connection"] = "close"
        return response
    total = sum(file.size for file in received)
    reserved = False
    try:
        await kiln.uploads.received(user, total)  # counted, whatever is refused below
        if "priority" in form:
            asked = _asked_priority(form["priority"], signed_in)
        priority = _priority(asked, total, kiln.settings.low_priority_bytes)
        if await kiln.uploads.reserve(user, total) is None:
            raise _over_quota(quota)
        reserved = True
        small = total <= INLINE_DISK_BYTES
        by_name, groups, refused = await disk_work(small, _inspect, received)
        if refused:
            raise _refusal(refused[0], by_name[refused[0].name])
        _check_supported(groups, by_name)
        batch = new_id()
        digests = [content_key(kind=group.kind, format=group.format,
                               files=[(name, by_name[name].digest.hexdigest())
                                      for name in group.files],
                               signature=kiln.dedup.signature) for group in groups]
        earlier = await kiln.dedup.find(user, digests)
        counted: set[str] = set()
        new = []
        for group, digest, reuse in zip(groups, digests, earlier, strict=True):
            fresh = [name for name in group.files if name not in counted]
            counted.update(fresh)
            new.append(NewTask(
                new_task_identity(owner=signed_in.user.id, session=signed_in.claims.session_id,
                                  batch=batch, kind=group.kind,
                                  filename=by_name[group.main].filename, priority=priority),
                group.format, sum(by_name[name].size for name in group.files),
                tuple(group.files), stored=sum(by_name[name].size for name in fresh),
                digest=digest, signature=kiln.dedup.signature_id, reuse=reuse))

        def adopt_all() -> None:
            for index, task in enumerate(new):
                kiln.storage.adopt(task.identity.task_id,
                                   [(name, by_name[name].path) for name in task.files])
                reuse = task.reuse
                if reuse is not None and not kiln.storage.link_artifacts(
                        reuse.id, task.identity.task_id, [a["name"] for a in reuse.artifacts]):
                    new[index] = replace(task, reuse=None)  # its artifacts are gone: run it

        await disk_work(small, adopt_all)  # links, and copies only where links fail
        await kiln.queue.submit_all(new)  # every task and its job in one round trip
        tasks = [{"task_id": task.identity.task_id, "filename": task.identity.filename,
                  "kind": task.identity.kind, "format": task.format, "size": task.size,
                  "files": list(task.files), "priority": priority.label,
                  "deduplicated_from": task.reuse.id if task.reuse else None} for task in new]
        reserved = False  # kept: the bytes stay counted
    finally:
        for file in received:
            with contextlib.suppress(OSError):
                file.path.unlink(missing_ok=True)
        if reserved:  # refused after the bytes were taken: give them back (in an outage the
            with contextlib.suppress(RedisError, OSError):  # count stays high, never low)
                await kiln.uploads.release(user, total)
    return JSONResponse({"batch_id": batch, "tasks": tasks}, status_code=202)


routes = [Route("/api/uploads", create_upload, methods=["POST"])]
