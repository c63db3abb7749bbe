"""Redis failures anywhere in a request (middleware included) become 503 `unavailable`, not 500.

Route handlers already map Redis errors through api/errors.py, but an error raised in middleware
(the authentication backend reads Redis for every request with a token) or after a streaming
response started never reaches those handlers: Starlette's ServerErrorMiddleware would answer
500 and log a traceback. This middleware sits just inside it and catches them first.
"""

from __future__ import annotations

import logging

from redis.exceptions import RedisError
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.errors import RETRY_AFTER, unavailable_response

log = logging.getLogger("kiln.api")


def is_redis_failure(exc: BaseException) -> bool:
    """A Redis error or timeout, also when wrapped: in an exception group (anyio task groups,
    as in sse-starlette) or as the cause of Starlette's "response already started" error."""
    if isinstance(exc, RedisError | ConnectionError):
        return True
    if isinstance(exc, BaseExceptionGroup):
        return all(is_redis_failure(inner) for inner in exc.exceptions)
    if isinstance(exc, RuntimeError) and exc.__cause__ is not None:
        return is_redis_failure(exc.__cause__)
    return False


class RedisUnavailableMiddleware:
    """Pure ASGI: before the response started, a Redis failure answers 503 JSON with
    Retry-After; after it started (an event stream), the body is ended cleanly so the client
    reconnects. Either way one warning line, no traceback."""

    def __init__(self, app: ASGIApp, *, retry_after: int = RETRY_AFTER) -> None:
        self.app = app
        self.retry_after = retry_after

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = finished = False

        async def tracking_send(message: Message) -> None:
            nonlocal started, finished
            if message["type"] == "http.response.start":
                started = True
            elif message["type"] == "http.response.body" and not message.get("more_body"):
                finished = True
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except BaseException as exc:
            if not is_redis_failure(exc):
                raise
            log.warning("Redis unavailable during %s %s: %s", scope["method"], scope["path"],
                        _describe(exc))
            if not started:
                response = unavailable_response(self.retry_after)
                await response(scope, receive, send)
            elif not finished:
                await send({"type": "http.response.body", "body": b"", "more_body": False})


def _describe(exc: BaseException) -> str:
    while True:
        if isinstance(exc, BaseExceptionGroup):
            exc = exc.exceptions[0]
        elif isinstance(exc, RuntimeError) and exc.__cause__ is not None:
            exc = exc.__cause__
        else:
            return type(exc).__name__
