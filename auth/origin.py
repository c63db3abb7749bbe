"""Cross-site request forgery: a state-changing request a browser could have been made to send
by another site is refused (403 `cross_origin`) unless it comes from Kiln's own origin or one of
KILN_ALLOWED_ORIGINS.

Checked: every method but GET, HEAD and OPTIONS, unless the request carries an Authorization
header (a browser adds none to a cross-site request by itself, and one with it set needs a CORS
preflight, which Kiln never grants). That covers everything authenticated by a cookie, the
sign-in (login CSRF) and refresh and sign-out (the refresh cookie). A request with neither
`Origin` nor `Sec-Fetch-Site` (curl with a cookie jar, the CLI) is not a browser's and passes.
"""

from __future__ import annotations

from typing import cast

from starlette.datastructures import Headers
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_DEFAULT_PORTS = {"http": "80", "https": "443"}
# What Sec-Fetch-Site may say of a request with no Origin; "same-site" is another origin too.
_OWN_FETCH_SITES = frozenset({"same-origin", "none"})


def normal_origin(origin: str) -> str:
    """`scheme://host[:port]` lowercased, without a trailing slash or the scheme's default port."""
    origin = origin.strip().rstrip("/").lower()
    scheme, sep, authority = origin.partition("://")
    host, colon, port = authority.rpartition(":")
    if sep and colon and "]" not in port and _DEFAULT_PORTS.get(scheme) == port:
        return f"{scheme}://{host}"
    return origin


def own_origin(scope: Scope, headers: Headers, cookie_secure: bool) -> str | None:
    """The origin this request was sent to, by its Host header; None without one."""
    host = headers.get("host")
    if not host:
        return None
    secure = cookie_secure or scope.get("scheme") in ("https", "wss")
    return normal_origin(f"{'https' if secure else 'http'}://{host}")


def is_cross_origin(scope: Scope, headers: Headers, allowed: tuple[str, ...],
                    cookie_secure: bool) -> bool:
    """True if a browser says this request came from a page of an origin not trusted here."""
    origin = headers.get("origin")
    if origin is None:
        return headers.get("sec-fetch-site", "same-origin").lower() not in _OWN_FETCH_SITES
    presented = normal_origin(origin)
    if presented == own_origin(scope, headers, cookie_secure):
        return False
    return presented not in {normal_origin(item) for item in allowed}


class OriginMiddleware:
    """Refuses cross-origin state-changing requests; reads the settings from the lifespan state
    (`state["kiln"].settings`), so it works however the app was built."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in SAFE_METHODS:
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        if "authorization" not in headers:
            allowed, cookie_secure = _policy(scope)
            if is_cross_origin(scope, headers, allowed, cookie_secure):
                refusal = JSONResponse(
                    {"error": "cross_origin",
                     "message": "this request came from another site's page; it was refused"},
                    status_code=403)
                await refusal(scope, receive, send)
                return
        await self.app(scope, receive, send)


def _policy(scope: Scope) -> tuple[tuple[str, ...], bool]:
    services = cast(dict[str, object], scope.get("state") or {}).get("kiln")
    settings = getattr(services, "settings", None)
    if settings is None:  # no lifespan state (yet): only the request's own origin is trusted
        return (), False
    return tuple(settings.allowed_origins), bool(settings.cookie_secure)
