"""GET /healthz: is this process up and can it reach Redis (no sign-in; says nothing private)."""

from __future__ import annotations

from redis.exceptions import RedisError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from api.deps import services


async def health(request: Request) -> Response:
    kiln = services(request)
    try:
        await kiln.redis.ping()
    except (RedisError, OSError):
        return JSONResponse({"status": "degraded", "redis": "unreachable"}, status_code=503)
    return JSONResponse({"status": "ok", "redis": "ok",
                         "stream_channels": kiln.hub.channel_count,
                         "stream_listeners": kiln.hub.listener_count})


routes = [Route("/healthz", health, methods=["GET"])]
