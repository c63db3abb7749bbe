"""GET /api/events: the caller's session (or, with ?scope=user, all their sessions) as SSE."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncGenerator

from sse_starlette import ServerSentEvent
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from api.deps import require_user, services
from api.errors import ApiError, error_response
from api.sse import EventStream
from api.views import task_view
from records import keys
from streaming.feed import Snapshot, parse_cursor
from streaming.hub import Overflow
from streaming.slots import StreamsFull, StreamSlot


class _SlotStream(EventStream):
    """An event stream that holds its session's slot from the first byte to the last (HEAD and
    a client gone before the first event included)."""

    def __init__(self, slot: StreamSlot, body: AsyncGenerator[bytes, None]) -> None:
        super().__init__(body)
        self.slot = slot

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async with self.slot.held():
            await super().__call__(scope, receive, send)


async def stream_events(request: Request) -> Response:
    signed_in = require_user(request)
    kiln = services(request)
    scope = request.query_params.get("scope", "session")
    if scope == "session":
        stream = keys.session_stream(signed_in.claims.session_id)
    elif scope == "user":
        stream = keys.user_stream(signed_in.user.id)
    else:
        raise ApiError(400, "bad_parameter", "scope is 'session' or 'user'")
    raw_cursor = request.headers.get("last-event-id")
    if raw_cursor is None:
        raw_cursor = request.query_params.get("last_event_id")
    cursor = parse_cursor(raw_cursor)
    expires_at = signed_in.claims.expires_at
    try:
        slot = await kiln.slots.take(signed_in.claims.session_id, kiln.settings.sse_per_session)
    except StreamsFull as full:
        response = error_response(429, "too_many_streams",
                                  f"{full}: close one (each browser tab holds one)")
        response.headers["Retry-After"] = str(full.retry_after)
        return response

    async def events() -> AsyncGenerator[bytes, None]:
        # ends when the token expires: the client refreshes it and resumes from its cursor
        feed = kiln.feed.follow(stream, cursor, idle=kiln.settings.sse_ping,
                                until=_loop_deadline(expires_at))
        try:
            async for event in feed:
                if event is None:
                    yield PING
                elif isinstance(event, Snapshot):
                    yield _snapshot_event(event)
                else:
                    yield ServerSentEvent(data=event.data, event=event.event,
                                          id=str(event.id)).encode()
        except Overflow:
            return  # too slow to keep up: the client reconnects with Last-Event-ID
        finally:
            await feed.aclose()

    return _SlotStream(slot, events())


def _snapshot_event(snapshot: Snapshot) -> bytes:
    data = json.dumps({"type": "snapshot", "seq": snapshot.id,
                       "tasks": [task_view(record) for record in snapshot.records]},
                      separators=(",", ":"))
    return ServerSentEvent(data=data, event="snapshot", id=str(snapshot.id)).encode()


def _loop_deadline(expires_at: int) -> float:
    return asyncio.get_running_loop().time() + max(0.0, expires_at - time.time())


PING = ServerSentEvent(comment="ping").encode()
"""Sent after KILN_SSE_PING seconds without an event: keeps proxies from closing the stream."""

routes = [Route("/api/events", stream_events, methods=["GET"])]
