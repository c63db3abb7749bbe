"""Sign in, refresh and sign out: an access token (body and cookie) and a refresh cookie."""

from __future__ import annotations

import time

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

import keys
from api.deps import read_json, require_user, services
from api.errors import ApiError
from auth.backend import COOKIE_NAME, SignedIn
from auth.refresh import COOKIE_NAME as REFRESH_COOKIE
from auth.refresh import COOKIE_PATH as REFRESH_PATH
from auth.refresh import RefreshSessions
from auth.tokens import IssuedToken
from ids import new_id


def _session_expired() -> ApiError:
    return ApiError(401, "session_expired", "the session has ended; sign in again")


def _sessions(request: Request) -> RefreshSessions:
    kiln = services(request)
    return RefreshSessions(kiln.redis, kiln.settings.session_ttl, kiln.settings.refresh_grace)


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
    body = await read_json(request)
    name, password = body.get("username"), body.get("password")
    if not isinstance(name, str) or not isinstance(password, str) or not name or not password:
        raise ApiError(400, "malformed_login", 'send {"username": ..., "password": ...}')
    kiln = services(request)
    user = await kiln.accounts.authenticate(name, password[:4096])
    if user is None:
        raise ApiError(401, "invalid_credentials", "wrong user name or password")
    session_id = new_id()
    issued = kiln.tokens.issue(user.id, session_id)
    return _token_response(request, issued, await _sessions(request).start(user.id, session_id))


async def _revoke(request: Request, signed_in: SignedIn) -> None:
    ttl = max(1, signed_in.claims.expires_at - int(time.time()) + 1)
    await services(request).redis.set(keys.revoked_token(signed_in.claims.token_id), "1", ex=ttl)


async def refresh(request: Request) -> Response:
    """A new access token for the same session, from a valid access token or, once it has
    expired, from the refresh cookie; either way the refresh secret is rotated."""
    kiln = services(request)
    sessions = _sessions(request)
    if isinstance(request.user, SignedIn):
        signed_in = request.user
        user_id, session_id = signed_in.user.id, signed_in.claims.session_id
        issued = kiln.tokens.issue(user_id, session_id)
        cookie = await sessions.start(user_id, session_id)
        await _revoke(request, signed_in)
        return _token_response(request, issued, cookie)
    presented = request.cookies.get(REFRESH_COOKIE)
    renewal = await sessions.renew(presented) if presented else None
    if renewal is None:
        raise _session_expired()
    if await kiln.accounts.get(renewal.user_id) is None:
        await sessions.end(renewal.session_id)
        raise _session_expired()
    issued = kiln.tokens.issue(renewal.user_id, renewal.session_id)
    return _token_response(request, issued, renewal.cookie)


async def logout(request: Request) -> Response:
    """End the session: its access token and its refresh credential (either one is enough)."""
    sessions = _sessions(request)
    if isinstance(request.user, SignedIn):
        await _revoke(request, request.user)
        await sessions.end(request.user.claims.session_id)
    else:
        presented = request.cookies.get(REFRESH_COOKIE)
        if not presented or not await sessions.end_by_cookie(presented):
            raise _session_expired()
    secure = services(request).settings.cookie_secure
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
