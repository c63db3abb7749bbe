"""Sign in, refresh and sign out: an access token (body and cookie) and a refresh cookie."""

from __future__ import annotations

import asyncio

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from api.deps import read_json, require_user, services
from api.errors import ApiError, retry_later
from auth.backend import COOKIE_NAME, SignedIn
from auth.hasher import HasherBusy
from auth.refresh import COOKIE_NAME as REFRESH_COOKIE
from auth.refresh import COOKIE_PATH as REFRESH_PATH
from auth.refresh import RefreshSessions
from auth.revocation import revoke
from auth.tokens import IssuedToken
from records.ids import new_id

BUSY_RETRY_AFTER = 1


def _session_expired(message: str = "the session has ended; sign in again") -> ApiError:
    return ApiError(401, "session_expired", message)


def _sessions(request: Request) -> RefreshSessions:
    kiln = services(request)
    return RefreshSessions(kiln.redis, kiln.settings.session_ttl, kiln.settings.refresh_grace,
                           token_ttl=kiln.settings.token_ttl)


def _token_response(request: Request, issued: IssuedToken, refresh_cookie: str | None) -> Response:
    settings = services(request).settings
    response = JSONResponse({
        "access_token": issued.token,
        "token_type": "bearer",
        "expires_in": issued.expires_in,
    }, headers={"Cache-Control": "no-store"})
    response.set_cookie(
        COOKIE_NAME, issued.token, max_age=issued.expires_in, path="/", httponly=True,
        samesite="strict", secure=settings.cookie_secure,
    )
    if refresh_cookie is not None:
        response.set_cookie(
            REFRESH_COOKIE, refresh_cookie, max_age=settings.session_ttl, path=REFRESH_PATH,
            httponly=True, samesite="strict", secure=settings.cookie_secure,
        )
    return response


async def login(request: Request) -> Response:
    """Check a user name and password: throttled per name and per address, hashed on the
    process's bounded hasher (busy: 503 at once), the same for a missing user as a wrong one."""
    media_type = request.headers.get("content-type", "").partition(";")[0].strip().lower()
    if media_type != "application/json":
        # also keeps a cross-site HTML form from signing a browser in
        raise ApiError(415, "unsupported_type", "send the sign-in as application/json")
    body = await read_json(request)
    name, password = body.get("username"), body.get("password")
    if not isinstance(name, str) or not isinstance(password, str) or not name or not password:
        raise ApiError(400, "malformed_login", 'send {"username": ..., "password": ...}')
    kiln = services(request)
    address = request.client.host if request.client else None
    verdict = await kiln.logins.check(name, address)
    if verdict.retry_after:
        return retry_later(429, "rate_limited", "too many failed sign-ins; try again later",
                            verdict.retry_after)
    if verdict.delay:
        await asyncio.sleep(verdict.delay)
    try:
        user = await kiln.accounts.authenticate(name, password[:4096])
    except HasherBusy as busy:
        return retry_later(503, "busy", str(busy), BUSY_RETRY_AFTER)
    if user is None:
        await kiln.logins.failed(name, address)
        raise ApiError(401, "invalid_credentials", "wrong user name or password")
    await kiln.logins.succeeded(name)
    session_id = new_id()
    issued = kiln.tokens.issue(user.id, session_id)
    return _token_response(request, issued, await _sessions(request).start(user.id, session_id))


async def refresh(request: Request) -> Response:
    """A new access token for the same session, from the refresh cookie only (an access token,
    stolen or not, cannot extend itself), which is rotated; an access token of the same session
    sent along is retired."""
    kiln = services(request)
    sessions = _sessions(request)
    presented = request.cookies.get(REFRESH_COOKIE)
    if not presented:
        raise _session_expired("a refresh needs the session's refresh cookie; sign in again")
    renewal = await sessions.renew(presented)
    if renewal is None:
        raise _session_expired()
    if await kiln.accounts.get(renewal.user_id) is None:
        await sessions.end(renewal.session_id)
        raise _session_expired()
    signed_in = request.user
    if isinstance(signed_in, SignedIn) and signed_in.claims.session_id == renewal.session_id:
        await revoke(kiln.redis, kiln.settings.token_ttl, token=signed_in.claims)
    issued = kiln.tokens.issue(renewal.user_id, renewal.session_id)
    return _token_response(request, issued, renewal.cookie)


async def logout(request: Request) -> Response:
    """End the session, every access token of it and its refresh credential; either the token or
    the refresh cookie is enough (both, of two sessions: both end)."""
    kiln = services(request)
    sessions = _sessions(request)
    ended: set[str] = set()
    if isinstance(request.user, SignedIn):
        await revoke(kiln.redis, kiln.settings.token_ttl, token=request.user.claims)
        ended.add(request.user.claims.session_id)
    presented = request.cookies.get(REFRESH_COOKIE)
    by_cookie = await sessions.end_by_cookie(presented) if presented else None
    if by_cookie is not None:
        ended.add(by_cookie)
    if not ended:
        raise _session_expired()
    for session_id in ended:
        await sessions.end(session_id)
        await revoke(kiln.redis, kiln.settings.token_ttl, session_id=session_id)
    secure = kiln.settings.cookie_secure
    response = Response(status_code=204)
    response.delete_cookie(COOKIE_NAME, path="/", httponly=True, samesite="strict", secure=secure)
    response.delete_cookie(REFRESH_COOKIE, path=REFRESH_PATH, httponly=True, samesite="strict",
                           secure=secure)
    return response


async def me(request: Request) -> Response:
    signed_in = require_user(request)
    return JSONResponse({
        "user_id": signed_in.user.id, "username": signed_in.user.name,
        "role": signed_in.user.role, "session_id": signed_in.claims.session_id,
        "expires_at": signed_in.claims.expires_at,
    })


routes = [
    Route("/api/auth/login", login, methods=["POST"]),
    Route("/api/auth/refresh", refresh, methods=["POST"]),
    Route("/api/auth/logout", logout, methods=["POST"]),
    Route("/api/auth/me", me, methods=["GET"]),
]
