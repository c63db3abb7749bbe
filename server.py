"""Composition root of the web process: `build_app(settings) -> Starlette`; `app` for uvicorn."""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.authentication import AuthenticationMiddleware
from starlette.routing import Mount
from starlette.staticfiles import StaticFiles

from api import auth, batches, events, health, tasks, uploads
from api.api_only import ApiOnly
from api.errors import EXCEPTION_HANDLERS
from api.http_limits import HeadLimitsMiddleware
from api.security_headers import SecurityHeadersMiddleware
from api.unavailable import RedisUnavailableMiddleware
from auth.backend import TokenBackend
from auth.origin import OriginMiddleware
from redis_server import redis_for
from services import open_services
from settings import Settings
from worker.runner import running_worker

log = logging.getLogger("kiln")

STATIC_DIR = Path(__file__).resolve().parent / "static"


def build_app(settings: Settings | None = None, *,
              pipelines: Mapping[str, str] | None = None) -> Starlette:
    """The Kiln web app; its lifespan owns Redis (private when REDIS_URL is unset), the hub and
    the embedded worker. Settings are read from the environment at startup when not given."""

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[dict[str, Any]]:
        resolved = settings or Settings.from_env()
        async with contextlib.AsyncExitStack() as stack:
            url = await stack.enter_async_context(redis_for(resolved, own=True, log=log.info))
            services = await stack.enter_async_context(open_services(resolved, url))
            password = await services.accounts.ensure_admin()
            if password is not None:
                _announce_admin(password)
            if resolved.embedded_worker:
                await stack.enter_async_context(running_worker(services, pipelines=pipelines))
            log.info("kiln ready (data in %s)", resolved.data_dir)
            yield {"kiln": services}

    return Starlette(
        routes=[*auth.routes, *uploads.routes, *tasks.routes, *batches.routes, *events.routes,
                *health.routes,
                Mount("/", StaticFiles(directory=STATIC_DIR, html=True), name="static")],
        # RedisUnavailableMiddleware stays first after the headers: it turns a Redis failure in
        # any middleware below it into 503, and authentication runs only for /api paths
        middleware=[Middleware(SecurityHeadersMiddleware), Middleware(RedisUnavailableMiddleware),
                    Middleware(HeadLimitsMiddleware),
                    Middleware(OriginMiddleware),
                    Middleware(ApiOnly, middleware=AuthenticationMiddleware,
                               backend=TokenBackend())],
        exception_handlers=EXCEPTION_HANDLERS,
        lifespan=lifespan,
    )


def _announce_admin(password: str) -> None:
    """Shown once, on the terminal only (not through logging, which may be shipped elsewhere)."""
    print(
        "\n  First start: created the user 'admin' with the password\n"
        f"      {password}\n"
        "  It is shown only this once. Add more users with `kiln users add NAME`.\n",
        file=sys.stderr, flush=True,
    )


app = build_app()
