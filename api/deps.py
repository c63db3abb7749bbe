"""What handlers ask of a request: the process's services, the signed-in user, a small JSON body."""

from __future__ import annotations

import json
from typing import Any, cast

from starlette.requests import Request

from api.errors import ApiError
from auth.backend import Anonymous, SignedIn
from services import Services

_REASONS = {
    "missing": "sign in first: send a Bearer token or the session cookie",
    "expired": "the token has expired; refresh it or sign in again",
    "revoked": "the token was signed out",
}


def services(request: Request) -> Services:
    return cast(Services, request.state.kiln)


def require_user(request: Request) -> SignedIn:
    """The signed-in user, or a 401 that says why (never echoing the token)."""
    user = request.user
    if isinstance(user, SignedIn):
        return user
    reason = user.reason if isinstance(user, Anonymous) else "missing"
    message = _REASONS.get(reason, f"the token is not valid ({reason})")
    raise ApiError(401, "unauthorized", message)


async def read_json(request: Request, limit: int = 8192) -> dict[str, Any]:
    """The body as a JSON object, refusing bodies over `limit` bytes as they stream in."""
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise ApiError(413, "too_large", f"the request body is over {limit} bytes")
    try:
        value = json.loads(body)
    except ValueError:
        raise ApiError(400, "malformed_json", "the body must be a JSON object") from None
    if not isinstance(value, dict):
        raise ApiError(400, "malformed_json", "the body must be a JSON object")
    return value


def query_int(request: Request, name: str, default: int, lo: int, hi: int) -> int:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    if not raw.isdigit():
        raise ApiError(400, "bad_parameter", f"{name} must be a whole number")
    return max(lo, min(hi, int(raw)))
