"""Limits on a request's head (bytes, header lines, time to arrive), enforced where it is parsed;
and the end of event streams when the server shuts down."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any, ClassVar

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from api.sse import END_STREAM, ENDED
from settings import Settings

LINGER = 2.0
"""Seconds a refused connection keeps reading (and dropping) what the client still sends, so the
431 is not lost to a reset; then it is closed whatever the client does."""


@dataclass(frozen=True, slots=True)
class HeadLimits:
    max_bytes: int
    max_lines: int
    timeout: float

    @classmethod
    def of(cls, settings: Settings) -> HeadLimits:
        return cls(settings.max_header_bytes, settings.max_header_count, settings.header_timeout)


DEFAULT_LIMITS = HeadLimits.of(Settings())


def _refusal_body(message: str) -> bytes:
    return json.dumps({"error": "headers_too_large", "message": message}).encode()


class _TooManyLines(Exception):
    """Raised in the parser's callback to stop it at once; becomes a 431."""


class LimitedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a bounded request head.

    Bytes received while a request's head is incomplete are counted and never fed to the parser
    past `max_bytes` (so a 1 MiB header line is never buffered whole); header lines are counted as
    the parser reports them. Either limit answers 431 and closes. A head must also be complete
    within `timeout` of the connection opening or of the first byte of a later request on it;
    uvicorn's own keep-alive timer covers the idle time between requests. Bytes of a pipelined
    request that arrive in the same read as the end of the previous one are charged to neither,
    so a pipelined head may hold up to one read beyond `max_bytes` before it is refused.
    """

    limits: ClassVar[HeadLimits] = DEFAULT_LIMITS

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._in_head = True
        self._head_bytes = 0
        self._head_lines = 0
        self._deadline: asyncio.TimerHandle | None = None
        self._refused = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)  # type: ignore[arg-type]
        self._arm_deadline()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_deadline()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return  # lingering after a 431: drop the rest of the oversized head
        while data:
            if not self._in_head:
                super().data_received(data)
                return
            if self._deadline is None:
                self._arm_deadline()
            room = self.limits.max_bytes - self._head_bytes
            head, data = data[:room], data[room:]
            self._head_bytes += len(head)
            super().data_received(head)
            if self._refused or self.transport.is_closing():
                return
            if self._in_head and self._head_bytes >= self.limits.max_bytes:
                self._refuse(f"the request head is over {self.limits.max_bytes} bytes")
                return

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_head = True
        self._head_lines = 0

    def on_header(self, name: bytes, value: bytes) -> None:
        self._head_lines += 1
        if self._head_lines > self.limits.max_lines:
            raise _TooManyLines
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._head_bytes = 0
        self._disarm_deadline()
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._in_head = True

    def shutdown(self) -> None:
        """uvicorn's graceful shutdown of this connection; an event stream in progress on it is
        ended now, cleanly (api.sse.END_STREAM), rather than at the end of the grace period."""
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete:
            state = cycle.scope.setdefault("state", {})
            end = state.get(END_STREAM)
            if callable(end):
                end()
            else:  # a request that may yet become a stream (still signing in, say)
                state[END_STREAM] = ENDED
        super().shutdown()

    def send_400_response(self, msg: str) -> None:
        if self._head_lines > self.limits.max_lines:
            self._refuse(f"the request has more than {self.limits.max_lines} header lines")
        else:
            super().send_400_response(msg)

    def _refuse(self, message: str) -> None:
        self._refused = True
        self._disarm_deadline()
        body = _refusal_body(message)
        head = [STATUS_LINE[431]]
        for name, value in self.server_state.default_headers:
            head += [name, b": ", value, b"\r\n"]
        head += [b"content-type: application/json\r\n",
                 b"content-length: %d\r\n" % len(body), b"connection: close\r\n\r\n", body]
        self.transport.write(b"".join(head))
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self.loop.call_later(LINGER, self.transport.close)

    def _arm_deadline(self) -> None:
        self._disarm_deadline()
        self._deadline = self.loop.call_later(self.limits.timeout, self._head_too_slow)

    def _disarm_deadline(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _head_too_slow(self) -> None:
        self._deadline = None
        if self._in_head and not self.transport.is_closing():
            self.transport.close()


def protocol_class(settings: Settings) -> type[LimitedHttpToolsProtocol]:
    """The protocol to give uvicorn as `http=`, bound to these settings' limits."""

    class Configured(LimitedHttpToolsProtocol):
        limits = HeadLimits.of(settings)

    return Configured


class HeadLimitsMiddleware:
    """The same limits checked on the parsed headers: a second layer for servers run without
    `protocol_class` (plain `uvicorn server:app`), where the head is already buffered."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            limits = _limits_of(scope)
            headers = scope["headers"]
            if len(headers) > limits.max_lines:
                message = f"the request has more than {limits.max_lines} header lines"
            elif sum(len(n) + len(v) + 4 for n, v in headers) > limits.max_bytes:
                message = f"the request head is over {limits.max_bytes} bytes"
            else:
                message = ""
            if message:
                response = JSONResponse({"error": "headers_too_large", "message": message},
                                        status_code=431, headers={"Connection": "close"})
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


def _limits_of(scope: Scope) -> HeadLimits:
    """The running app's settings (its lifespan state), else the defaults."""
    settings = getattr(scope.get("state", {}).get("kiln"), "settings", None)
    return HeadLimits.of(settings) if isinstance(settings, Settings) else DEFAULT_LIMITS
