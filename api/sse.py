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
from collections.abc import AsyncGenerator
from typing import Final

from starlette.responses import Response
from starlette.types import Receive, Scope, Send

END_STREAM: Final = "kiln.end_stream"
"""Key in a streaming request's scope["state"]: call it to end the stream cleanly."""

RECANCEL: Final = 0.1
"""Seconds between two cancels of a stream that is ending but has not noticed yet."""

HEADERS: Final = {"Cache-Control": "no-store", "Connection": "keep-alive",
                  "X-Accel-Buffering": "no"}  # no-store: no proxy buffers or caches the stream


class EventStream(Response):
    """`text/event-stream` from an async generator of encoded messages, until the generator
    ends, the client goes, or the server shuts down. HEAD gets the headers and no body."""

    media_type = "text/event-stream"

    _raw_headers: list[tuple[bytes, bytes]] | None = None  # encoded once, shared by every stream

    def __init__(self, body: AsyncGenerator[bytes, None]) -> None:
        self.body_iterator = body
        self.status_code = 200
        self.background = None
        cls = type(self)
        if cls._raw_headers is None:
            self.init_headers(HEADERS)
            cls._raw_headers = self.raw_headers
        self.raw_headers = list(cls._raw_headers)  # a copy: a middleware may add to it

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["method"] == "HEAD":
            await self.body_iterator.aclose()
            await send(self._start())
            await send({"type": "http.response.body", "body": b""})
            return
        stream = _Ending(asyncio.current_task())
        watcher = asyncio.create_task(_until_disconnect(receive, stream))
        scope.setdefault("state", {})[END_STREAM] = stream.end_by_server
        try:
            await send(self._start())
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

    def _start(self) -> dict[str, object]:
        return {"type": "http.response.start", "status": self.status_code,
                "headers": self.raw_headers}


class _Ending:
    """Ends a stream from outside its task: by cancelling the task, again every RECANCEL
    seconds until the cancel has reached the response. A single cancel is not enough: on
    Python 3.11 `asyncio.wait_for` loses a cancel that lands as its wait ends (cpython
    gh-86296), and redis-py waits that way for every command it sends, so a stream whose client
    went in the middle of its first Redis command would live on."""

    __slots__ = ("_ended", "_sent", "_task", "client_gone", "received")

    def __init__(self, task: asyncio.Task[object] | None) -> None:
        self._task = task
        self._ended = False
        self._sent = 0
        self.client_gone = False
        self.received = False

    def end_by_client(self) -> None:
        self.client_gone = True
        self._end()

    def end_by_server(self) -> None:
        self._end()

    def _end(self) -> None:
        if not self._ended:
            self._ended = True
            self._cancel()

    def _cancel(self) -> None:
        task = self._task
        if task is None or task.done() or self.received:
            return
        task.cancel()
        self._sent += 1
        asyncio.get_running_loop().call_later(RECANCEL, self._cancel)

    def was_ended(self) -> bool:
        """Whether the cancel that reached the stream was ours alone (not also the server's);
        called once, where the stream catches it."""
        self.received = True
        if not self._ended or self._task is None:
            return False
        left = self._task.cancelling()
        for _ in range(min(self._sent, left)):
            left = self._task.uncancel()
        return left == 0


async def _until_disconnect(receive: Receive, stream: _Ending) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass
    stream.end_by_client()
