"""Kiln's Server-Sent Events response: one stream, one task, a few hundred bytes of its own.

sse-starlette's `EventSourceResponse` runs an anyio task group of four tasks per response (the
body, pings, the client's disconnect, the server's exit), which is most of the 45 KB an idle
stream holds there. Here the request's own task sends the body, and pings come from the body
itself (it yields a keepalive when it has been idle), so one small task more is left: the one
that waits for the client to go. A client that goes, or a server that starts shutting down,
cancels the request's task; that cancel is the stream's normal end, and the body is then closed
so its cleanup (unsubscribing, giving back the stream's slot) runs. sse-starlette still encodes
every message (`ServerSentEvent`).

A server shutdown reaches a stream through `END_STREAM`, a callable the response puts in the
request's `scope["state"]`: Kiln's uvicorn protocol (`api.http_limits`) calls it when uvicorn
asks the connection to shut down, so the stream ends at once with a clean end of body and the
browser reconnects, instead of holding the shutdown for its whole grace period.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, Mapping
from typing import Final

from starlette.responses import Response
from starlette.types import Receive, Scope, Send

END_STREAM: Final = "kiln.end_stream"
"""Key in a streaming request's scope["state"]: call it to end the stream cleanly."""

HEADERS: Final = {"Cache-Control": "no-store", "Connection": "keep-alive",
                  "X-Accel-Buffering": "no"}  # no-store: no proxy buffers or caches the stream


class EventStream(Response):
    """`text/event-stream` from an async generator of encoded messages, until the generator
    ends, the client goes, or the server shuts down. HEAD gets the headers and no body."""

    media_type = "text/event-stream"

    def __init__(self, body: AsyncGenerator[bytes, None], *,
                 headers: Mapping[str, str] | None = None) -> None:
        self.body_iterator = body
        self.status_code = 200
        self.background = None
        self.init_headers({**HEADERS, **(headers or {})})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        start = {"type": "http.response.start", "status": self.status_code,
                 "headers": self.raw_headers}
        if scope["method"] == "HEAD":
            await self.body_iterator.aclose()
            await send(start)
            await send({"type": "http.response.body", "body": b""})
            return
        stream = _Ending(asyncio.current_task())
        watcher = asyncio.create_task(_until_disconnect(receive, stream))
        scope.setdefault("state", {})[END_STREAM] = stream.end_by_server
        try:
            await send(start)
            async for chunk in self.body_iterator:
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
        except asyncio.CancelledError:
            if not stream.was_ended():
                raise
        finally:
            scope["state"].pop(END_STREAM, None)
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.shield(self.body_iterator.aclose())
        if not stream.client_gone:
            await send({"type": "http.response.body", "body": b""})


class _Ending:
    """Ends a stream from outside its task: by cancelling the task, once."""

    __slots__ = ("_ended", "_task", "client_gone")

    def __init__(self, task: asyncio.Task[object] | None) -> None:
        self._task = task
        self._ended = False
        self.client_gone = False

    def end_by_client(self) -> None:
        self.client_gone = True
        self._end()

    def end_by_server(self) -> None:
        self._end()

    def _end(self) -> None:
        if not self._ended and self._task is not None:
            self._ended = True
            self._task.cancel()

    def was_ended(self) -> bool:
        """Whether a cancel that reached the stream was ours alone (not also the server's)."""
        return self._ended and self._task is not None and self._task.uncancel() == 0


async def _until_disconnect(receive: Receive, stream: _Ending) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass
    stream.end_by_client()
