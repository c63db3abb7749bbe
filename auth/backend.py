"""The Starlette authentication backend: a Bearer header or the HttpOnly cookie, never the URL."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from redis.asyncio import Redis
from starlette.authentication import AuthCredentials, AuthenticationBackend, BaseUser
from starlette.requests import HTTPConnection

from auth.accounts import Accounts, User
from auth.revocation import check_revocation, revoked
from auth.tokens import Claims, InvalidToken, TokenService

COOKIE_NAME = "kiln_token"


class AuthServices(Protocol):
    """What the backend needs of the process's services (`services.Services`, which auth/ may
    not import: it is built from auth/), found in the lifespan state as `kiln`."""

    @property
    def tokens(self) -> TokenService: ...

    @property
    def redis(self) -> Redis: ...


@dataclass(frozen=True)
class SignedIn(BaseUser):
    """A request made with a valid, not revoked token of an existing user."""

    user: User
    claims: Claims

    @property
    def is_authenticated(self) -> bool:
        return True

    @property
    def display_name(self) -> str:
        return self.user.name

    @property
    def identity(self) -> str:
        return self.user.id


@dataclass(frozen=True)
class Anonymous(BaseUser):
    """No usable token; `reason` says why (shown in the 401 message, never the token itself)."""

    reason: str

    @property
    def is_authenticated(self) -> bool:
        return False

    @property
    def display_name(self) -> str:
        return ""

    @property
    def identity(self) -> str:
        return ""


def token_of(conn: HTTPConnection) -> str | None:
    header = conn.headers.get("authorization")
    if header:
        scheme, _, value = header.partition(" ")
        return value.strip() if scheme.lower() == "bearer" and value.strip() else ""
    return conn.cookies.get(COOKIE_NAME) or None


class TokenBackend(AuthenticationBackend):
    """Never raises: a bad token makes the request anonymous, so login works with a stale cookie."""

    async def authenticate(self, conn: HTTPConnection) -> tuple[AuthCredentials, BaseUser]:
        token = token_of(conn)
        if token is None:
            return AuthCredentials(), Anonymous("missing")
        services: AuthServices = conn.state.kiln
        try:
            claims = services.tokens.decode(token)
        except InvalidToken as exc:
            return AuthCredentials(), Anonymous(exc.reason)
        # one round trip: is the token revoked, and who is its user
        async with services.redis.pipeline(transaction=False) as pipe:
            check_revocation(pipe, claims)
            Accounts.queue_get(pipe, claims.user_id)
            replies = await pipe.execute()
        if revoked(replies):
            return AuthCredentials(), Anonymous("revoked")
        user = Accounts.user_from(claims.user_id, replies[2])
        if user is None:
            return AuthCredentials(), Anonymous("unknown_user")
        scopes = ["authenticated", "admin"] if user.is_admin else ["authenticated"]
        return AuthCredentials(scopes), SignedIn(user=user, claims=claims)
