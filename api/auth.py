"""Sign in, refresh and sign out: tokens in the JSON body and in an HttpOnly SameSite cookie."""

from __future__ import annotations

import time

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

import keys
from api.deps import read_json, require_user, services
from api.errors import ApiError
from auth.backend import COOKIE_NAME
from auth.tokens import IssuedToken
from ids import new_id


def _token_response(request: Request, issued: IssuedToken) -> JSONResponse:
    response = JSONResponse({
        "access_token": issued.token,
        "token_type": "bearer",
        "expires_in": issued.expires_in,
    }, headers={"Cache-Control": "no-store"})
    response.set_cookie(
        COOKIE_NAME, issued.token, max_age=issued.expires_in, path="/", httponly=True,
        samesite="strict", secure=services(request).settings.cookie_secure,
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
    return _token_response(request, kiln.tokens.issue(user.id, new_id()))


async def _revoke(request: Request) -> None:
    signed_in = require_user(request)
    ttl = max(1, signed_in.claims.expires_at - int(time.time()) + 1)
    await services(request).redis.set(keys.revoked_token(signed_in.claims.token_id), "1", ex=ttl)


async def refresh(request: Request) -> Response:
    """A new token for the same session; the old one stops working."""
    signed_in = require_user(request)
    issued = services(request).tokens.issue(signed_in.user.id, signed_in.claims.session_id)
    await _revoke(request)
    return _token_response(request, issued)


async def logout(request: Request) -> Response:
    await _revoke(request)
    response = Response(status_code=204)
    response.delete_cookie(COOKIE_NAME, path="/", httponly=True, samesite="strict",
                           secure=services(request).settings.cookie_secure)
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
