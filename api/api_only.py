"""Run a middleware only for /api requests, so the static page never waits on what it does."""

from __future__ import annotations

from typing import Any

from starlette.types import ASGIApp, Receive, Scope, Send

PREFIX = "/api"


def is_api_path(path: str) -> bool:
    return path == PREFIX or path.startswith(PREFIX + "/")


class ApiOnly:
    """`Middleware(ApiOnly, middleware=AuthenticationMiddleware, backend=...)`: requests outside
    /api (the page, /healthz) skip the wrapped middleware; the page's session cookie then costs
    no Redis read, and the page keeps loading while Redis is stalled."""

    def __init__(self, app: ASGIApp, /, *, middleware: type[Any], **options: Any) -> None:
        self.app = app
        self.wrapped: ASGIApp = middleware(app, **options)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket") and is_api_path(scope["path"]):
            await self.wrapped(scope, receive, send)
        else:
            await self.app(scope, receive, send)
