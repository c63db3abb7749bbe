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
from collections.abc import AsyncGenerator
from typing import Final

from starlette.responses import Response
from starlette.types import Receive, Scope, Send

END_STREAM: Final = "kiln.end_stream"
"""Key in a streaming request's scope["state"]: call it to end the stream cleanly (or, before
the stream has begun, set it to ENDED: it then ends as soon as it begins)."""
ENDED: Final = "ended"

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
        cached = cls.__dict__.get("_raw_headers")  # this class's own: a subclass may differ
        if cached is None:
            self.init_headers(HEADERS)
            cls._raw_headers = cached = self.raw_headers
        self.raw_headers = list(cached)  # a copy: a middleware may add to it

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        state = scope.setdefault("state", {})
        if scope["method"] == "HEAD" or state.get(END_STREAM) is ENDED:
            # HEAD, or a server that began to shut down before this stream began: headers and
            # an empty body (the client reconnects), and the body never starts
            await self.body_iterator.aclose()
            await send(self._start())
            await send({"type": "http.response.body", "body": b""})
            return
        stream = _Ending(asyncio.current_task())
        watcher = asyncio.create_task(_until_disconnect(receive, stream))
        watcher.add_done_callback(stream.watcher_done)
        state[END_STREAM] = stream.end_by_server
        started = False
        try:
            await send(self._start())
            started = True
            async for chunk in self.body_iterator:
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
        except (asyncio.CancelledError, Exception):
            # our own end, or an error that a library made of our cancel once the stream was
            # ending: the stream's normal end; anything else goes on up
            if not stream.settle():
                raise
        else:
            stream.settle()
        finally:
            # from here on, no cancel of ours lands (settle stopped them): one that does is the
            # server's, and goes on up once the body has been closed
            state.pop(END_STREAM, None)
            watcher.cancel()
            await asyncio.shield(self.body_iterator.aclose())
        if started and not stream.client_gone:
            await send({"type": "http.response.body", "body": b""})

    def _start(self) -> dict[str, object]:
        return {"type": "http.response.start", "status": self.status_code,
                "headers": self.raw_headers}


class _Ending:
    """Ends a stream from outside its task: by cancelling the task, again every RECANCEL
    seconds until the stream settles. A single cancel is not enough: on Python 3.11
    `asyncio.wait_for` loses a cancel that lands as its wait ends (cpython gh-86296), and
    redis-py sends every command that way, so a stream whose client went during its first Redis
    command would live on."""

    __slots__ = ("_again", "_ended", "_sent", "_settled", "_task", "client_gone")

    def __init__(self, task: asyncio.Task[object] | None) -> None:
        self._task = task
        self._again: asyncio.TimerHandle | None = None
        self._ended = False
        self._settled = False
        self._sent = 0
        self.client_gone = False

    def end_by_client(self) -> None:
        self.client_gone = True
        self._end()

    def end_by_server(self) -> None:
        self._end()

    def watcher_done(self, watcher: asyncio.Task[None]) -> None:
        """A watcher that failed can no longer tell when the client goes: end the stream."""
        if not watcher.cancelled() and watcher.exception() is not None:
            self.end_by_client()

    def _end(self) -> None:
        if not self._ended:
            self._ended = True
            self._cancel()

    def _cancel(self) -> None:
        self._again = None
        task = self._task
        if task is None or task.done() or self._settled:
            return
        task.cancel()
        self._sent += 1
        self._again = asyncio.get_running_loop().call_later(RECANCEL, self._cancel)

    def settle(self) -> bool:
        """Called by the stream's own task once it leaves its body: no more cancels are sent,
        those of ours that landed (or were lost) are taken back; whether the stream was ended
        by us alone (not also by the server's own cancel)."""
        self._settled = True
        if self._again is not None:
            self._again.cancel()
            self._again = None
        if self._task is None:
            return False
        left = self._task.cancelling()
        for _ in range(min(self._sent, left)):
            left = self._task.uncancel()
        self._sent = 0
        return self._ended and left == 0


async def _until_disconnect(receive: Receive, stream: _Ending) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass
    stream.end_by_client()
