"""GET /healthz: is this process up and can it reach Redis (no sign-in; says nothing private)."""

from __future__ import annotations

import asyncio

from redis.exceptions import RedisError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from api.deps import services


async def health(request: Request) -> Response:
    """200 ok, or 503 degraded when Redis does not answer a PING within the Redis timeout or
    the event streams' pub/sub connection is being re-established."""
    kiln = services(request)
    try:
        # the socket timeout bounds each step; this bounds connect + health check + PING
        async with asyncio.timeout(kiln.settings.redis_timeout):
            await kiln.redis.ping()
    except (RedisError, OSError, TimeoutError):
        return _degraded("unreachable", "reconnecting" if not kiln.hub.connected else "ok")
    if not kiln.hub.connected:
        return _degraded("ok", "reconnecting")
    return JSONResponse({"status": "ok", "redis": "ok", "streams": "ok",
                         "stream_channels": kiln.hub.channel_count,
                         "stream_listeners": kiln.hub.listener_count},
                        headers={"Cache-Control": "no-store"})


def _degraded(redis: str, streams: str) -> Response:
    return JSONResponse({"status": "degraded", "redis": redis, "streams": streams},
                        status_code=503, headers={"Cache-Control": "no-store"})


routes = [Route("/healthz", health, methods=["GET"])]
