"""Access tokens: HS256 JWTs with a pinned algorithm, required claims and Kiln-shaped ids."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import jwt
from jwt.exceptions import InvalidJTIError, InvalidSubjectError
from jwt.types import Options

from records import ids

ISSUER = "kiln"
AUDIENCE = "kiln"
ALGORITHM = "HS256"
REQUIRED_CLAIMS = ("sub", "sid", "jti", "iat", "exp", "aud", "iss")
MAX_TOKEN_BYTES = 4096
MIN_SECRET_BYTES = 32  # RFC 7518 §3.2: an HS256 key at least as long as the hash output

Reason = Literal[
    "expired",
    "not_yet_valid",
    "bad_signature",
    "malformed",
    "missing_claim",
    "wrong_algorithm",
    "wrong_audience",
    "wrong_issuer",
    "bad_id",
]


@dataclass(frozen=True)
class Claims:
    """What a valid token says: who, in which session, which token, and when."""

    user_id: str
    session_id: str
    token_id: str
    issued_at: int
    expires_at: int


@dataclass(frozen=True)
class IssuedToken:
    """A freshly signed token, its claims, and its lifetime in seconds."""

    token: str
    claims: Claims
    expires_in: int


class InvalidToken(Exception):
    """Why a token was refused; `reason` is a short code (expired, not_yet_valid, bad_signature,
    malformed, missing_claim, wrong_algorithm, wrong_audience, wrong_issuer, bad_id)."""

    def __init__(self, reason: Reason) -> None:
        super().__init__(f"token refused: {reason}")
        self.reason: Reason = reason


# First match wins, so subclasses come before their bases.
_REASONS: tuple[tuple[type[jwt.InvalidTokenError], Reason], ...] = (
    (jwt.InvalidAlgorithmError, "wrong_algorithm"),
    (jwt.InvalidSignatureError, "bad_signature"),
    (jwt.MissingRequiredClaimError, "missing_claim"),
    (jwt.InvalidAudienceError, "wrong_audience"),
    (jwt.InvalidIssuerError, "wrong_issuer"),
    (InvalidSubjectError, "bad_id"),
    (InvalidJTIError, "bad_id"),
)


def _reason_for(error: jwt.InvalidTokenError) -> Reason:
    for error_type, reason in _REASONS:
        if isinstance(error, error_type):
            return reason
    return "malformed"


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


class TokenService:
    """Issues and checks Kiln access tokens with one secret; build one per process."""

    def __init__(
        self,
        secret: str,
        ttl: int,
        *,
        clock: Callable[[], float] = time.time,
        leeway: int = 0,
    ) -> None:
        if len(secret.encode()) < MIN_SECRET_BYTES:
            raise ValueError(f"the token secret must be at least {MIN_SECRET_BYTES} bytes")
        if ttl < 1:
            raise ValueError("the token ttl must be at least one second")
        if leeway < 0:
            raise ValueError("the token leeway must not be negative")
        self._secret = secret
        self._ttl = ttl
        self._clock = clock
        self._leeway = leeway

    def issue(self, user_id: str, session_id: str) -> IssuedToken:
        """Sign a token for this user and session with a new random token id."""
        if not ids.is_valid_id(user_id):
            raise ValueError("user_id is not a valid Kiln id")
        if not ids.is_valid_id(session_id):
            raise ValueError("session_id is not a valid Kiln id")
        now = int(self._clock())
        claims = Claims(user_id, session_id, ids.new_id(), now, now + self._ttl)
        payload = {
            "sub": claims.user_id,
            "sid": claims.session_id,
            "jti": claims.token_id,
            "iat": claims.issued_at,
            "exp": claims.expires_at,
            "aud": AUDIENCE,
            "iss": ISSUER,
        }
        token = jwt.encode(payload, self._secret, algorithm=ALGORITHM)
        return IssuedToken(token=token, claims=claims, expires_in=self._ttl)

    def decode(self, token: str) -> Claims:
        """The claims of a token this service issued and that is still valid; else InvalidToken."""
        if len(token) > MAX_TOKEN_BYTES or not token.isascii():
            raise InvalidToken("malformed")
        try:
            payload = jwt.decode(
                token,
                self._secret,
                algorithms=[ALGORITHM],
                audience=AUDIENCE,
                issuer=ISSUER,
                options=self._decode_options(),
            )
        except jwt.InvalidTokenError as error:
            # `from None`: the reason is enough, and pyjwt's chained errors add nothing for logs.
            raise InvalidToken(_reason_for(error)) from None
        return self._check_claims(payload)

    @staticmethod
    def _decode_options() -> Options:
        return {
            "require": list(REQUIRED_CLAIMS),
            "strict_aud": True,
            # pyjwt compares times with the wall clock; _check_claims uses the injected clock.
            "verify_exp": False,
            "verify_iat": False,
            "verify_nbf": False,
        }

    def _check_claims(self, payload: dict[str, Any]) -> Claims:
        user_id, session_id, token_id = payload["sub"], payload["sid"], payload["jti"]
        if not all(ids.is_valid_id(value) for value in (user_id, session_id, token_id)):
            raise InvalidToken("bad_id")
        issued_at, expires_at = payload["iat"], payload["exp"]
        if not (_is_int(issued_at) and _is_int(expires_at)):
            raise InvalidToken("malformed")
        now = self._clock()
        if expires_at <= now - self._leeway:
            raise InvalidToken("expired")
        if issued_at > now + self._leeway:
            raise InvalidToken("not_yet_valid")
        # Kiln issues no nbf, but a token that carries one is held to it (RFC 7519 §4.1.5).
        if "nbf" in payload:
            not_before = payload["nbf"]
            if not _is_int(not_before):
                raise InvalidToken("malformed")
            if not_before > now + self._leeway:
                raise InvalidToken("not_yet_valid")
        return Claims(user_id, session_id, token_id, issued_at, expires_at)
